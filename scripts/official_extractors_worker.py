"""Runs in the official environment (``.venv-official``): the official PLONK extractors and pipeline.

Called by ``scripts/check_official_extractors.py`` with a JSON job file; writes an ``.npz``.
Never imports globeflow's package (only ``globeflow.data.images``, plain PIL/numpy, for the
"decoded" inputs). ``TORCH_HOME``/``HF_HOME``/``HF_HUB_OFFLINE`` come from the caller.

Job keys: ``images`` (paths), ``decode`` ("raw": ``Image.open`` as a user of the official code
would; "globeflow": globeflow's loader, so both sides see the same pixels), ``extractors``
(subset of "dinov2", "streetclip"), optional ``pipeline`` = {model, image, noise (K, 3), cfgs,
steps, coords (N, 2) degrees}.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np


def _torchvision_without_ops() -> None:
    """torchvision 0.28's compiled ops do not load next to this torch; its PIL transforms need none of them."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision  # noqa: F401  (imports now; the transforms used are the released ones)


def _open(paths: list[str], decode: str):
    from PIL import Image

    if decode == "globeflow":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from globeflow.data.images import load_image  # PIL + numpy only

        return [load_image(p) for p in paths]
    images = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            images.append(im.copy())
    return images


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    _torchvision_without_ops()
    import torch

    torch.set_num_threads(int(job.get("threads", 2)))
    from plonk import pipe

    images = _open(job["images"], job.get("decode", "raw"))
    result: dict[str, np.ndarray] = {}
    device = torch.device("cpu")
    if "dinov2" in job.get("extractors", []):
        extractor = pipe.DinoV2FeatureExtractor(device=device)
        result["dinov2"] = extractor({"img": images})["emb"].float().numpy()
        del extractor
    if "streetclip" in job.get("extractors", []):
        extractor = pipe.StreetClipFeatureExtractor(device=device)
        result["streetclip"] = np.concatenate([extractor({"img": [im]})["emb"].float().numpy() for im in images])
        result["streetclip_processor"] = np.array(type(extractor.processor.image_processor).__name__)
        del extractor
    spec = job.get("pipeline")
    if spec:
        plonk_pipe = pipe.PlonkPipeline(spec["model"], device=device)
        image = _open([spec["image"]], job.get("decode", "raw"))[0]
        emb = plonk_pipe.cond_preprocessing({"img": [image]})["emb"]
        result["pipe_emb"] = emb.float().numpy()
        noise = torch.tensor(np.asarray(spec["noise"], dtype=np.float32))
        for cfg in spec["cfgs"]:
            latlon = plonk_pipe(image, x_N=noise, num_steps=spec["steps"], cfg=cfg)
            result[f"samples_cfg{cfg:g}"] = np.asarray(latlon, dtype=np.float32)
            nats = plonk_pipe.compute_likelihood(emb=emb, coordinates=np.asarray(spec["coords"]), cfg=cfg,
                                                 normalize_logp=False)
            result[f"loglik_nats_cfg{cfg:g}"] = nats.detach().float().numpy()
    np.savez(out, **result)


if __name__ == "__main__":
    main()
