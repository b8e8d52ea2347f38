"""Checkpoints in the official PLONK format, and the registry of known models.

A checkpoint folder holds:

- ``config.json``: exactly the five constructor keys of the official network
  (``input_dim, dim, depth, expansion, cond_dim``), so the official package
  can load what globeflow trains;
- ``model.safetensors``: the network weights (for our training runs: the EMA);
- ``globeflow.json`` (ours, optional): family, schedule, encoder, modality,
  default sampler and training metadata. Folders without it are taken as
  ``rfm`` with the released sigmoid(−7, 3, 1) schedule, with a warning.

Pickled weights (``.bin``, ``.pt``, ``.ckpt``, ``.pth``) are refused unless the
caller passes ``allow_pickle=True`` (then read with ``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from globeflow.families import check_family
from globeflow.network import Denoiser, NetworkConfig
from globeflow.schedules import SigmoidSchedule, schedule_from_dict, schedule_to_dict

log = logging.getLogger(__name__)

METADATA_FILE = "globeflow.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".ckpt", ".pth")
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "models"
DEFAULT_MODELS = {"image": DEFAULT_MODEL_DIR / "im2gps3k-efficientnet-lite0",
                  "text": DEFAULT_MODEL_DIR / "text-minilm-l6"}


DEFAULT_SAMPLES = 512  # samples per input of a prediction when the model states no default_samples
DEFAULT_STEPS = 32  # sampler steps of a prediction when the model states no default_steps


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint needs besides its weights."""

    family: str = "rfm"
    schedule: dict = field(default_factory=lambda: schedule_to_dict(SigmoidSchedule()))
    encoder: str | None = None
    modality: str = "image"
    sampler: str | None = None
    model_id: str = "unnamed"
    training: dict = field(default_factory=dict)
    default_cfg: float = 0.0  # guidance weight when a call passes cfg=None (−1 = the unconditional prior)
    # the guidance acts while gamma < cfg_until (sampling.Field; 1 = on the whole path, PLONK's)
    cfg_until: float = 1.0
    # stated credible level ("0.9") → the HPD mass that covers the truth that often on held-out data
    # (split-conformal, fitted by the training script); empty: regions use the nominal mass
    credible_masses: dict = field(default_factory=dict)
    # how predictions pick the best guess among samples (prediction.best_guess_index): "density" =
    # highest density (PLONK); "geoscore" = highest expected GeoScore, chosen on held-out data
    best_guess: str = "density"
    best_guess_cfg: float | None = None  # guidance weight of the samples the best guess is picked from (None = default_cfg)
    # samples per input that predictions default to: the count the credible masses and the best-guess
    # rule were fitted with (written by globeflow.tuning); None = DEFAULT_SAMPLES
    default_samples: int | None = None
    # Euler steps of those samples and their log-densities (None = DEFAULT_STEPS), written with the
    # credible masses fitted at that count; and the samples and steps of a separate best-guess pass
    # (at best_guess_cfg; None = default_samples, DEFAULT_STEPS), written with the best-guess rule
    default_steps: int | None = None
    best_guess_samples: int | None = None
    best_guess_steps: int | None = None

    def to_dict(self) -> dict:
        return {"family": self.family, "schedule": self.schedule, "encoder": self.encoder,
                "modality": self.modality, "sampler": self.sampler, "model_id": self.model_id,
                "training": self.training, "default_cfg": self.default_cfg, "cfg_until": self.cfg_until,
                "credible_masses": self.credible_masses,
                "best_guess": self.best_guess, "best_guess_cfg": self.best_guess_cfg,
                "default_samples": self.default_samples, "default_steps": self.default_steps,
                "best_guess_samples": self.best_guess_samples, "best_guess_steps": self.best_guess_steps}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        known = {"family", "schedule", "encoder", "modality", "sampler", "model_id", "training", "default_cfg",
                 "cfg_until", "credible_masses",
                 "best_guess", "best_guess_cfg", "default_samples", "default_steps", "best_guess_samples",
                 "best_guess_steps"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{METADATA_FILE}: unknown keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**data)


def _hub_entry(family: str, encoder: str, sampler: str) -> dict:
    return {"family": family, "encoder": encoder, "sampler": sampler}


MANIFEST_FILE = "manifest.json"  # written by ``globeflow download --to DIR`` (see globeflow.hub)


KNOWN_MODELS: dict[str, dict] = {}
for _name, _enc in (("YFCC", "dinov2-vitl14-reg"), ("OSV_5M", "streetclip"), ("iNaturalist", "dinov2-vitl14-reg")):
    KNOWN_MODELS[f"nicolas-dufour/PLONK_{_name}"] = _hub_entry("rfm", _enc, "euler")
    KNOWN_MODELS[f"nicolas-dufour/PLONK_{_name}_flow"] = _hub_entry("fm", _enc, "euler")
    KNOWN_MODELS[f"nicolas-dufour/PLONK_{_name}_diffusion"] = _hub_entry("diffusion", _enc, "ddim")


def canonical_repo_id(repo_id: str) -> str:
    """Accept the README spelling ``PLONK_iNat*`` for ``PLONK_iNaturalist*``, and ``PLONK_*`` without its owner."""
    if repo_id.startswith("PLONK_") and "/" not in repo_id:
        repo_id = "nicolas-dufour/" + repo_id
    if "/PLONK_iNat" in repo_id and "/PLONK_iNaturalist" not in repo_id:
        return repo_id.replace("/PLONK_iNat", "/PLONK_iNaturalist")
    return repo_id


