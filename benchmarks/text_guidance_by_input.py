"""Does the text model need a guidance weight per input? NLL at each weight for captions and names.

    .venv/bin/python benchmarks/text_guidance_by_input.py            # ≈ 3 min on 2 cores; one JSON line

The shipped text model takes one guidance weight (w = −0.4), chosen by NLL on held-out captions.
This measures, for the shipped model, the mean NLL (nats/sr, 32 RK4 steps) at each weight of a grid on
- captions: the 250 calibration captions, 300 further NonCommercial/NoDerivs captions, the 560 test
  authors' captions (none trains the weights);
- names: 300 + 300 draws of the report model's gazetteer training rows (bare names with namesakes by
  popularity, full forms, regions; what a user types is such a string), 300 rows of the 5,000 most
  photographed places' forms, and the 200 held-out (never trained) place names of the report;
then "Paris" (mass within 100 km of Paris, France) and "Springfield" (separated modes ≥ 5 %, ≥ 800 km)
at each weight, and a linear gate (softmax over two weights, −0.4 and 0, on standardised MiniLM
embeddings, fitted on the calibration captions and the first two name sets by expected NLL, L2 weight
``--l2``) evaluated on the other sets. Results and the conclusion: docs/text.md ("Limits").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import train_text_model as TT  # noqa: E402
from globeflow.encoders import get_encoder  # noqa: E402
from globeflow.geolocator import Geolocator  # noqa: E402
from globeflow.metrics import haversine_km  # noqa: E402
from globeflow.text import benchmark as B  # noqa: E402
from globeflow.text import gazetteer as G  # noqa: E402
from globeflow.text import recipe as R  # noqa: E402

GRID = (-0.6, -0.4, -0.2, 0.0, 0.5, 1.0)
GATE = (-0.4, 0.0)
FIT_SETS = ("calibration_captions", "names", "popular_names")


def evaluation_sets() -> dict[str, tuple[list[str], np.ndarray]]:
    caps = TT.calibration_captions(R.load_captions())
    chosen = np.isin(np.arange(len(caps)), np.random.default_rng(0).permutation(len(caps))[:250])
    cal, rest = caps.select(chosen), caps.select(~chosen)
    allcaps = R.load_captions()
    test = allcaps.select(R.test_authors(allcaps))
    gaz = G.load_gazetteer()
    pop = TT.place_popularity(gaz)
    places = TT.select_places(gaz, len(gaz), "report", pop)
    none = R.Captions(*(np.array([], dtype=str),) * 4, np.zeros((0, 2)))
    rows = TT.build_rows(gaz, places, none, 0, pop, split="report")
    text, latlon = np.array(rows.text, dtype=object), np.concatenate(rows.latlon)
    top = places[:5000]
    popular = set(gaz.name[top].tolist()) | {f[1] for f in G.place_forms(gaz.take(top))}
    rng = np.random.default_rng(1)
    draw = rng.choice(len(text), 600, replace=False)
    pop_rows = rng.choice(np.flatnonzero([t in popular for t in text]), 300, replace=False)
    held = B.held_out_places(gaz, len(gaz), 200)
    pick = lambda idx: (list(text[idx]), latlon[idx])  # noqa: E731
    return {"calibration_captions": (list(cal.text), cal.latlon),
            "other_nc_nd_captions": (list(rest.text[:300]), rest.latlon[:300]),
            "test_author_captions": (list(test.text), test.latlon),
            "names": pick(draw[:300]), "popular_names": pick(pop_rows), "names_second_draw": pick(draw[300:]),
            "unseen_names": (list(gaz.name[held]), gaz.latlon[held])}


def fit_gate(emb: torch.Tensor, nll: torch.Tensor, source: np.ndarray, l2: float):
    """Linear softmax gate over GATE minimising the source-balanced expected NLL (+ l2·|A|²)."""
    weight = torch.tensor(1.0 / np.bincount(source)[source], dtype=torch.float64)
    weight /= weight.sum()
    regret = (nll - nll.min(1, keepdim=True).values).clamp(max=20)
    A = torch.zeros(emb.shape[1], nll.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(nll.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([A, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * (torch.softmax(emb @ A + b, 1) * regret).sum(1)).sum() + l2 * (A ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return A.detach(), b.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--l2", type=float, default=1e-2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    geo = Geolocator.from_pretrained(ROOT / "src" / "globeflow" / "assets" / "models" / "text-minilm-l6")
    enc = get_encoder("minilm-l6")
    out = {"grid": GRID, "nll": {}, "paris_within_100km": {}, "springfield_separated_modes": {}}
    emb, nll = {}, {}
    for name, (texts, truth) in evaluation_sets().items():
        emb[name] = torch.from_numpy(enc.embed(texts)).double()
        t = torch.as_tensor(np.asarray(truth), dtype=torch.float32)
        nll[name] = torch.stack([-geo.log_prob(emb[name].float(), t, cfg=w, steps=32).double() for w in GRID], 1)
        out["nll"][name] = {f"{w:g}": round(float(v), 3) for w, v in zip(GRID, nll[name].mean(0))}
    queries = torch.from_numpy(enc.embed(["Paris", "Springfield"]))
    for w in GRID:
        x = geo.sample(queries, 256, steps=32, cfg=w, seed=0).numpy()
        out["paris_within_100km"][f"{w:g}"] = float(np.mean(haversine_km(x[0], B.PARIS_FR) < 100))
        out["springfield_separated_modes"][f"{w:g}"] = len(B.separated_modes(x[1]))
    cols = [GRID.index(w) for w in GATE]
    fit_emb = torch.cat([emb[k] for k in FIT_SETS])
    mu, sd = fit_emb.mean(0), fit_emb.std(0)
    A, b = fit_gate((fit_emb - mu) / sd, torch.cat([nll[k][:, cols] for k in FIT_SETS]),
                    np.concatenate([[i] * len(emb[k]) for i, k in enumerate(FIT_SETS)]), args.l2)
    out["gate"] = {"weights": GATE, "l2": args.l2, "fitted_on": FIT_SETS, "sets": {}}
    for k in emb:
        pick = (((emb[k] - mu) / sd) @ A + b).argmax(1)
        gated = nll[k][:, cols].gather(1, pick[:, None]).mean()
        out["gate"]["sets"][k] = {"gated_nll": round(float(gated), 3),
                                  "share_at_w0": round(float((pick == 1).double().mean()), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
