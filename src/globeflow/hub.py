"""The released PLONK models and their encoders: what is known, what is available offline, and
copying them into one self-contained folder for machines without network.

``download(models, to=DIR)`` writes::

    DIR/manifest.json                      what is here: models, encoders, files (bytes, sha256), licences
    DIR/<model>/{config.json, model.safetensors, globeflow.json}
    DIR/encoders/dinov2-vitl14-reg/{facebookresearch_dinov2_main/…, checkpoints/dinov2_vitl14_reg4_pretrain.pth}
    DIR/encoders/streetclip/{config.json, preprocessor_config.json, model.safetensors}

``globeflow predict --model DIR/<model>`` (or ``--model DIR`` when it holds one model) then needs
nothing else. Files come through the real download code: huggingface_hub's ``snapshot_download``
(it honours ``HF_ENDPOINT``/``HF_HOME``) and ``torch.hub`` (``TORCH_HOME``); both caches are reused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from globeflow.checkpoints import (CHECKPOINT_FILES, KNOWN_MODELS, MANIFEST_FILE, METADATA_FILE, ModelInfo,
                                   canonical_repo_id, download as hub_download)

# encoder id → where it comes from, its approximate download size and what its source states as licence
ENCODER_SOURCES: dict[str, dict] = {
    "dinov2-vitl14-reg": {"source": "torch.hub facebookresearch/dinov2 (dinov2_vitl14_reg)", "bytes": 1_218_000_000,
                          "licence": "Apache-2.0 (code and weights, github.com/facebookresearch/dinov2)"},
    "streetclip": {"source": "Hugging Face geolocal/StreetCLIP", "bytes": 1_710_000_000,
                   "licence": "see the model card of geolocal/StreetCLIP (recorded from its README when present)"},
}
STREETCLIP_FILES = ["config.json", "preprocessor_config.json", "model.safetensors", "README.md"]
STREETCLIP_PICKLE = "pytorch_model.bin"
# which photos each released family was trained on (the paper's datasets)
TRAINED_ON = {"YFCC": "YFCC100M/MP-16 Flickr photos (any subject, anywhere)",
              "OSV_5M": "OpenStreetView-5M street-level photos (roads, buildings, dashcams)",
              "iNaturalist": "iNaturalist photos of plants and animals"}


class DownloadError(RuntimeError):
    """A model or encoder could not be fetched (one sentence)."""


@dataclass(frozen=True)
class KnownModel:
    """One row of ``globeflow models``."""

    model_id: str
    family: str
    encoder: str
    size: str
    offline: str
    trained_on: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _licence_of_card(readme: Path) -> str | None:
    """The ``license:`` field of a Hugging Face model card's YAML header, if any."""
    if not readme.is_file():
        return None
    match = re.search(r"^---\s*\n(.*?)\n---", readme.read_text(errors="replace"), re.S)
    found = re.search(r"^licen[cs]e:\s*(\S+)", match.group(1), re.M) if match else None
    return found.group(1) if found else None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# ------------------------------------------------------------------------------------------ model fetching
def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)  # follows the hub cache's symlinks
    os.replace(tmp, dst)


def _fetch_model(repo_id: str, to: Path) -> tuple[str, dict]:
    snapshot = _hub(repo_id, CHECKPOINT_FILES + ["README.md"])
    name = repo_id.split("/")[-1]
    folder = to / name
    for file in CHECKPOINT_FILES:
        if not (snapshot / file).is_file():
            raise DownloadError(f"{repo_id} has no {file}; it is not an official-format PLONK checkpoint")
        _copy(snapshot / file, folder / file)
    hints = KNOWN_MODELS.get(repo_id, {})
    info = ModelInfo(family=hints.get("family", "rfm"), encoder=hints.get("encoder"),
                     sampler=hints.get("sampler"), model_id=repo_id)
    (folder / METADATA_FILE).write_text(json.dumps(info.to_dict(), indent=2))
    return name, {"repo_id": repo_id, "revision": snapshot.name, "folder": name, **hints,
                  "licence": _licence_of_card(snapshot / "README.md") or "not stated in the repository's model card"}


def _hub(repo_id: str, patterns: list[str]) -> Path:
    try:
        return hub_download(repo_id, allow_patterns=patterns)
    except RuntimeError as err:
        raise DownloadError(str(err)) from err


