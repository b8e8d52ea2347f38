"""Local stand-ins for the three online sources of the released PLONK models (random weights).

- torch.hub: the DINOv2 hub code from ``../shared/torch_hub`` copied to ``$TORCH_HOME/hub`` plus
  random weights under the checkpoint name the hub code asks for;
- Hugging Face ``geolocal/StreetCLIP``: a ``CLIPModel`` of the published ViT-L/14-336 config (or a
  1-layer version with the same widths), the published ``CLIPImageProcessor`` settings and a
  minimal CLIP tokenizer (``CLIPProcessor.from_pretrained`` loads one), in the hub cache layout;
- Hugging Face ``nicolas-dufour/PLONK_*``: official-format checkpoints (``config.json`` +
  ``model.safetensors``), in the hub cache layout.

Also a tiny HTTP server that answers the Hugging Face API paths ``snapshot_download`` uses, so
that downloads go through huggingface_hub's real code (``HF_ENDPOINT=http://127.0.0.1:PORT``).
Used by the tests and by ``scripts/check_official_extractors.py`` / ``benchmarks/bench_hub_encoders.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DINOV2_CODE = SHARED / "torch_hub" / "facebookresearch_dinov2_main"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# the project's full-size network (the released checkpoints' own config.json decides; any shape loads)
PLONK_FULL = {"input_dim": 3, "dim": 512, "depth": 12, "expansion": 4, "cond_dim": 1024}
PLONK_SMALL = {"input_dim": 3, "dim": 64, "depth": 2, "expansion": 4, "cond_dim": 1024}


# ---------------------------------------------------------------------------------------------- torch.hub
def build_torch_hub(torch_home: Path, hub_models=("dinov2_vits14_reg",), seed: int = 0) -> Path:
    """Write ``torch_home/hub/{facebookresearch_dinov2_main, checkpoints/<weights>}``; returns the hub dir."""
    from globeflow.encoders.dinov2 import HUB_CODE_DIR, HUB_MODELS

    hub = Path(torch_home) / "hub"
    code = hub / HUB_CODE_DIR
    if not code.exists():
        shutil.copytree(DINOV2_CODE, code)
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in hub_models:
        target = hub / "checkpoints" / HUB_MODELS[name][0]
        if target.exists():
            continue
        torch.manual_seed(seed)
        model = torch.hub.load(str(code), name, source="local", pretrained=False)
        _randomise_norms(model)
        tmp = target.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, target)
        del model
    return hub


def _randomise_norms(model: torch.nn.Module) -> None:
    """LayerNorm/LayerScale weights away from 1 and biases away from 0, so none of them go untested."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ls1.gamma", "ls2.gamma")):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.02)
            elif name in ("cls_token", "register_tokens", "mask_token", "pos_embed"):
                p.normal_(0, 0.02)


# -------------------------------------------------------------------------------------- Hugging Face cache
def write_hf_repo(hf_home: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Put ``files`` (name → local file) in the hub cache layout; returns the snapshot folder."""
    root = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    digests = {name: _sha256(path) for name, path in sorted(files.items())}
    commit = hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        blob = root / "blobs" / digests[name]
        if not blob.exists():
            try:
                os.link(path, blob)  # no second copy of a 1.7 GB file
            except OSError:
                shutil.copyfile(path, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def streetclip_config(full: bool):
    """The published StreetCLIP CLIPConfig (ViT-L/14-336 vision, CLIP-L text); ``full=False``: 1 layer each."""
    from transformers import CLIPConfig

    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24 if full else 1,
                  num_attention_heads=16, patch_size=14, image_size=336, hidden_act="quick_gelu",
                  layer_norm_eps=1e-5, projection_dim=768)
    text = dict(hidden_size=768 if full else 64, intermediate_size=3072 if full else 128,
                num_hidden_layers=12 if full else 1, num_attention_heads=12 if full else 4,
                max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)


def streetclip_processor():
    """The published ``CLIPImageProcessor`` settings of geolocal/StreetCLIP."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(do_resize=True, size={"shortest_edge": 336}, resample=3, do_center_crop=True,
                              crop_size={"height": 336, "width": 336}, do_rescale=True, rescale_factor=1 / 255,
                              do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)


def _write_clip_tokenizer(folder: Path) -> None:
    """A byte-level CLIP BPE tokenizer with no merges (StreetCLIP ships one; only text inputs would use it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
         "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
         "pad_token": "<|endoftext|>"}))


def build_streetclip(hf_home: Path, full: bool = False, seed: int = 0, work: Path | None = None) -> Path:
    """``geolocal/StreetCLIP`` in ``hf_home``'s hub cache (random weights); returns the snapshot folder."""
    from transformers import CLIPModel

    work = Path(work or Path(hf_home) / "_build" / ("streetclip-full" if full else "streetclip-small"))
    if not (work / "config.json").exists():
        torch.manual_seed(seed)
        model = CLIPModel(streetclip_config(full)).eval()
        with torch.no_grad():  # default CLIP init leaves norms at 1 and biases at 0; move them
            for name, p in model.named_parameters():
                if "layer_norm" in name or "layrnorm" in name:
                    p.add_(torch.randn_like(p) * (0.2 if name.endswith("weight") else 0.05))
        tmp = work.with_name(work.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp)
        streetclip_processor().save_pretrained(tmp)
        _write_clip_tokenizer(tmp)
        del model
        shutil.rmtree(work, ignore_errors=True)
        os.replace(tmp, work)
    files = {p.name: p for p in work.iterdir() if p.is_file()}
    return write_hf_repo(hf_home, "geolocal/StreetCLIP", files)