CHECKPOINT_FILES = ["config.json", "model.safetensors"]


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set, or the Hugging Face endpoint does not answer within 3 s."""
    from globeflow.encoders._network import reachable

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    return not reachable(url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80))


def download(repo_id: str, allow_patterns: list[str] | None = None) -> Path:
    """Fetch ``allow_patterns`` (default config.json + model.safetensors) of a Hub repo into the HF cache.

    Uses the cached snapshot without any network access when the hub cannot be reached; RuntimeError
    (one sentence) when neither works.
    """
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as err:
        raise RuntimeError(f"loading {repo_id!r} from the Hugging Face Hub needs `pip install globeflow[hub]`") from err
    patterns = allow_patterns or CHECKPOINT_FILES
    offline = hub_offline()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
    except Exception as err:  # offline, unknown repo, ...
        why = ("the Hugging Face hub cannot be reached and it is not in the Hugging Face cache "
               f"({constants.HF_HUB_CACHE})" if offline else f"{type(err).__name__}: {str(err).splitlines()[0][:160]}")
        raise RuntimeError(f"could not get {repo_id!r}: {why}; run `globeflow download {repo_id} --to DIR` where "
                           "there is network and pass --model DIR, or pass a local folder with config.json and "
                           "model.safetensors") from err


def local_encoder_dir(folder: str | os.PathLike, encoder_id: str | None) -> Path | None:
    """The copy of ``encoder_id`` that ``globeflow download --to DIR`` put beside a model folder, if any."""
    if not encoder_id:
        return None
    folder = Path(folder)
    for root in (folder, folder.parent):
        candidate = root / "encoders" / encoder_id
        if candidate.is_dir():
            return candidate
    return None


def _download_folder_model(path: Path) -> Path:
    """A ``globeflow download --to`` folder holding one model → that model's folder; else ValueError."""
    names = sorted(json.loads((path / MANIFEST_FILE).read_text()).get("models", {}))
    if len(names) == 1:
        return path / names[0]
    raise ValueError(f"{path} holds {len(names)} models ({', '.join(names) or 'none'}); pass one of its "
                     "subfolders as --model, e.g. " + str(path / (names[0] if names else "NAME")))


def _load_weights(folder: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    st = folder / "model.safetensors"
    if st.exists():
        return load_file(str(st))
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise FileNotFoundError(f"{folder}: no model.safetensors")
    if not allow_pickle:
        raise ValueError(f"{folder}: only pickled weights ({pickles[0].name}); pickles can run code, so they are "
                         "refused. Convert to model.safetensors, or pass allow_pickle=True if you trust the file")
    state = torch.load(pickles[0], map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def check_state_dict(net: Denoiser, state: dict[str, torch.Tensor]) -> None:
    """Strict name and shape check with errors that name the key."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint keys do not match the network: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(f"checkpoint key {key!r} has shape {tuple(state[key].shape)}; "
                             f"the config implies {tuple(value.shape)}")


def load_checkpoint(folder: str | os.PathLike, *, family: str | None = None,
                    allow_pickle: bool = False) -> tuple[Denoiser, ModelInfo]:
    """Load a folder (official format, optionally with globeflow.json) → (network, info)."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{folder}: no config.json (expected an official-format checkpoint folder)")
    config = NetworkConfig.from_dict(json.loads(cfg_path.read_text()))
    net = Denoiser.from_config(config)
    state = _load_weights(folder, allow_pickle)
    check_state_dict(net, state)
    net.load_state_dict(state, strict=True)
    meta_path = folder / METADATA_FILE
    if meta_path.exists():
        info = ModelInfo.from_dict(json.loads(meta_path.read_text()))
    else:
        if family is None:
            log.warning("%s has no %s: assuming family 'rfm' with sigmoid(-7, 3, 1); pass family= to override",
                        folder, METADATA_FILE)
        info = ModelInfo(model_id=folder.name)
    if family is not None:
        info = ModelInfo(**{**info.to_dict(), "family": check_family(family)})
    schedule_from_dict(info.schedule)  # validate early
    return net.eval(), info


def save_checkpoint(folder: str | os.PathLike, net: Denoiser, info: ModelInfo,
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write config.json, model.safetensors (``state`` or the net's weights) and globeflow.json atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in (state or net.state_dict()).items()}
    _atomic_write(folder / "config.json", json.dumps(net.config.to_dict(), indent=2))
    tmp = folder / "model.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / "model.safetensors")
    _atomic_write(folder / METADATA_FILE, json.dumps(info.to_dict(), indent=2))
    return folder


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolve(path_or_repo_id: str | os.PathLike | None, modality: str = "image") -> tuple[Path, dict]:
    """Local folder for a path, a known Hub id, or None (the shipped default) → (folder, registry hints)."""
    if path_or_repo_id is None:
        folder = DEFAULT_MODELS[modality]
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"the shipped default {modality} model is missing at {folder}; "
                                    "reinstall globeflow or pass a checkpoint folder")
        return folder, {}
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and (path / MANIFEST_FILE).exists():
            return _download_folder_model(path), {}
        return path, {}
    repo_id = canonical_repo_id(str(path_or_repo_id))
    if repo_id in KNOWN_MODELS:
        return download(repo_id), {**KNOWN_MODELS[repo_id], "model_id": repo_id}
    if "/" in repo_id and not repo_id.startswith((".", "/")):
        return download(repo_id), {"model_id": repo_id}
    raise FileNotFoundError(f"{path_or_repo_id!r} is neither a folder nor a Hub id (known ids: "
                            f"{', '.join(sorted(KNOWN_MODELS))})")
