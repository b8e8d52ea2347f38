"""The text benchmark behind reports/text/: held-out users' captions and held-out place names.

    .venv/bin/python -m globeflow.text.benchmark --model /tmp/text-report-model --places 5000

The model must be trained with ``scripts/train_text_model.py --split report`` (same --places):
baselines are fitted here on exactly its training rows (gazetteer forms + permitted captions of
training authors, each row once). Writes report.json and density maps of ambiguous names.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from globeflow.baselines import make_baseline
from globeflow.checkpoints import DEFAULT_STEPS, load_checkpoint
from globeflow.encoders import get_encoder
from globeflow.geolocator import Geolocator
from globeflow.metrics import calibration, haversine_km, nll_summary, point_metrics
from globeflow.prediction import BEST_GUESS_RULES, best_guesses, find_modes
from globeflow.text import gazetteer as G
from globeflow.text import recipe as R
from globeflow.text.cache import embed_cached

log = logging.getLogger(__name__)
AMBIGUOUS = ("Springfield", "Victoria", "Santiago", "Paris", "San Jose", "Newport")
BASELINES = ("regression", "cells", "retrieval", "vmf")
PARTS = ("captions", "names", "baselines", "famous", "namesakes", "maps", "sweep")
PART_KEYS = {"captions": ("captions_unseen_users",), "names": ("place_names_unseen",), "baselines": (),
             "famous": ("famous_places", "famous_places_shipped"), "namesakes": ("namesakes",),
             "maps": ("ambiguous_names",), "sweep": ("guidance_sweep_captions",)}


def separated_modes(samples_deg: np.ndarray, min_mass: float = 0.05, min_km: float = 800.0) -> list:
    """Modes (find_modes, 150 km kernel) of mass ≥ min_mass, greedily kept when ≥ min_km from every kept one."""
    kept = []
    for m in find_modes(samples_deg, top_k=None):
        if m.mass >= min_mass and all(haversine_km(np.array([m.lat, m.lon]), np.array([k.lat, k.lon])) >= min_km
                                      for k in kept):
            kept.append(m)
    return kept


BASELINE_SAMPLES = 128  # samples per input of the baselines' regions when --samples is not given
# samples per name of the namesake checks and maps when --samples is not given: they measure the
# distribution predict draws from (its guidance and steps), so more samples than one prediction's
NAMESAKE_SAMPLES = 512


def evaluate_model(geo: Geolocator, emb: np.ndarray, truth: np.ndarray, *, samples: int | None = None,
                   cfg: float | None = None, steps: int | None = None, masses=(0.5, 0.9)) -> dict:
    """Point (best guess as ``Geolocator.predict`` picks it; both rules on the density's own samples
    reported too), NLL (density solver, ``steps`` or 32), credible-region coverage, localizability vs
    error, and the budget drawn. ``samples``, ``steps``: None = predict's defaults (the model's own)."""
    t0 = time.perf_counter()
    k, s = geo.sample_budget(samples, steps)
    k_best, s_best = geo.best_guess_budget(samples, steps)
    latlon, lp = [], []
    for i in range(0, len(emb), 64):
        x, l = geo.sample(emb[i:i + 64], k, steps=s, cfg=cfg, seed=i, return_log_prob=True)
        latlon.append(x.numpy())
        lp.append(l.numpy())
    latlon, lp = np.concatenate(latlon), np.concatenate(lp)
    points = {rule: best_guesses(latlon, lp, rule) for rule in BEST_GUESS_RULES}  # from the density's samples
    best = points[geo.info.best_guess]
    separate = geo.separate_best_guess(cfg, samples)
    if separate:  # as Geolocator.predict: the best guess has its own pass
        best = np.concatenate([geo.point_estimate(emb[i:i + 64], k_best, steps=s_best, seed=i).numpy()
                               for i in range(0, len(emb), 64)])
    lp_truth = geo.log_prob(emb, truth, cfg=cfg, steps=steps or DEFAULT_STEPS).numpy()
    err = haversine_km(best, truth)
    loc = lp.mean(1)
    out = {"samples": k, "steps": s, "best_guess_samples": k_best, "best_guess_steps": s_best,
           "point": point_metrics(best, truth), "best_guess": geo.info.best_guess,
           "best_guess_cfg": geo.info.best_guess_cfg if separate and geo.info.best_guess_cfg is not None
           else geo._cfg(cfg),
           "point_by_rule": {rule: point_metrics(x, truth) for rule, x in points.items()},
           "nll": nll_summary(lp_truth),
           "calibration": calibration(lp_truth, lp, masses=masses),
           "calibration_stated": stated_calibration(lp_truth, lp, geo.info.credible_masses),
           "localizability_vs_error_spearman": float(spearmanr(loc, err).statistic),
           "sample_spread_km": float(np.mean(haversine_km(latlon, best[:, None, :]))),
           "seconds": round(time.perf_counter() - t0, 1)}
    return out


def stated_calibration(lp_truth: np.ndarray, lp: np.ndarray, credible_masses: dict) -> dict:
    """Coverage of the regions the model states (its conformal ``credible_masses``: {level: HPD mass})."""
    return {level: {"mass": m, **calibration(lp_truth, lp, masses=[m])[f"{m:g}"]}
            for level, m in (credible_masses or {}).items()}


def evaluate_baseline(base, emb: np.ndarray, truth: np.ndarray, samples: int) -> dict:
    t0 = time.perf_counter()
    out = {"point": point_metrics(base.point_estimate(emb), truth)}
    try:
        lp_truth = base.log_prob(emb, truth)
        s = base.sample(emb, samples, seed=0)
        lp = base.log_prob(np.repeat(emb, samples, 0), s.reshape(-1, 2)).reshape(len(emb), samples)
        out["nll"] = nll_summary(lp_truth)
        out["calibration"] = calibration(lp_truth, lp, masses=(0.5, 0.9))
    except (NotImplementedError, AttributeError) as err:  # point-only baselines
        out["nll"] = {"note": f"no density ({type(err).__name__})"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def baseline_epochs(rows: int, budget: int = 1_500_000) -> int:
    """Training epochs for the trained baselines (cells, vmf): 200 up to 7,500 rows, fewer on larger row
    sets so that epochs × rows stays ≈ ``budget`` (at least 3 epochs: ~600 k gazetteer rows on 2 shared cores)."""
    return max(3, min(200, budget // max(rows, 1)))


class _small_knn_chunks:
    """Within this block, retrieval's k-NN compares at most ~16 M pairs at a time (its default chunk of
    2,048 queries against ~600 k gazetteer rows needs ~16 GB of float64 similarities)."""

    def __enter__(self):
        from globeflow.baselines import retrieval

        self._module, self._knn = retrieval, retrieval.knn
        retrieval.knn = lambda q, db, k, chunk=2048: self._knn(q, db, k, chunk=max(1, min(chunk, 2 ** 24 // len(db))))
        return self

    def __exit__(self, *exc) -> None:
        self._module.knn = self._knn


def fit_baselines(args, train_emb: np.ndarray, train_ll: np.ndarray, groups: np.ndarray, sets: dict) -> dict:
    """Fit each of ``args.baselines`` on the training rows and score it on every set: {set: {name: result}}."""
    with _small_knn_chunks():
        return _fit_baselines(args, train_emb, train_ll, groups, sets)


def _fit_baselines(args, train_emb: np.ndarray, train_ll: np.ndarray, groups: np.ndarray, sets: dict) -> dict:
    out: dict = {key: {} for key in sets}
    epochs = baseline_epochs(len(train_emb))
    for name in [b for b in args.baselines.split(",") if b]:
        t0 = time.perf_counter()
        kwargs = {"epochs": epochs} if name in ("cells", "vmf") else {}
        base = make_baseline(name, **kwargs).fit(train_emb, train_ll, groups, seed=0)
        fit_s = round(time.perf_counter() - t0, 1)
        for key, (emb, truth) in sets.items():
            out[key][name] = {**evaluate_baseline(base, emb, truth, args.samples or BASELINE_SAMPLES),
                              "fit_seconds": fit_s, **kwargs}
            log.info("%s %s %s", key, name, json.dumps(out[key][name]["point"]))
        if args.baselines_only:
            (args.out / "baselines.json").write_text(json.dumps(out, indent=1, default=float))
    return out


def held_out_places(gaz: G.Gazetteer, places: int, count: int) -> np.ndarray:
    """``count`` places among the top ``places`` by popularity whose names are held out (stable order)."""
    order = G.priority_order(gaz, G.photo_popularity(gaz, R.prior_locations(100_000)))[:places]
    return order[R.test_names(gaz.name[order])][:count]


def draw_maps(geo: Geolocator, encoder, out: Path, samples: int | None = None) -> dict:
    from globeflow.maps import render_png

    info = {}
    for name in AMBIGUOUS:
        pred = geo.predict(geo.embed([name]) if encoder is None else encoder.embed([name]), num_samples=samples,
                           seed=0, ids=[name])[0]
        sep = separated_modes(pred.samples)
        render_png(None, pred.samples, best_guess=pred.best_guess, modes=pred.modes, title=f'"{name}"',
                   out_path=out / f"map_{name.replace(' ', '_').lower()}.png", width=900)
        info[name] = {"modes": [m.to_dict() for m in pred.modes], "separated_modes_5pct_800km": len(sep),
                      "samples": len(pred.samples)}
    return info


PARIS_FR = np.array([48.8566, 2.3522])


def namesake_checks(geo: Geolocator, encoder, samples: int | None = None, steps: int | None = None) -> dict:
    """Issue 18 item 1 on a model: "Paris" mass within 100 km of Paris, France; "Paris, Texas" best
    guess's admin1; "Springfield" separated modes (≥ 5 % mass, pairwise ≥ 800 km)."""
    from globeflow.geocoding import reverse_geocode

    texts = ["Paris", "Paris, Texas", "Springfield"]
    preds = geo.predict(encoder.embed(texts), num_samples=samples, steps=steps, seed=0, ids=texts)
    paris, texas, spring = preds
    place = reverse_geocode(np.array([texas.best_guess]))[0]
    return {"paris_mass_within_100km_of_paris_fr": float(np.mean(haversine_km(paris.samples, PARIS_FR) < 100)),
            "paris_texas_best_guess": {"lat": texas.best_guess[0], "lon": texas.best_guess[1],
                                       "admin1": place.admin1, "cc": place.cc},
            "paris_texas_mass_in_texas": float(np.mean([p.admin1 == "Texas" and p.cc == "US"
                                                        for p in reverse_geocode(texas.samples)])),
            "springfield_separated_modes": len(separated_modes(spring.samples)),
            "samples": len(paris.samples)}


