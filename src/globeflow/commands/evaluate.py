"""``globeflow evaluate``: cross-validated comparison of generative models and baselines."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

HELP = "cross-validate generative models and baselines on an embedding store (report.md + JSON)"
DESCRIPTION = """Train and score models on an embedding store, with photographer-aware folds.

Either --store STORE --folds K (K group-aware folds: a photographer's photos are all in one fold;
every model is trained on the other folds), or --train STORE --test STORE (one split). Rows
without coordinates or with bad values are ignored (and counted).

Models: rfm, fm, diffusion (trained here with --train-steps/--dim/--depth ...) and the baselines
regression, cells, retrieval, vmf, vmf_mixture. A name ending in +prior (rfm+prior, fm+prior,
diffusion+prior, cells+prior, vmf_mixture+prior) also trains on --prior-rows extra unconditional
locations from --prior-file (default: the MP-16 Flickr location sample in ../shared/data/mp16/):
generative models under the null condition, cells and vmf_mixture in their prior part.

Generative training recipe: an inner photographer split of the training folds (--tune-frac held
out); warmup + cosine learning rate, EMA weights, validation every --val-every steps on the NLL of
the held-out photographers' locations under the null condition, keeping the best EMA weights
(early stopping after --patience validations without gain; at most --train-steps steps).
--cfg lists guidance weights for the generative models; `tuned` chooses one per fold on the same
held-out photographers (lowest NLL, or highest GeoScore with --tune-metric geoscore) among
--tune-grid. Never on the test fold.

Metrics: GeoScore, mean/median km, acc@1/25/200/750/2500 km, country/region/area/city accuracy
(reverse geocoding of prediction and truth), NLL (nats; bits_per_dim_official), PRDC (one sample
per photo vs the truths), localizability, calibration of highest-density regions at masses
0.5/0.8/0.9/0.95 (coverage and median area km²). Point estimate of a generative model: the
best of N samples by density (--best-of), or with --point-rule geoscore the own sample of highest
expected GeoScore under the model (what predict does). With folds every value is {mean, ci95, folds}: the
pooled value over all test photos, a 95 % bootstrap interval over photographers, and per fold.
Each generative model is also compared with the best baseline trained on no more data: the paired
NLL difference on the same photos, with its bootstrap interval.
fm/diffusion densities need a radial quadrature of ODE solves: they are computed for --r3-photos
photos per fold (their NLL, calibration, localizability and point estimate use those photos).