def _cached_dinov2() -> tuple[Path, Path]:
    """(hub code, weights) of DINOv2 ViT-L/14-reg in torch.hub's cache, fetched by torch.hub when missing."""
    from globeflow.encoders import dinov2

    found = dinov2.local_copy("dinov2_vitl14_reg")
    if found is None:  # the real torch.hub path: code from GitHub, weights from dl.fbaipublicfiles.com
        try:
            dinov2.load_hub_model("dinov2_vitl14_reg")
        except Exception as err:  # EncoderUnavailable and whatever torch.hub raises
            raise DownloadError(str(err)) from err
        found = dinov2.local_copy("dinov2_vitl14_reg")
        if found is None:
            raise DownloadError("torch.hub loaded dinov2_vitl14_reg but left no copy in its cache "
                                f"({dinov2.torch.hub.get_dir()}); is TORCH_HOME writable?")
    return found


def _fetch_dinov2(to: Path) -> dict:
    from globeflow.encoders import dinov2

    code, weights = _cached_dinov2()
    target = to / "encoders" / "dinov2-vitl14-reg"
    if (target / dinov2.HUB_CODE_DIR).exists():
        shutil.rmtree(target / dinov2.HUB_CODE_DIR)
    shutil.copytree(code, target / dinov2.HUB_CODE_DIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _copy(weights, target / "checkpoints" / weights.name)
    licence = (code / "LICENSE").read_text(errors="replace").strip().splitlines()[0] if (code / "LICENSE").exists() else None
    return {**ENCODER_SOURCES["dinov2-vitl14-reg"], "folder": "encoders/dinov2-vitl14-reg",
            "licence": f"{licence} (its LICENSE file)" if licence else ENCODER_SOURCES["dinov2-vitl14-reg"]["licence"]}


def _fetch_streetclip(to: Path) -> dict:
    snapshot = _hub("geolocal/StreetCLIP", STREETCLIP_FILES)
    target = to / "encoders" / "streetclip"
    note = None
    if not (snapshot / "model.safetensors").is_file():  # older repos ship only the pickle: convert it once, safely
        snapshot = _hub("geolocal/StreetCLIP", STREETCLIP_FILES + [STREETCLIP_PICKLE])
        import torch
        from safetensors.torch import save_file

        state = torch.load(snapshot / STREETCLIP_PICKLE, map_location="cpu", weights_only=True)
        target.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(target / "model.safetensors"),
                  metadata={"format": "pt"})
        note = f"model.safetensors converted from {STREETCLIP_PICKLE} (read with torch.load(weights_only=True))"
    for file in STREETCLIP_FILES:
        if (snapshot / file).is_file() and not (file == "model.safetensors" and note):
            _copy(snapshot / file, target / file)
    for file in ("config.json", "preprocessor_config.json", "model.safetensors"):
        if not (target / file).is_file():
            raise DownloadError(f"geolocal/StreetCLIP has no {file}")
    licence = _licence_of_card(snapshot / "README.md")
    return {**ENCODER_SOURCES["streetclip"], "folder": "encoders/streetclip", "revision": snapshot.name,
            "licence": licence or "not stated in the repository's model card", **({"note": note} if note else {})}


ENCODER_FETCHERS = {"dinov2-vitl14-reg": _fetch_dinov2, "streetclip": _fetch_streetclip}


def download(models: list[str], to: str | os.PathLike | None = None, log=print) -> Path | None:
    """Fetch released models and their encoders into the caches, and with ``to`` copy them into one folder.

    Returns the folder (``to``) or None. DownloadError (one sentence) when something cannot be fetched.
    """
    repo_ids = [canonical_repo_id(m) for m in models]
    unknown = [m for m in repo_ids if m not in KNOWN_MODELS]
    if unknown:
        raise DownloadError(f"unknown model {unknown[0]!r}; known: {', '.join(sorted(KNOWN_MODELS))}")
    if to is None:  # fill the caches only (HF_HOME, TORCH_HOME)
        for repo_id in repo_ids:
            log(f"model {repo_id} ...")
            _hub(repo_id, CHECKPOINT_FILES)
            encoder = KNOWN_MODELS[repo_id]["encoder"]
            log(f"encoder {encoder} ...")
            if encoder == "streetclip":
                _hub("geolocal/StreetCLIP", STREETCLIP_FILES)
            else:
                _cached_dinov2()
        return None
    root = Path(to).expanduser()
    manifest = _read_manifest(root)
    for repo_id in repo_ids:
        log(f"model {repo_id} ...")
        name, entry = _fetch_model(repo_id, root)
        manifest["models"][name] = entry
        encoder = entry["encoder"]
        if encoder not in manifest["encoders"] or not (root / manifest["encoders"][encoder]["folder"]).is_dir():
            log(f"encoder {encoder} ...")
            manifest["encoders"][encoder] = ENCODER_FETCHERS[encoder](root)
    _write_manifest(root, manifest)
    return root


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST_FILE
    if path.exists():
        data = json.loads(path.read_text())
        return {"models": data.get("models", {}), "encoders": data.get("encoders", {})}
    return {"models": {}, "encoders": {}}


