"""Train and evaluate the shipped default image model (src/globeflow/assets/models/im2gps3k-efficientnet-lite0).

    .venv/bin/python scripts/train_default.py            # train + evaluate, writes docs numbers as JSON
    .venv/bin/python scripts/train_default.py --evaluate-only

Data: the committed store data/im2gps3k/efficientnet-lite0 (2,287 labelled Im2GPS3k photos,
1280-d EfficientNet-Lite0 embeddings, AUTHOR = group). Photographers are split three ways by a
stable hash of AUTHOR: 20 % test (split_seed 1; only used for the reported numbers), then 15 % of
the rest validation (early stopping, and the choice of the guidance weight), the rest training.

Recipe (the ``rfm+prior`` recipe of ``globeflow evaluate``, density first): rfm width 128, depth 3,
64 Fourier position features up to 512 rad⁻¹, batch 1,024, at most 5,000 AdamW steps with warmup +
cosine learning rate, EMA 0.999 weights, conditioning dropout 0.5; the training photos repeated 10
times beside 100,000 MP-16 photo locations under the null condition (where people take photos: the
prior). Every 250 steps the NLL of the validation photographers' locations under the null condition
(the prior that guidance shrinks towards) is measured and the best EMA weights ship (early stopping
after 3 checks without gain). The photos-only recipe of 2026-12-05: ``--mp16-rows 0 --repeat 1
--batch-size 256 --steps 2000 --fourier-features 0 --fourier-scale 0 --conformal-folds 0``.

The baselines get the same rows: the cells baseline is reported on the photos alone and with the
MP-16 rows as its prior part, the best constant location on the photos alone and on photos + rows in
the model's proportions.

Credible masses (split-conformal) are fitted on the validation photos pooled with the training
photos scored cross-fitted (``--conformal-folds 3``: three more trainings, each without a third of
the training photographers): 211 photos of 18 photographers alone gave masses that did not transfer.

The shipped guidance weight (``default_cfg`` in globeflow.json) is chosen on the validation
photographers among w ∈ {−1, −0.95, …, 0}: v = (1 + w)·v_cond − w·v_uncond, so w < 0 shrinks the
photo's field towards the prior by as much as the embedding's signal fails to generalise.

Reported on the test photographers (JSON on stdout, also written to --report):
NLL (nats/sr) of the model and of the quadtree geocell baseline (``globeflow.baselines.cells``)
trained on the same photos (training + validation); 90 % credible-region coverage; point metrics
(GeoScore, km, acc@km) of the best guess as predictions make it (rule and weight chosen on
validation by expected GeoScore, 128 samples), of the old best-of-32 highest-density sample, and of
the best constant locations.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from globeflow import training as T
from globeflow.checkpoints import ModelInfo, load_checkpoint
from globeflow.credible import coverage_ranks
from globeflow.data.store import EmbeddingStore
from globeflow.geolocator import Geolocator
from globeflow.metrics import calibration, geoscore, haversine_km, point_metrics
from globeflow import tuning
from globeflow.tuning import choose_default_cfg, nll_by_cfg

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "data" / "im2gps3k" / "efficientnet-lite0"
MP16 = ROOT.parent / "shared" / "data" / "mp16" / "coordinates_100k.csv"
TARGET = ROOT / "src" / "globeflow" / "assets" / "models" / "im2gps3k-efficientnet-lite0"
MODEL_ID = "globeflow/im2gps3k-efficientnet-lite0"


def splits(store: EmbeddingStore):
    """(train, val, test) StoreArrays, photographer-disjoint."""
    rows = store.load()
    test = T.val_mask(rows.groups, 0.2, split_seed=1)
    rest = rows.select(~test)
    val = T.val_mask(rest.groups, 0.15, split_seed=0)
    return rest.select(~val), rest.select(val), rows.select(test)


def memory(arrays, with_emb: bool = True) -> T.MemoryData:
    return T.MemoryData.from_latlon(arrays.latlon, arrays.embeddings if with_emb else None, arrays.groups)


def null_rows(arrays) -> T.MemoryData:
    """Held-out locations under the null (zero) condition: early stopping watches the prior's NLL."""
    return T.MemoryData.from_latlon(arrays.latlon, np.zeros_like(arrays.embeddings))


