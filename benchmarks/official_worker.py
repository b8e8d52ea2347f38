"""The official side of bench_vs_official.py: runs diff-plonk 0.4's own code in its own venv.

Started by the driver as ``.venv-official/bin/python benchmarks/official_worker.py``; it reads one
JSON request per line on stdin and answers one JSON line per request on its *original* stdout
(the official code prints progress to stdout, which is sent to stderr instead). Arrays travel as
``.npy`` files in a folder the driver names. Only the official package's code computes here:

- ``init``: build ``Plonk`` (the official ``GeoAdaLNMLP``) and, with ``create``, write the shared
  checkpoint with the official ``save_pretrained`` (random weights, ``blocks.*.mlp.3`` re-initialised
  with nn.Linear's default so blocks are not identities, as the shared fixture README explains);
  then load it with ``Plonk.from_pretrained(folder)`` and wrap it in a ``PlonkPipeline`` built
  without its hub-downloading ``__init__``;
- ``sample``: ``PlonkPipeline.__call__`` (riemannian_flow_sampler, Euler), one "image" per sample;
- ``likelihood``: ``PlonkPipeline.compute_likelihood`` (dopri5, all points jointly), in batches;
- ``train``: the official training step as ``DiffGeolocalizer.training_step`` + Lightning do it:
  GPStoCartesian, RiemannianFlowMatchingLoss(cond_drop 0.1) through DDPMPrecond, AdamW, EMA lerp.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import io
import json
import re
import sys
import time
import types

def _torchvision_or_placeholder() -> None:
    """The real torchvision where it imports (GPU machines); else an inert placeholder for plonk.pipe.

    torchvision is used only for image preprocessing, which the benchmark never runs. A placeholder
    must not fool transformers, which imports torchvision submodules when it believes torchvision is
    installed: it is first told "not installed" (``sys.modules[name] = None``), and its cached
    ``is_torchvision_available()`` keeps that answer after the placeholder goes in.
    """
    try:
        import torchvision.transforms  # noqa: F401
        return
    except Exception:  # missing, or a build that does not match this torch (RuntimeError: torchvision::nms)
        pass
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package
    sys.modules["torchvision"] = None
    try:
        from transformers.utils import import_utils
        import_utils.is_torchvision_available()
    except ImportError:
        pass
    for name in ("torchvision", "torchvision.transforms"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]


_torchvision_or_placeholder()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from plonk.models.losses import RiemannianFlowMatchingLoss  # noqa: E402
from plonk.models.postprocessing import CartesiantoGPS  # noqa: E402
from plonk.models.preconditioning import DDPMPrecond  # noqa: E402
from plonk.models.preprocessing import GPStoCartesian  # noqa: E402
from plonk.models.pretrained_models import Plonk  # noqa: E402
from plonk.models.samplers.riemannian_flow_sampler import riemannian_flow_sampler  # noqa: E402
from plonk.models.schedulers import SigmoidScheduler  # noqa: E402
from plonk.pipe import PlonkPipeline  # noqa: E402
from plonk.utils.manifolds import Sphere  # noqa: E402

STATE: dict = {}


def make_pipeline(network: torch.nn.Module) -> PlonkPipeline:
    """A PlonkPipeline around an in-memory network (its __init__ would download from the hub)."""
    pipe = object.__new__(PlonkPipeline)
    pipe.network = network.requires_grad_(False).eval()
    pipe.scheduler = SigmoidScheduler(-7, 3, 1.0, 1e-9)
    pipe.postprocessing = CartesiantoGPS()
    pipe.sampler = riemannian_flow_sampler
    pipe.model_path = "in-memory"
    pipe.preconditioning = DDPMPrecond()
    pipe.device = torch.device("cpu")
    pipe.manifold = Sphere()
    pipe.input_dim = 3
    pipe.cond_preprocessing = None  # set per request: "images" are row indices into an embedding table
    return pipe


def _table_preprocessing(emb: torch.Tensor):
    def pre(batch: dict) -> dict:
        batch["emb"] = emb[torch.as_tensor(batch["img"], dtype=torch.long)]
        return batch
    return pre


def do_init(req: dict) -> dict:
    torch.set_num_threads(int(req["threads"]))
    folder = req["folder"]
    if req.get("create"):
        c = req["create"]
        torch.manual_seed(int(c["seed"]))
        net = Plonk(input_dim=3, dim=c["dim"], depth=c["depth"], expansion=4, cond_dim=c["cond_dim"])
        for block in net.blocks:
            block.mlp[3].reset_parameters()
        net.save_pretrained(folder)
    net = Plonk.from_pretrained(folder)
    STATE[req.get("name", "random")] = make_pipeline(net)
    return {"torch": torch.__version__, "params": sum(p.numel() for p in net.parameters())}


def do_sample(req: dict) -> dict:
    pipe: PlonkPipeline = STATE[req.get("name", "random")]
    emb = torch.from_numpy(np.load(req["emb"]))  # (M, C)
    x0 = torch.from_numpy(np.load(req["x_init"]))  # (M, K, 3)
    M, K = x0.shape[:2]
    pipe.cond_preprocessing = _table_preprocessing(emb)
    images = np.repeat(np.arange(M), K).tolist()
    chunk = int(req.get("chunk", M * K))
    outs, t0 = [], time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        for i in range(0, M * K, chunk):
            outs.append(pipe(images[i:i + chunk], x_N=x0.reshape(M * K, 3)[i:i + chunk],
                             num_steps=int(req["steps"]), cfg=float(req.get("cfg", 0.0))))
    seconds = time.perf_counter() - t0
    np.save(req["out"], np.concatenate(outs).reshape(M, K, 2))
    return {"seconds": seconds}


def do_likelihood(req: dict) -> dict:
    pipe: PlonkPipeline = STATE[req.get("name", "random")]
    emb = torch.from_numpy(np.load(req["emb"]))  # (1, C) or (N, C)
    coords = np.load(req["coords"])  # (N, 2) degrees
    batch = int(req["batch"])
    outs, nfes, t0 = [], [], time.perf_counter()
    for i in range(0, len(coords), batch):
        e = emb if emb.shape[0] == 1 else emb[i:i + batch]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            lp = pipe.compute_likelihood(emb=e, coordinates=coords[i:i + batch], cfg=float(req.get("cfg", 0.0)),
                                         rtol=float(req.get("rtol", 1e-6)), atol=float(req.get("atol", 1e-6)),
                                         normalize_logp=False)
        outs.append(lp.detach().numpy())
        nfes += [int(n) for n in re.findall(r"Likelihood NFE: (\d+)", buf.getvalue())]
    seconds = time.perf_counter() - t0
    np.save(req["out"], np.concatenate(outs))
    return {"seconds": seconds, "nfe": nfes}


def do_train(req: dict) -> dict:
    """``steps`` official training steps at batch ``batch``; returns per-step wall times."""
    torch.manual_seed(int(req.get("seed", 0)))
    net = Plonk(input_dim=3, dim=req["dim"], depth=req["depth"], expansion=4, cond_dim=req["cond_dim"])
    ema = Plonk(input_dim=3, dim=req["dim"], depth=req["depth"], expansion=4, cond_dim=req["cond_dim"])
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    net.train()
    gps_deg = np.load(req["gps"])  # (N, 2) degrees
    emb_all = torch.from_numpy(np.load(req["emb"]))  # (N, C)
    sched = SigmoidScheduler(-7, 3, 1.0, 1e-9)
    loss_fn = RiemannianFlowMatchingLoss(sched, cond_drop_rate=0.1, conditioning_key="emb")
    precond, to_xyz = DDPMPrecond(), GPStoCartesian(input_key="gps", output_key="x_0")
    opt = torch.optim.AdamW(net.parameters(), lr=float(req.get("lr", 1e-3)), weight_decay=0.01)
    B, times, losses = int(req["batch"]), [], []
    rng = np.random.default_rng(0)
    for _ in range(int(req["steps"])):
        idx = rng.integers(0, len(gps_deg), B)
        t0 = time.perf_counter()
        batch = {"gps": torch.from_numpy(np.radians(gps_deg[idx])).float(), "emb": emb_all[idx].clone()}
        with torch.no_grad():
            batch = to_xyz(batch)
        loss = loss_fn(precond, net, batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # EMA callback: ema.lerp(param, decay) as the official code writes it
            for e, p in zip(ema.parameters(), net.parameters()):
                e.copy_(e.lerp(p, 0.999))
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    return {"step_seconds": times, "losses": losses}


HANDLERS = {"init": do_init, "sample": do_sample, "likelihood": do_likelihood, "train": do_train}


def main() -> None:
    reply = sys.stdout
    sys.stdout = sys.stderr  # the official code prints; keep the protocol stream clean
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            out = {"ok": True, **HANDLERS[req["op"]](req)}
        except Exception as err:  # report to the driver, keep serving
            out = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        reply.write(json.dumps(out) + "\n")
        reply.flush()


if __name__ == "__main__":
    main()