def _write_manifest(root: Path, manifest: dict) -> None:
    """Record every file under ``root`` with its size and sha256, and the licence of what it belongs to."""
    from globeflow import __version__

    owners = {**{m["folder"]: m["licence"] for m in manifest["models"].values()},
              **{e["folder"]: e["licence"] for e in manifest["encoders"].values()}}
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        rel = path.relative_to(root).as_posix()
        owner = next((k for k in owners if rel.startswith(k + "/")), None)
        files.append({"path": rel, "bytes": path.stat().st_size, "sha256": _sha256(path),
                      "licence": owners.get(owner, "") if owner else ""})
    data = {"format": "globeflow-download/1", "globeflow": __version__,
            "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **manifest, "total_bytes": sum(f["bytes"] for f in files), "files": files}
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, root / MANIFEST_FILE)


def verify(root: str | os.PathLike) -> list[str]:
    """Files of a download folder whose size or sha256 differs from its manifest (empty: all good)."""
    root = Path(root)
    bad = []
    for f in json.loads((root / MANIFEST_FILE).read_text())["files"]:
        path = root / f["path"]
        if not path.is_file() or path.stat().st_size != f["bytes"] or _sha256(path) != f["sha256"]:
            bad.append(f["path"])
    return bad


# ------------------------------------------------------------------------------------------ model listing
def _cached_checkpoint(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "model.safetensors")
    return Path(found) if isinstance(found, str) else None


def encoder_offline(encoder_id: str) -> bool:
    """Whether a hub encoder's files are in the local caches (no network needed to build it)."""
    if encoder_id == "dinov2-vitl14-reg":
        from globeflow.encoders.dinov2 import local_copy

        return local_copy("dinov2_vitl14_reg") is not None
    if encoder_id == "streetclip":
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        return all(isinstance(try_to_load_from_cache("geolocal/StreetCLIP", f), str)
                   for f in ("config.json", "preprocessor_config.json", "model.safetensors"))
    return True


def known_models(folder: str | os.PathLike | None = None) -> list[KnownModel]:
    """The shipped default models and the released PLONK models, with local availability.

    folder: also report models present in a ``globeflow download`` folder.
    """
    from globeflow.checkpoints import DEFAULT_MODELS

    rows = []
    for modality, path in DEFAULT_MODELS.items():
        meta = json.loads((path / METADATA_FILE).read_text()) if (path / METADATA_FILE).exists() else {}
        size = sum(p.stat().st_size for p in path.glob("*") if p.is_file()) if path.exists() else None
        rows.append(KnownModel(f"(default {modality}) {path.name}", meta.get("family", "rfm"),
                               meta.get("encoder") or "?", human_bytes(size),
                               "yes (shipped)" if path.exists() else "no", "see docs/default_model.md"))
    local = _read_manifest(Path(folder)) if folder is not None else {"models": {}, "encoders": {}}
    local_ids = {m["repo_id"]: name for name, m in local["models"].items()}
    encoders_ok = {e: encoder_offline(e) for e in ENCODER_SOURCES}
    for repo_id, hints in sorted(KNOWN_MODELS.items()):
        enc = hints["encoder"]
        ckpt = _cached_checkpoint(repo_id)
        enc_size = ENCODER_SOURCES[enc]["bytes"]
        size = f"{human_bytes(ckpt.stat().st_size) if ckpt else '?'} + encoder ≈{human_bytes(enc_size)}"
        if repo_id in local_ids:
            offline = f"yes ({Path(folder) / local_ids[repo_id]})"
        elif ckpt and encoders_ok[enc]:
            offline = "yes (caches)"
        elif ckpt:
            offline = "model only (encoder not cached)"
        else:
            offline = "no"
        dataset = next((v for k, v in TRAINED_ON.items() if f"PLONK_{k}" in repo_id), "?")
        rows.append(KnownModel(repo_id, hints["family"], enc, size, offline, dataset))
    return rows