def mixed_training_rows(train, mp16_rows: int, repeat: int) -> T.MemoryData:
    """Training photos ×repeat plus ``mp16_rows`` MP-16 locations with the null (zero) embedding."""
    if mp16_rows == 0:
        return T.MemoryData.from_latlon(np.tile(train.latlon, (repeat, 1)), np.tile(train.embeddings, (repeat, 1)))
    ll = load_mp16(mp16_rows)
    emb = np.concatenate([np.tile(train.embeddings, (repeat, 1)), np.zeros((mp16_rows, train.embeddings.shape[1]),
                                                                             np.float32)])
    latlon = np.concatenate([np.tile(train.latlon, (repeat, 1)), ll])
    return T.MemoryData.from_latlon(latlon, emb)


def fit(cfg: T.TrainConfig, data: T.MemoryData, val: T.MemoryData, info: ModelInfo, target: Path,
        select: str = "best") -> dict:
    """Train into a temporary folder; copy the best-validation (or the last) EMA checkpoint to ``target``."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = T.train(cfg, T.MemorySource(data, cfg.seed), tmp, val=val, info=info, resume=False)
        target.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", "model.safetensors", "globeflow.json"):
            shutil.copy(Path(tmp) / ("best" if select == "best" else "") / file, target / file)
    return {"seconds": round(time.perf_counter() - t0, 1), "history": result.history}


def train_default(train, val, args) -> dict:
    steps, mp16_rows, repeat, cond_drop = args.steps, args.mp16_rows, args.repeat, args.cond_drop
    cfg = T.TrainConfig(family="rfm", dim=args.dim, depth=args.depth, expansion=4, steps=steps,
                        batch_size=args.batch_size, fourier_features=args.fourier_features,
                        fourier_scale=args.fourier_scale, lr=args.lr, weight_decay=0.01, warmup_steps=200,
                        ema_decay=0.999, cond_drop=cond_drop, val_every=args.val_every, val_max=10_000,
                        val_nll_points=10_000, val_nll_steps=32 if args.fourier_features else 16,
                        patience=args.patience, checkpoint_every=steps)
    info = ModelInfo(family="rfm", encoder="efficientnet-lite0", modality="image", model_id=MODEL_ID,
                     training={"data": f"data/im2gps3k/efficientnet-lite0 (Im2GPS3k subset, 2,287 photos) x{repeat}"
                                       + (f" + {mp16_rows} MP-16 locations as null-condition rows" if mp16_rows else "")
                                       + f", conditioning dropout {cond_drop}",
                               "split": "AUTHOR hash: 20 % test (split_seed 1), 15 % of the rest validation",
                               "selection": "the EMA weights of lowest NLL of the validation photographers'"
                                            " locations under the null condition (checked every"
                                            f" {args.val_every} steps, patience {args.patience}); the guidance"
                                            " weight is then chosen on validation",
                               "script": "scripts/train_default.py"})
    return fit(cfg, mixed_training_rows(train, mp16_rows, repeat), null_rows(val), info, args.target, select="best")


CFG_GRID = (-1.0, -0.95, -0.9, -0.85, -0.8, -0.7, -0.6, -0.4, -0.2, 0.0)


def tune_default_cfg(target: Path, val) -> dict:
    """Set ``default_cfg`` in target/globeflow.json to the w of lowest validation NLL; returns the curve."""
    return choose_default_cfg(target, torch.from_numpy(val.embeddings), torch.from_numpy(val.latlon), CFG_GRID,
                              note="validation photographers")


# weights tried for the expected-GeoScore best guess; not w = −1, which ignores the photo (it scored
# 1,064.7 on validation against 1,034.5 at the default −0.85: within the noise of 211 photos)
BEST_GUESS_CFG_GRID = (-0.6, -0.3, 0.0)


def cross_fitted_ranks(train, val, args, w: float, samples: int = 128) -> np.ndarray:
    """(N,) coverage ranks of every training photo under a model trained without its photographer:
    ``args.conformal_folds`` folds of the training photographers (stable hash), each fold's model
    trained by the same recipe on the other folds (early stopping on ``val``) and sampled at weight w."""
    fold = np.array([zlib.crc32(str(g).encode()) % args.conformal_folds for g in train.groups])
    ranks = np.zeros(len(train))
    for k in range(args.conformal_folds):
        held = fold == k
        with tempfile.TemporaryDirectory() as tmp:
            train_default(train.select(~held), val, argparse.Namespace(**{**vars(args), "target": Path(tmp)}))
            geo = Geolocator.from_pretrained(tmp).with_settings(default_cfg=w)
            emb, truth = torch.from_numpy(train.embeddings[held]), torch.from_numpy(train.latlon[held])
            _, lp = tuning.own_samples(geo, emb, samples=samples)
            ranks[held] = coverage_ranks(geo.log_prob(emb, truth, steps=64).numpy(), lp)
    return ranks


def calibrate_predictions(target: Path, val, extra_ranks: np.ndarray | None = None) -> dict:
    """On the validation photos: split-conformal credible masses (pooled with ``extra_ranks``, the
    cross-fitted training photos' ranks, when given), then the best-guess rule and its guidance weight
    (expected GeoScore), both written to target/globeflow.json."""
    emb, truth = torch.from_numpy(val.embeddings), torch.from_numpy(val.latlon)
    draws = tuning.own_samples(Geolocator.from_pretrained(target), emb, samples=128)
    masses = tuning.fit_credible_masses(target, emb, truth, note="validation photos", draws=draws,
                                        extra_ranks=extra_ranks,
                                        extra_note="training photos scored by models trained without their "
                                                   "photographer (cross-fitted)")
    best = tuning.choose_best_guess(target, emb, val.latlon, draws, note="validation photos",
                                    grid=BEST_GUESS_CFG_GRID)
    scores = tuning.score_labels(best["held_out_geoscore"])
    return {"credible_masses": masses, "best_guess": {"rule": best["rule"], "cfg": best["cfg"],
                                                      "validation_geoscore": scores}}


def load_mp16(rows: int) -> np.ndarray:
    """``rows`` MP-16 locations (R, 2) degrees, the same ones the model trains on."""
    ll = np.loadtxt(MP16, delimiter=",", skiprows=1)
    return ll[np.random.default_rng(0).choice(len(ll), rows, replace=False)].reshape(-1, 2)


def cells_same_photos(train, val, test, prior: np.ndarray | None = None, seed: int = 0) -> dict:
    """The quadtree geocell baseline fitted on the training + validation photos (its own photographer
    split stops its training), with ``prior`` (P, 2) degrees as its prior part when given: mean NLL
    (nats/sr) of the test photos and its point metrics."""
    from globeflow.baselines import make_baseline

    emb = np.concatenate([train.embeddings, val.embeddings])
    model = make_baseline("cells").fit(emb, np.concatenate([train.latlon, val.latlon]),
                                       np.concatenate([train.groups, val.groups]), seed=seed, prior=prior)
    return {"nll": float(-model.log_prob(test.embeddings, test.latlon).mean()), "prior_rows": 0 if prior is None
            else len(prior), "cells": int(len(model.cells)),
            "point": point_metrics(model.point_estimate(test.embeddings), test.latlon)}


def best_constant(candidates: np.ndarray, scored: np.ndarray, test) -> dict:
    """The one location among ``candidates`` (C, 2) of highest mean GeoScore over ``scored`` (N, 2)
    degrees, and its point metrics on the test photos."""
    scores = np.array([geoscore(haversine_km(np.repeat(c[None], len(scored), 0), scored)).mean() for c in candidates])
    best = candidates[int(np.argmax(scores))]
    return {"lat": float(best[0]), "lon": float(best[1]), "seen_geoscore": float(scores.max()),
            **point_metrics(np.repeat(best[None], len(test.latlon), 0), test.latlon)}


def evaluate(folder: Path, test, conditional: bool, samples: int = 128) -> dict:
    """NLL of the test photos; with a condition also 50/90 % coverage from ``samples`` samples per photo
    and the best-of-32 point estimate (the highest-density of the first 32 of those samples)."""
    net, info = load_checkpoint(folder)
    geo = Geolocator(net, info)
    emb = torch.from_numpy(test.embeddings) if conditional else torch.zeros(1, 1)
    truth = torch.from_numpy(test.latlon)
    if conditional:
        lp_truth = geo.log_prob(emb, truth, steps=64).numpy()
    else:
        lp_truth = geo.log_prob(emb, truth[None], steps=64)[0].numpy()
    out = {"nll": float(-lp_truth.mean())}
    if conditional:
        parts = [geo.sample(emb[i:i + 16], samples, steps=32, seed=list(range(i, min(i + 16, len(emb)))),
                            return_log_prob=True) for i in range(0, len(emb), 16)]  # bounded memory
        latlon, lp = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        out["calibration_nominal"] = calibration(lp_truth, lp.numpy(), masses=(0.5, 0.9))
        masses = {level: info.credible_masses.get(level, float(level)) for level in ("0.5", "0.9")}
        cal = calibration(lp_truth, lp.numpy(), masses=tuple(masses.values()))
        out["calibration"] = {level: {"hpd_mass": m, **cal[f"{m:g}"]} for level, m in masses.items()}
        best = lp[:, :32].argmax(dim=1)
        out["point_density_best_of_32"] = point_metrics(latlon[torch.arange(len(best)), best].numpy(), test.latlon)
        k_best, s_best = geo.best_guess_budget()  # as predict draws its best guess
        point = torch.cat([geo.point_estimate(emb[i:i + 64], k_best, steps=s_best,
                                              seed=list(range(i, min(i + 64, len(emb)))))
                           for i in range(0, len(emb), 64)])
        out["point"] = {"rule": info.best_guess, "cfg": geo.default_cfg if info.best_guess_cfg is None
                        else info.best_guess_cfg, "samples": k_best, "steps": s_best,
                        **point_metrics(point.double().numpy(), test.latlon)}
    return out


def test_nll_by_cfg(folder: Path, test) -> dict:
    """Test NLL at every w of the grid (for the record; the shipped w was chosen on validation)."""
    geo = Geolocator.from_pretrained(folder)
    curve = nll_by_cfg(geo, torch.from_numpy(test.embeddings), torch.from_numpy(test.latlon), CFG_GRID)
    return {f"{w:g}": v for w, v in curve.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="most optimizer steps (early stopping may end sooner)")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--dim", type=int, default=128, help="network width")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--patience", type=int, default=3, help="validations without gain before stopping; 0 = never")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "default_model.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cond-drop", type=float, default=0.5, help="conditioning dropout rate")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fourier-features", type=int, default=64,
                        help="Fourier position features (0: PLONK's Linear on the point)")
    parser.add_argument("--fourier-scale", type=int, default=512, help="their highest angular frequency, rad⁻¹")
    parser.add_argument("--mp16-rows", type=int, default=100_000,
                        help="MP-16 locations added as null-condition rows (0: the photos only)")
    parser.add_argument("--repeat", type=int, default=10, help="times the training photos are repeated")
    parser.add_argument("--target", type=Path, default=TARGET, help="where the selected model is written")
    parser.add_argument("--conformal-folds", type=int, default=3,
                        help="K > 0: also score the training photos by K models trained without their "
                             "photographers and pool those ranks with the validation photos' for the credible "
                             "masses (K more trainings)")
    parser.add_argument("--refit-only", action="store_true",
                        help="keep the trained weights in --target; re-choose default_cfg, the credible masses "
                             "and the best guess")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, val, test = splits(EmbeddingStore(STORE))
    report = {"photos": {"train": len(train), "val": len(val), "test": len(test)},
              "photographers": {"train": len(set(train.groups)), "val": len(set(val.groups)),
                                "test": len(set(test.groups))}}
    if not args.evaluate_only:
        if not args.refit_only:
            report["train_default"] = train_default(train, val, args)
        report["default_cfg"] = tune_default_cfg(args.target, val)
        extra = None
        if args.conformal_folds:
            extra = cross_fitted_ranks(train, val, args, report["default_cfg"]["chosen"])
            report["cross_fitted_nominal_coverage"] = {f"{lv:g}": float((extra <= lv).mean()) for lv in (0.5, 0.9)}
        report.update(calibrate_predictions(args.target, val, extra))
    report["default"] = evaluate(args.target, test, True)
    report["test_nll_by_cfg"] = test_nll_by_cfg(args.target, test)
    photos = np.concatenate([train.latlon, val.latlon])
    report["cells_same_photos"] = cells_same_photos(train, val, test)
    report["nll_vs_cells"] = report["default"]["nll"] - report["cells_same_photos"]["nll"]
    report["best_constant_location"] = best_constant(photos, photos, test)
    if args.mp16_rows:  # the baselines get the model's extra rows too
        prior = load_mp16(args.mp16_rows)
        report["cells_same_rows"] = cells_same_photos(train, val, test, prior=prior)
        report["nll_vs_cells_same_rows"] = report["default"]["nll"] - report["cells_same_rows"]["nll"]
        candidates = np.concatenate([photos, prior[np.random.default_rng(1).choice(len(prior), 5000, replace=False)]])
        report["best_constant_location_same_rows"] = best_constant(  # the rows in the model's proportions
            candidates, np.concatenate([np.tile(photos, (args.repeat, 1)), prior]), test)
    report["size_mb"] = round(sum(p.stat().st_size for p in args.target.iterdir()) / 2**20, 2)
    args.report.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("train_")}, indent=1))


if __name__ == "__main__":
    main()