Examples:
  globeflow evaluate --store data/im2gps3k/efficientnet-lite0 --folds 5 --out report.md --json report.json
  globeflow evaluate --store STORE --folds 5 --models rfm,vmf,retrieval --cfg 0,tuned
  globeflow evaluate --store STORE --folds 3 --models rfm,rfm+prior,cells,cells+prior --workers 2
  globeflow evaluate --train TRAIN_STORE --test TEST_STORE --models rfm --cfg 0,2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from globeflow.evaluation import ALL_MODELS, TUNE_METRICS, EvalSettings

    d = EvalSettings()
    a = parser.add_argument
    a("--store", type=Path, help="embedding store to cross-validate (with --folds)")
    a("--folds", type=int, default=5, help="number of photographer-aware folds (default 5)")
    a("--train", type=Path, help="training store (with --test, instead of --store)")
    a("--test", type=Path, help="test store (with --train)")
    a("--models", default=",".join(ALL_MODELS),
      help=f"comma-separated, from {','.join(ALL_MODELS)}, or a +prior variant (default all, no +prior)")
    a("--cfg", default="0,tuned", help="guidance weights for rfm/fm/diffusion, numbers or 'tuned' (default 0,tuned)")
    a("--tune-grid", default=",".join(f"{w:g}" for w in d.tune_grid), help="candidates for cfg=tuned")
    a("--tune-metric", choices=TUNE_METRICS, default=d.tune_metric, help=f"criterion for cfg=tuned (default {d.tune_metric})")
    a("--tune-frac", type=float, default=d.tune_frac, help=f"photographer share held out for tuning (default {d.tune_frac})")
    a("--tune-photos", type=int, default=d.tune_photos, help=f"held-out photos scored per candidate, 0 = all (default {d.tune_photos})")
    a("--samples", type=int, default=d.samples, help=f"own samples per photo (default {d.samples})")
    a("--best-of", type=int, default=d.best_of, help=f"N of the best-of-N point estimate (default {d.best_of})")
    a("--point-rule", choices=("density", "geoscore"), default=d.point_rule,
      help="generative point estimate: best of N by density (PLONK's), or the own sample of highest expected "
           f"GeoScore among all samples (what predict does; default {d.point_rule})")
    a("--point-samples", type=int, default=d.point_samples,
      help="with --point-rule geoscore: pick the point among this many plain samples per photo, a pass of "
           f"its own (every photo, fm/diffusion too); 0 = among the samples with densities (default {d.point_samples})")
    a("--steps", type=int, default=d.steps, help=f"sampler steps (default {d.steps})")
    a("--density-steps", type=int, default=d.density_steps, help=f"RK4 steps of ODE densities (default {d.density_steps})")
    a("--r3-photos", type=int, default=d.r3_photos, help=f"fm/diffusion density photos per fold, 0 = all (default {d.r3_photos})")
    a("--r3-samples", type=int, default=d.r3_samples, help=f"fm/diffusion own samples with densities (default {d.r3_samples})")
    a("--r3-nodes", type=int, default=d.r3_nodes, help=f"radial quadrature nodes (default {d.r3_nodes})")
    a("--train-steps", type=int, default=d.train_steps, help=f"optimizer steps per generative model (default {d.train_steps})")
    a("--dim", type=int, default=d.dim, help=f"network width (default {d.dim})")
    a("--depth", type=int, default=d.depth, help=f"network blocks (default {d.depth})")
    a("--batch-size", type=int, default=d.batch_size, help=f"training batch (default {d.batch_size})")
    a("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    a("--cond-drop", type=float, default=d.cond_drop, help=f"null-condition rate (default {d.cond_drop})")
    a("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default {d.weight_decay})")
    a("--ema-decay", type=float, default=d.ema_decay, help=f"EMA decay of the kept weights (default {d.ema_decay})")
    a("--val-every", type=int, default=d.val_every, help=f"steps between validations (default {d.val_every})")
    a("--patience", type=int, default=d.patience,
      help=f"validations without improvement before stopping, 0 = never (default {d.patience})")
    a("--val-photos", type=int, default=d.val_photos,
      help=f"held-out photos whose NLL drives early stopping, 0 = all (default {d.val_photos})")
    a("--prior-rows", type=int, default=d.prior_rows, help=f"extra locations of +prior models (default {d.prior_rows:,})")
    a("--prior-file", type=str, default=d.prior_file, help="CSV (LAT,LON) of those locations (default: MP-16 sample)")
    a("--prior-steps", type=int, default=d.prior_steps,
      help="most optimizer steps of +prior generative models, 0 = --train-steps (default 0)")
    a("--prior-batch-size", type=int, default=d.prior_batch_size,
      help="training batch of +prior generative models, 0 = --batch-size (default 0)")
    a("--prior-fourier-features", type=int, default=d.prior_fourier_features,
      help="Fourier position features of +prior generative models, 0 = PLONK's Linear on the point "
           f"(default {d.prior_fourier_features})")
    a("--prior-fourier-scale", type=int, default=d.prior_fourier_scale,
      help=f"their highest angular frequency in rad⁻¹ (default {d.prior_fourier_scale})")
    a("--prior-repeat", type=int, default=d.prior_repeat,
      help=f"times the photos are repeated beside the prior rows (default {d.prior_repeat})")
    a("--workers", type=int, default=1, help="processes running (fold, model) tasks, one torch thread each (default 1)")
    a("--n-boot", type=int, default=d.n_boot, help=f"bootstrap replicates (default {d.n_boot})")
    a("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    a("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a("--out", type=Path, help="write the Markdown report here")
    a("--json", type=Path, dest="json_out", help="write the JSON report here")
    a("--no-progress", action="store_true", help="no progress bar")


def parse_cfgs(text: str) -> list:
    """'0,2,tuned' → [0.0, 2.0, 'tuned']; raises ValueError naming a bad value."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "tuned":
            out.append(part)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--cfg: {part!r} is neither a number nor 'tuned'") from None
        if value < -1 or not math.isfinite(value):
            raise ValueError(f"--cfg: {part!r} must be a finite number ≥ −1 (−1 = the unconditional prior)")
        out.append(value)
    if not out:
        raise ValueError("--cfg: no value given")
    return out


def _point_text(s: dict) -> str:
    """The report's words for the generative point estimate of settings ``s``."""
    if s.get("point_rule", "density") == "geoscore" and s.get("point_samples"):
        return (f"the sample of highest expected GeoScore under the model among {s['point_samples']} plain "
                "samples per photo (a pass of its own, every photo, fm/diffusion too)")
    if s.get("point_rule", "density") == "geoscore":
        return ("the own sample of highest expected GeoScore under the model, among all own samples "
                "(fm/diffusion: on the density photos only)")
    return (f"best of N = {s['best_of']} samples by density (fm/diffusion: N = {min(s['best_of'], s['r3_samples'])}, "
            "on the density photos only)")


def _settings(args):
    from globeflow.evaluation import EvalSettings

    grid = tuple(w for w in parse_cfgs(args.tune_grid) if w != "tuned")
    if not grid:
        raise ValueError("--tune-grid needs at least one number")
    return EvalSettings(samples=args.samples, best_of=args.best_of, point_rule=args.point_rule,
                        point_samples=args.point_samples, steps=args.steps, seed=args.seed,
                        density_steps=args.density_steps, r3_photos=args.r3_photos, r3_samples=args.r3_samples,
                        r3_nodes=args.r3_nodes, train_steps=args.train_steps, dim=args.dim, depth=args.depth,
                        batch_size=args.batch_size, prior_fourier_features=args.prior_fourier_features,
                        prior_fourier_scale=args.prior_fourier_scale, prior_steps=args.prior_steps,
                        prior_batch_size=args.prior_batch_size, lr=args.lr, cond_drop=args.cond_drop, tune_grid=grid,
                        weight_decay=args.weight_decay, ema_decay=args.ema_decay, val_every=args.val_every,
                        patience=args.patience, val_photos=args.val_photos, prior_rows=args.prior_rows,
                        prior_file=args.prior_file, prior_repeat=args.prior_repeat,
                        tune_frac=args.tune_frac, tune_photos=args.tune_photos, tune_metric=args.tune_metric, n_boot=args.n_boot)


def _splits(args):
    """(splits, description, rows dropped) from --store/--folds or --train/--test."""
    from globeflow.evaluation import EvalData, fold_splits

    if args.store is not None:
        if args.train is not None or args.test is not None:
            raise ValueError("give either --store (with --folds) or --train and --test, not both")
        data, dropped = EvalData.from_store(args.store)
        return fold_splits(data, args.folds, args.seed), f"{args.store} ({len(data)} photos, {args.folds} folds)", dropped
    if args.train is None or args.test is None:
        raise ValueError("give --store STORE --folds K, or both --train STORE and --test STORE")
    train, d1 = EvalData.from_store(args.train)
    test, d2 = EvalData.from_store(args.test)
    shared = set(train.groups) & set(test.groups)
    if shared:
        print(f"globeflow evaluate: warning: {len(shared)} photographers appear in both --train and --test",
              file=sys.stderr)
    return [(train, test)], f"train {args.train} ({len(train)}), test {args.test} ({len(test)})", d1 + d2


def run(args: argparse.Namespace) -> int:
    import torch

    from globeflow.data.store import StoreError
    from globeflow.evaluation import check_models, evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        check_models(models)
    except ValueError as err:
        print(f"globeflow evaluate: --models: {err}")
        return 2
    if args.workers < 1:
        print(f"globeflow evaluate: --workers must be ≥ 1; got {args.workers}")
        return 2
    try:
        cfgs = parse_cfgs(args.cfg)
        settings = _settings(args)
        splits, source, dropped = _splits(args)
    except (ValueError, StoreError, OSError) as err:
        print(f"globeflow evaluate: {err}")
        return 2
    if dropped:
        print(f"globeflow evaluate: ignored {dropped} rows without valid coordinates or embeddings", file=sys.stderr)
    command = "globeflow evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else ""
    w0, c0 = time.perf_counter(), _cpu_seconds()
    try:
        ev = evaluate(splits, models, cfgs, settings, progress=not args.no_progress, workers=args.workers)
    except ValueError as err:
        print(f"globeflow evaluate: {err}")
        return 2
    meta = {"source": source, "rows_ignored": dropped, "models": models, "cfgs": [str(c) for c in cfgs],
            "settings": settings.to_dict(), "folds": len(splits), "command": command,
            "wall_seconds": time.perf_counter() - w0, "cpu_seconds": _cpu_seconds() - c0,
            "threads": torch.get_num_threads(), "workers": args.workers, "load_average": _load(),
            "model_wall_seconds": ev.seconds, "model_cpu_seconds": ev.cpu_seconds,
            "nll_vs_best_baseline": ev.comparisons,
            "tuned": {m: [{k: v for k, v in t.items() if k != "val_ids"} for t in ts] for m, ts in ev.tuned.items()},
            "photos": [len(te) for _, te in splits],
            "photographers": [len(set(te.groups)) for _, te in splits]}
    doc = {**ev.report, "_meta": meta}
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
    text = render_markdown(ev.report, meta)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if not args.out and not args.json_out:
        print(text)
    return 0


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (the --workers)."""
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> list[float] | None:
    """1/5/15-minute load averages (None where the OS has none): others' work slows the wall time."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------- Markdown

def _value(v) -> tuple[float, list | None]:
    return (v["mean"], v.get("ci95")) if isinstance(v, dict) else (v, None)


def _fmt(v, kind: str) -> str:
    mean, ci = _value(v)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    f = {"pct": lambda x: f"{100 * x:.1f}", "int": lambda x: f"{x:,.0f}", "f3": lambda x: f"{x:.3f}",
         "f2": lambda x: f"{x:.2f}", "mkm2": lambda x: f"{x / 1e6:.2f}"}[kind]
    if ci is None or any(c is None or math.isnan(c) for c in ci):
        return f(mean)
    return f"{f(mean)} [{f(ci[0])}, {f(ci[1])}]"


POINT_COLUMNS = [("GeoScore", "geoscore", "int"), ("mean km", "mean_km", "int"), ("median km", "median_km", "int"),
                 ("1 km %", "acc_1km", "pct"), ("25 km %", "acc_25km", "pct"), ("200 km %", "acc_200km", "pct"),
                 ("750 km %", "acc_750km", "pct"), ("2500 km %", "acc_2500km", "pct")]
ADMIN_COLUMNS = [("country %", "country_acc", "pct"), ("region %", "region_acc", "pct"),
                 ("area %", "area_acc", "pct"), ("city %", "city_acc", "pct")]
DENSITY_COLUMNS = [("NLL nats", "nll_nats", "f3"), ("bits/dim (official)", "bits_per_dim_official", "f3"),
                   ("info gain bits", "info_gain_bits", "f2"), ("localizability (official)", "localizability_official", "f3"),
                   ("photos with density", "n_density", "int")]
PRDC_COLUMNS = [("precision", "prdc_precision", "f3"), ("recall", "prdc_recall", "f3"),
                ("density", "prdc_density", "f3"), ("coverage", "prdc_coverage", "f3")]
CALIB_COLUMNS = [(f"{int(m * 100)} %: coverage %", f"calib_{m:g}_coverage", "pct") for m in (0.5, 0.8, 0.9, 0.95)] + \
                [(f"{int(m * 100)} %: area Mkm²", f"calib_{m:g}_area_km2", "mkm2") for m in (0.5, 0.9)] + \
                [(f"stated {int(m * 100)} %: coverage %", f"stated_{m:g}_coverage", "pct") for m in (0.5, 0.9)] + \
                [("stated 90 %: area Mkm²", "stated_0.9_area_km2", "mkm2")]


def _table(report: dict, columns: list) -> str:
    head = "| model | cfg | " + " | ".join(c[0] for c in columns) + " |"
    rule = "|" + " --- |" * (len(columns) + 2)
    rows = [head, rule]
    for model, by_cfg in report.items():
        for key, values in by_cfg.items():
            cells = [_fmt(values.get(col), kind) if col in values else "–" for _, col, kind in columns]
            rows.append(f"| {model} | {key.removeprefix('cfg=')} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _prior_budget_text(s: dict) -> str:
    """How ``+prior`` generative models are trained where it differs from the others ('' if not)."""
    steps, batch = s.get("prior_steps") or s["train_steps"], s.get("prior_batch_size") or s["batch_size"]
    ff = s.get("prior_fourier_features", 0)
    if (steps, batch, ff) == (s["train_steps"], s["batch_size"], 0):
        return ""
    return (f"; `+prior` generative models: at most {steps} steps of batch {batch}"
            + (f", {ff} Fourier position features up to {s.get('prior_fourier_scale')} rad⁻¹" if ff else ""))


def render_markdown(report: dict, meta: dict) -> str:
    """The report as Markdown: settings, then point, admin, density, PRDC and calibration tables."""
    s = meta["settings"]
    lines = [
        "# globeflow evaluation", "",
        f"Data: {meta['source']}; {meta['rows_ignored']} rows ignored (no valid coordinates or embedding). "
        f"Test photos per fold: {meta['photos']}; photographers per fold: {meta['photographers']}.", "",
        "Values: pooled over all test photos" + (" with a 95 % bootstrap interval over photographers "
                                                  f"({s['n_boot']} replicates) in brackets" if meta["folds"] > 1 else "") + ".",
        f"Generative models: at most {s['train_steps']} steps, width {s['dim']}, depth {s['depth']}, batch {s['batch_size']}, "
        f"lr {s['lr']} (warmup + cosine), weight decay {s.get('weight_decay', 0)}, EMA {s.get('ema_decay', '–')}, "
        f"null-condition rate {s['cond_drop']}; trained on {1 - s['tune_frac']:.0%} of the training folds' photographers, "
        f"keeping the EMA weights of lowest NLL of the other {s['tune_frac']:.0%}'s locations under the null condition "
        f"(up to {s.get('val_photos') or 'all'} photos, checked every {s.get('val_every', '–')} steps, patience "
        f"{s.get('patience', 0)}). `+prior` models: also {s.get('prior_rows', 0):,} unconditional locations from "
        f"`{Path(str(s.get('prior_file', ''))).name}` (null condition for generative models, photos repeated "
        f"×{s.get('prior_repeat', 1)}; the prior part of cells and vmf_mixture)" + _prior_budget_text(s) + f". Sampler {s['steps']} steps; point estimate = {_point_text(s)}; {s['samples']} own samples per photo for rfm, {s['r3_samples']} for "
        f"fm/diffusion on {s['r3_photos'] or 'all'} photos per fold (radial quadrature, {s['r3_nodes']} nodes, "
        f"{s['density_steps']} RK4 steps). cfg = tuned: per fold, among {s['tune_grid']}, by "
        f"{'lowest NLL' if s['tune_metric'] == 'nll' else 'highest GeoScore'} on up to {s['tune_photos'] or 'all'} photos "
        f"of the same held-out photographers. Stated regions (rfm): the HPD masses that cover 50 % / 90 % of "
        f"those held-out photographers' truths (split conformal, up to {s.get('val_photos') or 'all'} photos), "
        f"as `Geolocator.credible_masses` states them.",
    ]
    chosen = "; ".join(f"{m}: {[t['cfg'] for t in ts]}" for m, ts in (meta.get("tuned") or {}).items()
                       if all("cfg" in t for t in ts))
    if chosen:
        lines += ["", f"Tuned cfg per fold: {chosen}."]
    if meta.get("tuned"):
        steps = "; ".join(f"{m}: {[t.get('best_step') for t in ts]}" for m, ts in meta["tuned"].items())
        lines += ["", f"Kept EMA step per fold (early stopping): {steps}."]
    load = meta.get("load_average")
    lines += ["", f"Wall time {meta['wall_seconds'] / 60:.1f} min, CPU time {meta['cpu_seconds'] / 60:.1f} min "
              f"({meta.get('workers', 1)} worker processes, {meta['threads']} torch threads in the main one)"
              + (f"; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)"
                 if load else "") + ".", ""]
    if meta.get("command"):
        lines += ["```", meta["command"], "```", ""]
    for title, cols in (("Point estimate", POINT_COLUMNS), ("Administrative accuracy (reverse geocoding)", ADMIN_COLUMNS),
                        ("Density of the truth and localizability", DENSITY_COLUMNS),
                        ("Precision / recall / density / coverage (one sample per photo vs truths)", PRDC_COLUMNS),
                        ("Calibration of highest-density regions (nominal mass: coverage, median area)", CALIB_COLUMNS)):
        lines += [f"## {title}", "", _table(report, cols), ""]
    if meta.get("nll_vs_best_baseline"):
        lines += ["## NLL against the best baseline (paired, same photos)", "",
                  "Δ = generative NLL − baseline NLL (nats/sr; < 0: the generative model is better), on the photos "
                  "both have a density for; the baseline is the one of lowest pooled NLL among those trained on no "
                  "more data (no `+prior` baseline for a model without the prior rows).", "",
                  _comparison_table(meta["nll_vs_best_baseline"]), ""]
    return "\n".join(lines)


def _comparison_table(comparisons: dict) -> str:
    rows = ["| model | cfg | best baseline | baseline NLL (all its photos) | Δ NLL nats | interval below 0 | photos |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in comparisons.values():
        below = "yes" if c["ci95"][1] < 0 else "no"
        rows.append(f"| {c['model']} | {c['cfg'].removeprefix('cfg=')} | {c['baseline']} | {c['baseline_nll']:.3f} | "
                    f"{_fmt({'mean': c['mean'], 'ci95': c['ci95']}, 'f3')} | {below} | {c['n']:,} |")
    return "\n".join(rows)