def famous_places(geo: Geolocator, encoder, samples: int | None = None, steps: int | None = None) -> dict:
    """Best guesses (as predict draws them; ``samples``/``steps`` None = its defaults) for the
    famous-places list (data/text/famous_places.csv, never training strings): point metrics over all,
    per kind, and each place's best guess and error (km)."""
    fam = R.load_famous()
    emb = encoder.embed(list(fam.text))
    k, s = geo.best_guess_budget(samples, steps)
    best = np.concatenate([geo.point_estimate(emb[i:i + 64], k, steps=s, seed=i).numpy()
                           for i in range(0, len(emb), 64)])
    err = haversine_km(best, fam.latlon)
    near = natural_earth_nearby(fam)
    score = lambda m: {"n": int(m.sum()), "acc_750km": float(np.mean(err[m] < 750)) if m.any() else None,  # noqa: E731
                       "median_km": float(np.median(err[m])) if m.any() else None}
    return {"point": point_metrics(best, fam.latlon), "samples": k,
            "acc_750km": float(np.mean(err < 750)), "median_km": float(np.median(err)),
            "by_kind": {k: score(fam.kind == k) for k in sorted(set(fam.kind))},
            "by_natural_earth": {"natural_earth_name_within_25km": score(near), "none": score(~near)},
            "places": [{"text": t, "kind": k, "lat": float(b[0]), "lon": float(b[1]), "error_km": float(e),
                        "natural_earth_nearby": bool(n)} for t, k, b, e, n in zip(fam.text, fam.kind, best, err, near)]}