def build_plonk(hf_home: Path, repo_id: str, config: dict, seed: int = 0) -> Path:
    """An official-format PLONK checkpoint (random weights, no globeflow.json) as ``repo_id`` in the cache."""
    from safetensors.torch import save_file

    from globeflow.network import Denoiser, NetworkConfig

    work = Path(hf_home) / "_build" / repo_id.replace("/", "--")
    if not (work / "model.safetensors").exists():
        torch.manual_seed(seed)
        net = Denoiser.from_config(NetworkConfig.from_dict(config))
        for module in net.modules():  # the official constructor zeroes the blocks' last layers; undo that
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.json").write_text(json.dumps(config, sort_keys=True))
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(work / "model.safetensors"))
    return write_hf_repo(hf_home, repo_id, {"config.json": work / "config.json",
                                            "model.safetensors": work / "model.safetensors"})


def build_all(root: Path, *, vitl: bool = False, full_streetclip: bool = False, full_plonk: bool = False) -> dict:
    """TORCH_HOME and HF_HOME under ``root`` with every stand-in; returns the environment to set."""
    torch_home, hf_home = Path(root) / "torch", Path(root) / "hf"
    build_torch_hub(torch_home, ("dinov2_vits14_reg",) + (("dinov2_vitl14_reg",) if vitl else ()))
    build_streetclip(hf_home, full=full_streetclip)
    big = PLONK_FULL if full_plonk else PLONK_SMALL
    for seed, (name, cfg) in enumerate((("PLONK_YFCC", big), ("PLONK_OSV_5M", big), ("PLONK_OSV_5M_flow", PLONK_SMALL),
                                        ("PLONK_OSV_5M_diffusion", PLONK_SMALL), ("PLONK_YFCC_flow", PLONK_SMALL))):
        build_plonk(hf_home, f"nicolas-dufour/{name}", cfg, seed=seed)
    return {"TORCH_HOME": str(torch_home), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}


# ----------------------------------------------------------------------------- photos for parity checks
def odd_im2gps_photos(n: int) -> list[Path]:
    """The first ``n`` Im2GPS3k photos (by name) whose |width − height| is odd and whose centre-crop
    offset rounds up (|w − h| ≡ 3 mod 4: (|w − h|)/2 = k + 0.5 with k odd, so round-half-to-even
    gives k + 1 while flooring gives k; for k even the two agree)."""
    out = []
    for path in sorted((SHARED / "data" / "im2gps3k" / "images").glob("*.jpg")):
        with Image.open(path) as im:
            w, h = im.size
        if abs(w - h) % 4 == 3:
            out.append(path)
            if len(out) == n:
                break
    return out


def special_photos(folder: Path, sources: list[Path]) -> list[Path]:
    """CMYK JPEG, greyscale JPEG, palette PNG with transparency, EXIF-rotated JPEG, from real photos."""
    folder.mkdir(parents=True, exist_ok=True)
    a, b, c, d = (Image.open(p).convert("RGB") for p in sources[:4])
    out = {"cmyk.jpg": lambda p: a.convert("CMYK").save(p, quality=92),
           "grey.jpg": lambda p: b.convert("L").save(p, quality=92)}

    def palette_alpha(p: Path) -> None:
        pal = c.quantize(colors=200)
        pal.info["transparency"] = 0  # palette entry 0 transparent: a few regions see-through
        pal.save(p, transparency=0)

    def exif_rotated(p: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: the stored pixels must be turned 90° clockwise to view
        d.transpose(Image.Transpose.ROTATE_90).save(p, quality=92, exif=exif)

    out["palette_alpha.png"] = palette_alpha
    out["exif_rotated.jpg"] = exif_rotated
    paths = []
    for name, write in out.items():
        write(folder / name)
        paths.append(folder / name)
    return paths


# ------------------------------------------------------------------------------- a stand-in Hugging Face hub
class _HubHandler(BaseHTTPRequestHandler):
    """Answers /api/models/{repo}/revision/{rev}, /api/models/{repo}/tree/{rev} and /{repo}/resolve/{rev}/{file}."""

    repos: dict[str, Path] = {}  # repo id → snapshot folder (set per server)
    requests: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _repo(self, parts: list[str]) -> tuple[str, Path] | None:
        repo_id = "/".join(parts[:2])
        return (repo_id, self.repos[repo_id]) if repo_id in self.repos else None

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, obj) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _route(self, head: bool) -> None:
        path = unquote(urlparse(self.path).path)
        self.requests.append(f"{self.command} {path}")
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) >= 5:
            found = self._repo(parts[2:4])
            if found is None:
                return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            repo_id, snap = found
            commit = snap.name
            files = sorted(p.name for p in snap.iterdir())
            if parts[4] == "revision":
                return self._json({"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                                   "siblings": [{"rfilename": f} for f in files]})
            if parts[4] == "tree":
                return self._json([{"type": "file", "path": f, "size": (snap / f).stat().st_size,
                                    "oid": hashlib.sha1((snap / f).read_bytes()).hexdigest()} for f in files])
        if len(parts) >= 5 and parts[2] == "resolve":
            found = self._repo(parts[:2])
            if found is not None and (found[1] / "/".join(parts[4:])).is_file():
                file = found[1] / "/".join(parts[4:])
                data = file.read_bytes()
                return self._send(200, data, {"X-Repo-Commit": found[1].name, "ETag": f'"{_sha256(file)}"',
                                              "Content-Length": len(data),
                                              "Content-Type": "application/octet-stream"}, head=head)
            return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
        return self._send(404)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)


@contextmanager
def serve_hub(repos: dict[str, Path]):
    """Serve ``repos`` (repo id → folder of files) on 127.0.0.1; yields (endpoint URL, request log)."""
    handler = type("Handler", (_HubHandler,), {"repos": dict(repos), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
