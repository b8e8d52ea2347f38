"""Issue 18 item 1 figures of a text model over guidance weights and guidance intervals.

    .venv/bin/python benchmarks/text_namesakes.py MODEL_DIR --cfg=-0.3,-0.2,0 --until 1,0.9,0.7

For every (w, u): the share of 512 samples (16 steps, seed 0) of "Paris" within 100 km of Paris,
France; the separated modes of "Springfield" (≥ 5 % mass, pairwise ≥ 800 km, as the report counts
them); the share of "Paris, Texas" samples reverse-geocoded to Texas. One line per pair on stdout.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from globeflow.geocoding import reverse_geocode
from globeflow.geolocator import Geolocator
from globeflow.metrics import haversine_km
from globeflow.text.benchmark import separated_modes

PARIS_FR = np.array([48.8566, 2.3522])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--cfg", default="-0.4,-0.2,0", help="guidance weights, comma-separated")
    p.add_argument("--until", default="1", help="ends of the guidance interval (sampling.Field), comma-separated")
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    geo = Geolocator.from_pretrained(args.model)
    emb = geo.embed(["Paris", "Springfield", "Paris, Texas"])
    for until in (float(u) for u in args.until.split(",")):
        limited = geo.with_settings(cfg_until=until)
        for w in (float(w) for w in args.cfg.split(",")):
            ll = limited.sample(emb, args.samples, steps=16, cfg=w, seed=0).double().numpy()
            paris = np.mean(haversine_km(ll[0], PARIS_FR) < 100)
            texas = np.mean([p.admin1 == "Texas" for p in reverse_geocode(ll[2])])
            print(f"w={w:+g} until={until:g}: Paris within 100 km {100 * paris:.0f} %, Springfield "
                  f"{len(separated_modes(ll[1]))} separated modes, Paris, Texas in Texas {100 * texas:.0f} %",
                  flush=True)


if __name__ == "__main__":
    main()