def natural_earth_nearby(fam: R.Famous, radius_km: float = 25.0) -> np.ndarray:
    """Bool (N,): famous places with a Natural Earth row (a string other than theirs) within ``radius_km``:
    where that source, when trained on, can teach the answer under another name ("Ayers Rock" for "Uluru")."""
    texts, latlon = R.load_natural_earth()
    keep = R.not_famous(texts)
    return (haversine_km(fam.latlon[:, None], latlon[keep][None]) < radius_km).any(axis=1)


RULE_WORDS = {"density": "highest density", "geoscore": "highest expected GeoScore under the model"}


def _rule(report: dict) -> str:
    rfm = report.get("captions_unseen_users", {}).get("rfm", {})
    w = rfm.get("best_guess_cfg")
    return RULE_WORDS[rfm.get("best_guess", "density")] + ("" if w is None else f" among samples at guidance {w:g}")


def _budget(report: dict) -> str:
    """How the rfm rows' samples were drawn, in words."""
    st, rfm = report["settings"], report.get("captions_unseen_users", {}).get("rfm", {})
    if st.get("samples") is not None and st.get("steps") is not None:  # given explicitly for every pass
        return (f"best of {st['samples']} samples by {_rule(report)}, {st['steps']} sampler and density steps")
    k, s = rfm.get("samples", "?"), rfm.get("steps", "?")
    kb, sb = rfm.get("best_guess_samples", "?"), rfm.get("best_guess_steps", "?")
    return (f"`predict`'s defaults: regions, modes and localizability from {k} samples of {s} steps, "
            f"best guess of {kb} samples ({sb} steps) by {_rule(report)}; truth densities by the 32-step solver")


def _fmt(x, spec: str = ".0f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _row(name: str, r: dict) -> str:
    pt, nll = r["point"], r.get("nll", {})
    cal = r.get("calibration_stated") or r.get("calibration") or {}
    c90, c50 = cal.get("0.9", {}), cal.get("0.5", {})
    cov90 = (f"{c90['coverage']:.3f} [{c90['wilson_low']:.3f}, {c90['wilson_high']:.3f}]" if c90 else "—")
    return (f"| {name} | {_fmt(pt['geoscore'])} | {_fmt(pt['median_km'])} | {_fmt(100 * pt['acc_25km'], '.1f')} % "
            f"| {_fmt(100 * pt['acc_200km'], '.1f')} % | {_fmt(100 * pt['acc_750km'], '.1f')} % "
            f"| {_fmt(100 * pt['acc_2500km'], '.1f')} % | {_fmt(nll.get('nll_nats'), '.3f')} | {cov90} "
            f"| {_fmt(c50.get('coverage'), '.3f')} | {_fmt(c90.get('area_km2_median'), '.3g')} |")


def coverage_note(report: dict) -> str:
    """Which regions the coverage columns measure."""
    stated = report.get("captions_unseen_users", {}).get("rfm", {}).get("calibration_stated")
    if stated:
        return ("coverage of the regions the model states (its split-conformal credible masses, fitted on "
                "NonCommercial/NoDerivs captions of authors outside the test split; baselines: nominal masses).")
    return "coverage of the nominal highest-density regions (this model has no conformal credible masses)."


def _walls(report: dict) -> str:
    """Wall times of the report's evaluation parts (each part file's process, from its start) and of the merge."""
    parts = ", ".join(f"{k} {v} s" for k, v in (report.get("part_wall_s") or {}).items() if v is not None)
    merge = f"merge {report.get('wall_s', '?')} s wall"
    return f"wall time of the evaluation parts (from each process's start): {parts}; {merge}" if parts else merge


def markdown(report: dict) -> str:
    """The report's Markdown tables (report.md), from report.json's dict."""
    head = ("| model | GeoScore | median km | acc@25 km | acc@200 km | acc@750 km | acc@2500 km | NLL (nats/sr) "
            "| 90 % region coverage [Wilson 95 %] | 50 % coverage | median 90 % area km² |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    d, st = report["data"], report["settings"]
    out = ["# Text geolocation benchmark (reports/text/)", "",
           f"Generated by `reports/text/command.sh` on {report.get('date', '?')} ({report.get('machine', '?')}); "
           f"{_walls(report)}. rfm: {_budget(report)}, densities and regions at the model's default guidance; "
           f"{coverage_note(report)} Baselines are "
           f"fitted on exactly the report model's training rows ({d['train_rows']}).", ""]
    titles = {"captions_unseen_users": f"Captions of unseen Flickr users ({d['test_captions']} captions, "
                                       f"{d['test_caption_authors']} authors, all licences)",
              "place_names_unseen": f"Unseen place names ({d['unseen_place_names']} “name, region, country” "
                                    "forms whose name never appears in training)"}
    for key, title in titles.items():
        if key not in report:
            continue
        out += [f"## {title}", "", head]
        out += [_row(name, r) for name, r in report[key].items()]
        rfm = report[key].get("rfm", {})
        if "point_by_rule" in rfm:
            out += ["", "rfm best guess picked from the density's own samples instead: " + "; ".join(
                f"by {RULE_WORDS[rule]}, GeoScore {_fmt(pt['geoscore'])} (median {_fmt(pt['median_km'])} km, "
                f"acc@25 km {_fmt(100 * pt['acc_25km'], '.1f')} %)" for rule, pt in rfm["point_by_rule"].items()) + "."]
        if "localizability_vs_error_spearman" in rfm:
            out += ["", f"Localizability (mean log-density of a text's own samples) against error: Spearman "
                        f"ρ = {rfm['localizability_vs_error_spearman']:.2f}."]
        out.append("")
    if "ambiguous_names" in report:
        counts = sorted({r.get("samples") for r in report["ambiguous_names"].values()} - {None})
        out += ["## Ambiguous names (shipped model" + "".join(f", {c} samples each" for c in counts[:1]) +
                ", the model's guidance and steps)", "",
                "| text | modes ≥ 5 % mass, pairwise ≥ 800 km | top modes (lat, lon, mass) |", "|---|---:|---|"]
        for name, r in report["ambiguous_names"].items():
            modes = "; ".join(f"{m['lat']:.1f}, {m['lon']:.1f}, {m['mass']:.2f}" for m in r["modes"][:4])
            out.append(f"| {name} | {r['separated_modes_5pct_800km']} | {modes} |")
        out += ["", "Maps: `map_<name>.png` in this folder.", ""]
    for key, title in (("famous_places", "Famous places and natural sites (report model)"),
                       ("famous_places_shipped", "Famous places and natural sites (shipped model)")):
        if key not in report:
            continue
        f = report[key]
        out += [f"## {title}", "",
                f"{len(f['places'])} places of `data/text/famous_places.csv` (written before training, never a "
                f"training string); best guess of {f['samples']} samples as `predict` picks it: "
                f"**{100 * f['acc_750km']:.0f} % within 750 km, median error {f['median_km']:.0f} km** "
                f"(GeoScore {f['point']['geoscore']:.0f}).", "",
                "| kind | places | within 750 km | median km |", "|---|---:|---:|---:|"]
        out += [f"| {k} | {v['n']} | {100 * v['acc_750km']:.0f} % | {v['median_km']:.0f} |" for k, v in f["by_kind"].items()]
        for label, key2 in (("a Natural Earth place within 25 km (another name)", "natural_earth_name_within_25km"),
                            ("no Natural Earth place within 25 km", "none")):
            v = f.get("by_natural_earth", {}).get(key2)
            if v and v["n"]:
                out.append(f"| *{label}* | {v['n']} | {100 * v['acc_750km']:.0f} % | {v['median_km']:.0f} |")
        out += ["", "| place | kind | best guess (lat, lon) | error km | Natural Earth place within 25 km |",
                "|---|---|---|---:|---|"]
        out += [f"| {r['text']} | {r['kind']} | {r['lat']:.2f}, {r['lon']:.2f} | {r['error_km']:.0f} | "
                f"{'yes' if r.get('natural_earth_nearby') else ''} |" for r in f["places"]]
        out.append("")
    if "namesakes" in report:
        n = report["namesakes"]
        pt = n["paris_texas_best_guess"]
        out += ["## Namesakes by popularity (shipped model)", "",
                f"- \"Paris\": {100 * n['paris_mass_within_100km_of_paris_fr']:.0f} % of the mass within 100 km of "
                f"Paris, France ({n['samples']} samples).",
                f"- \"Paris, Texas\": best guess {pt['lat']:.2f}, {pt['lon']:.2f} ({pt['admin1']}, {pt['cc']}); "
                f"{100 * n['paris_texas_mass_in_texas']:.0f} % of the samples in Texas.",
                f"- \"Springfield\": {n['springfield_separated_modes']} modes of ≥ 5 % mass pairwise ≥ 800 km apart.", ""]
    if "guidance_sweep_captions" in report:
        out += [f"## Guidance sweep ({st['sweep_captions']} unseen-user captions, {st['sweep_samples']} samples)", "",
                "| cfg | GeoScore | median km | GeoScore, other best-guess rule | NLL | nominal 90 % coverage "
                "| mean spread km |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for k, r in report["guidance_sweep_captions"].items():
            other = [v["geoscore"] for rule, v in r.get("point_by_rule", {}).items() if rule != r.get("best_guess")]
            out.append(f"| {k[4:]} | {_fmt(r['point']['geoscore'])} | {_fmt(r['point']['median_km'])} "
                       f"| {_fmt(other[0] if other else None)} "
                       f"| {_fmt(r['nll']['nll_nats'], '.3f')} | {_fmt(r['calibration']['0.9']['coverage'], '.3f')} "
                       f"| {_fmt(r['sample_spread_km'])} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="report-split model folder (needed unless --baselines-only)")
    p.add_argument("--namesake-extra", type=int, default=3,
                   help="bare-name repeats of the training rows when no --model says (as scripts/train_text_model.py)")
    p.add_argument("--namesake-temper", type=float, default=1.0,
                   help="popularity exponent of the namesake rows when no --model says (as scripts/train_text_model.py)")
    p.add_argument("--calibration-names", type=int, default=0,
                   help="when no --model says: > 0 = the model held the calibration names out of training "
                        "(scripts/train_text_model.py --calibration-names), so the baselines' rows do too")
    p.add_argument("--landmarks", type=int, default=0,
                   help="with --baselines-only: 1 = the baselines' rows include the Natural Earth named places "
                        "(once), for a model trained with --landmark-repeat > 0; 0 = not (the shipped model)")
    p.add_argument("--shipped", type=Path, default=None, help="shipped model folder (maps drawn with it)")
    p.add_argument("--places", type=int, default=145_000, help="gazetteer places of the report model (as its training)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per input (default: predict's, i.e. the model's default_samples for the regions "
                        "and best_guess_samples for a separate best guess; baselines: BASELINE_SAMPLES)")
    p.add_argument("--sweep-samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: predict's, i.e. the model's default_steps for the regions, 32 for "
                        "a separate best guess); the density solver uses 32 when not given")
    p.add_argument("--captions", type=int, default=0, help="evaluate the first N test captions (0 = all)")
    p.add_argument("--sweep-captions", type=int, default=100)
    p.add_argument("--name-count", type=int, default=400)
    p.add_argument("--baselines", default=",".join(BASELINES))
    p.add_argument("--out", type=Path, default=R.ROOT / "reports" / "text")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", default=",".join(PARTS),
                   help="what to compute (comma list of " + ", ".join(PARTS) + "); parts of several runs into the "
                        "same --out are merged (OUT/part-*.json), so they can run in parallel processes")
    p.add_argument("--baselines-only", action="store_true",
                   help="only fit and score the baselines (they need no model weights), into OUT/baselines.json")
    p.add_argument("--baselines-from", type=Path, default=None,
                   help="baseline results written by an earlier --baselines-only run (same data and settings)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    enc = get_encoder("minilm-l6")
    if args.model is None and not args.baselines_only:
        p.error("--model is required (unless --baselines-only)")
    net, info = load_checkpoint(args.model) if args.model else (None, None)
    info_training = (info.training or {}) if info else {"namesake_extra": args.namesake_extra,
                                                         "namesake_temper": args.namesake_temper,
                                                         "calibration_names": args.calibration_names,
                                                         "landmark_repeat": args.landmarks}
    gaz = G.load_gazetteer()
    caps = R.load_captions()
    test = R.test_authors(caps)
    train_caps = caps.select(R.permitted(caps.license) & ~test)
    test_caps = caps.select(test)
    if args.captions:
        test_caps = test_caps.select(np.arange(len(test_caps)) < args.captions)
    # the report model's training rows, once each (no repeats, no prior rows)
    import importlib.util
    spec = importlib.util.spec_from_file_location("ttm", R.ROOT / "scripts" / "train_text_model.py")
    ttm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ttm)
    popularity = ttm.place_popularity(gaz)
    hold = int(info_training.get("calibration_names") or 0) > 0
    rows = ttm.build_rows(gaz, ttm.select_places(gaz, args.places, "report", popularity, hold_val_names=hold),
                          train_caps, 1, popularity, extra=int(info_training.get("namesake_extra", 0)),
                          split="report", temper=float(info_training.get("namesake_temper") or 1.0),
                          landmark_repeat=min(1, int(info_training.get("landmark_repeat", 0))),
                          hold_val_names=hold, airport_repeat=min(1, int(info_training.get("airport_repeat") or 0)))

    def training_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The baselines' training set: embeddings (N, D) (≈ 300 k strings: only when fitting them),
        (N, 2) degrees, and groups (a gazetteer string or a caption's author)."""
        groups = np.array([f"{k}:{t}" if k != "caption" else "" for k, t in zip(rows.kind, rows.text)], dtype=str)
        cap_groups = iter(train_caps.author)
        groups = np.array([g if g else next(cap_groups) for g in groups], dtype=str)
        return embed_cached(rows.text, enc), np.concatenate(rows.latlon), groups
    names = held_out_places(gaz, args.places, args.name_count)
    name_text = [G.full_form(gaz.name[i], gaz.admin1[i], gaz.cc[i]) for i in names]
    sets = {"captions_unseen_users": (embed_cached(list(test_caps.text), enc), test_caps.latlon),
            "place_names_unseen": (embed_cached(name_text, enc), gaz.latlon[names])}
    report = {"data": {"train_rows": rows.counts(), "test_captions": len(test_caps),
                       "test_caption_authors": int(len(set(test_caps.author))),
                       "test_captions_by_license": {k: int(v) for k, v in zip(*np.unique(test_caps.license,
                                                                                         return_counts=True))},
                       "unseen_place_names": len(names), "places": args.places}}
    if args.baselines_only:
        fit_baselines(args, *training_rows(), sets)
        return
    geo = Geolocator(net, info)
    report["model_training"] = info.training
    report["settings"] = {"samples": args.samples, "steps": args.steps, "sweep_samples": args.sweep_samples,
                          "sweep_captions": args.sweep_captions}
    report.update(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} CPUs, "
                  f"{args.threads} torch threads")
    t_start = time.perf_counter()

    parts = [x for x in args.parts.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown --parts {sorted(unknown)}; choose from {PARTS}")

    def save(*keys: str) -> None:
        """Write each part's keys to OUT/part-<name>.json, then report.json/.md from every part on disk."""
        for part in parts:
            got = {k: report[k] for k in PART_KEYS[part] if k in report}
            if got:
                got["_wall_s"] = round(time.perf_counter() - t_start)  # of this process, up to this part
                (args.out / f"part-{part}.json").write_text(json.dumps(got, indent=1, default=float))
        merged, walls = dict(report), {}
        for path in sorted(args.out.glob("part-*.json")):
            got = json.loads(path.read_text())
            walls[path.stem.removeprefix("part-")] = got.pop("_wall_s", None)
            for k, v in got.items():
                merged.setdefault(k, v)
        merged["part_wall_s"] = walls
        if args.baselines_from and Path(args.baselines_from).is_file():  # may still be running in parallel
            for key, results in json.loads(Path(args.baselines_from).read_text()).items():
                if key in merged:
                    merged[key] = {**merged[key], **{n: r for n, r in results.items() if n not in merged[key]}}
        merged["wall_s"] = round(time.perf_counter() - t_start)
        (args.out / "report.json").write_text(json.dumps(merged, indent=1, default=float))
        (args.out / "report.md").write_text(markdown(merged))
    keys = {"captions": "captions_unseen_users", "names": "place_names_unseen"}
    for part, key in keys.items():
        if part not in parts:
            continue
        emb, truth = sets[key]
        n = args.samples if key.startswith("captions") or args.samples is None else min(args.samples, 256)
        report[key] = {"rfm": evaluate_model(geo, emb, truth, samples=n, steps=args.steps)}
        log.info("%s rfm %s", key, json.dumps(report[key]["rfm"]["point"]))
        save()
    scored = {k: v for k, v in sets.items() if k in report}
    if "baselines" in parts and not args.baselines_from and scored:
        for key, results in fit_baselines(args, *training_rows(), scored).items():
            report[key].update(results)
        save()
    ship = Geolocator(*load_checkpoint(args.shipped)) if args.shipped else geo
    if "famous" in parts:
        report["famous_places"] = famous_places(geo, enc, args.samples, args.steps)
        if args.shipped:
            report["famous_places_shipped"] = famous_places(ship, enc, args.samples, args.steps)
        save()
    if "namesakes" in parts:
        report["namesakes"] = namesake_checks(ship, enc, args.samples or NAMESAKE_SAMPLES, args.steps)
        save()
    if "maps" in parts:
        report["ambiguous_names"] = draw_maps(ship, enc, args.out, args.samples or NAMESAKE_SAMPLES)
        save()
    if "sweep" in parts and args.sweep_captions:
        emb, truth = sets["captions_unseen_users"]
        emb, truth = emb[:args.sweep_captions], truth[:args.sweep_captions]
        report["guidance_sweep_captions"] = {}
        for c in sorted({geo.default_cfg, 0.0, 1.0, 2.0, 4.0}):
            report["guidance_sweep_captions"][f"cfg={c:g}"] = evaluate_model(
                geo, emb, truth, samples=args.sweep_samples, cfg=c, steps=args.steps)
            save()
    save()
    print(json.dumps({k: v for k, v in report.items() if k != "model_training"}, indent=1, default=float)[:6000])


if __name__ == "__main__":
    main()
