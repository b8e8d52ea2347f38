"""The public API: a trained conditional generative model of locations on the sphere.

Shapes and units at this boundary: embeddings (M, D); coordinates in degrees
(lat, lon); log-densities in nats per steradian on the unit sphere (uniform
= −log 4π ≈ −2.531) unless ``units="bits_per_dim_official"`` (= nats / (3 ln 2),
the official per-ambient-dimension "bits").
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from globeflow import density, sphere
from globeflow.checkpoints import ModelInfo, load_checkpoint, local_encoder_dir, resolve, save_checkpoint
from globeflow.families import draw_noise
from globeflow.network import Denoiser
from globeflow.sampling import DEFAULT_SAMPLER, SAMPLERS, Field, sample_diffusion, sample_fm, sample_rfm, time_grid
from globeflow.schedules import schedule_from_dict

UNITS = ("nats", "bits_per_dim_official")
MAX_POINTS_PER_CHUNK = 16384
# with return_log_prob each step carries two tangents per point ((points, 2, 4·dim) floats per block):
# 2,048 points per torch thread keep them near each core's L2 cache on CPUs (1.25–1.5× faster per
# point than 16,384 for the default dim-64 photo model, one thread, Xeon)
LOG_PROB_POINTS_PER_THREAD = 2048


def _as_tensor(x, dtype: torch.dtype) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    return t.to(dtype)


def row_generators(seed: int | Sequence[int] | None, rows: int) -> list[torch.Generator]:
    """One generator per embedding row: row i uses ``seed + i`` (int) or ``seed[i]`` (sequence)."""
    if seed is None:
        seeds = torch.randint(0, 2**62, (rows,)).tolist()
    elif isinstance(seed, (int, np.integer)):
        seeds = [int(seed) + i for i in range(rows)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != rows:
            raise ValueError(f"seed has {len(seeds)} entries for {rows} embeddings")
    return [torch.Generator().manual_seed(s) for s in seeds]


class Geolocator:
    """A denoiser + family + schedule (+ the encoder id its embeddings come from)."""

    def __init__(self, net: Denoiser, info: ModelInfo, device: str | torch.device = "cpu") -> None:
        self.net = net.to(device).eval()
        self.info = info
        self.family = info.family
        self.schedule = schedule_from_dict(info.schedule)
        self.device = torch.device(device)
        self._encoder = None
        self.encoder_source = None  # a local copy of a hub encoder (from `globeflow download`), if any

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike | None = None, *, family: str | None = None,
                        device: str | torch.device = "cpu", allow_pickle: bool = False,
                        modality: str = "image") -> "Geolocator":
        """A local folder, a Hub id (``nicolas-dufour/PLONK_*``) or None for the shipped default model."""
        folder, hints = resolve(path_or_repo_id, modality)
        net, info = load_checkpoint(folder, family=family or hints.get("family"), allow_pickle=allow_pickle)
        if hints:
            merged = {**info.to_dict(), **{k: v for k, v in hints.items() if k != "family"}}
            if family:
                merged["family"] = family
            info = ModelInfo.from_dict(merged)
        geo = cls(net, info, device)
        geo.encoder_source = local_encoder_dir(folder, info.encoder)
        return geo

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        save_checkpoint(folder, self.net, self.info)

    @property
    def encoder_id(self) -> str | None:
        return self.info.encoder

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def default_cfg(self) -> float:
        """The guidance weight used when a call passes ``cfg=None`` (from the checkpoint's metadata)."""
        return self.info.default_cfg

    @property
    def default_samples(self) -> int:
        """Samples per input of ``predict`` when a call passes ``num_samples=None``: the count the model's
        credible masses and best-guess rule were fitted with, else ``checkpoints.DEFAULT_SAMPLES``."""
        from globeflow.checkpoints import DEFAULT_SAMPLES

        return int(self.info.default_samples or DEFAULT_SAMPLES)

    @property
    def default_steps(self) -> int:
        """Sampler steps of ``predict``'s samples and log-densities when a call passes ``steps=None``: the
        count the model's credible masses were fitted with, else ``checkpoints.DEFAULT_STEPS``."""
        from globeflow.checkpoints import DEFAULT_STEPS

        return int(self.info.default_steps or DEFAULT_STEPS)

    def _cfg(self, cfg: float | None) -> float:
        return self.info.default_cfg if cfg is None else float(cfg)

    def with_settings(self, **changes) -> "Geolocator":
        """The same network (shared, not copied) with ``ModelInfo`` fields replaced, e.g.
        ``geo.with_settings(default_cfg=-0.5, cfg_until=0.7)``."""
        return Geolocator(self.net, dataclasses.replace(self.info, **changes), self.device)

    def field(self, emb: Tensor, cfg: float, precision: str = "fp32", net: Denoiser | None = None) -> Field:
        """The guided field of ``net`` (default: this model's) for embeddings (M, C) at weight ``cfg``,
        with the model's guidance interval (``info.cfg_until``)."""
        return Field(self.net if net is None else net, emb, cfg, precision, self.info.cfg_until)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def _embeddings(self, embeddings) -> Tensor:
        emb = _as_tensor(embeddings, self.dtype)
        if emb.dim() == 1:
            emb = emb[None]
        if emb.dim() != 2 or emb.shape[1] != self.net.config.cond_dim:
            raise ValueError(f"embeddings must have shape (M, {self.net.config.cond_dim}); got {tuple(emb.shape)}")
        return emb.to(self.device)

    # ----------------------------------------------------------------- sampling
    def sample(self, embeddings, num_samples: int = 1, *, steps: int = 32, cfg: float | None = None,
               sampler: str | None = None, noise=None, seed: int | Sequence[int] | None = None,
               return_xyz: bool = False, return_log_prob: bool = False, clamp: bool = True,
               precision: str = "fp32"):
        """Draw K = ``num_samples`` locations for each of M embeddings.

        Returns (M, K, 2) degrees, or (M, K, 3) model-space points with ``return_xyz``;
        with ``return_log_prob`` also (M, K) log-densities in nats per steradian: for
        ``rfm`` the exact density of the discrete sampler's output (sum of per-step
        log-determinants on S²); for R³ families the continuous model's density of
        the output direction (by :meth:`log_prob`, slower).
        noise: optional (M, K, 3) start points (unit vectors for rfm, N(0, I) for fm/diffusion).
        seed: row i uses ``seed + i`` (or ``seed[i]``), so results do not depend on batching.
        cfg: guidance weight w ≥ −1 (see :class:`globeflow.sampling.Field`); None = ``default_cfg``.
        precision: ``fp32`` (default: the official arithmetic), ``bf16`` or ``auto`` (bf16 where the
        hardware has it natively) for the network's block matmuls: same distribution, ~3× faster
        sampling on CPUs with AMX, single samples differ by up to a few km (:mod:`globeflow.precision`).
        With ``return_log_prob`` an ``rfm`` model's tangent derivatives use the same arithmetic (bf16:
        log-densities within ~0.005 nats of float32 on average); densities of given points
        (:meth:`log_prob`) always run in float32 or wider.
        """
        cfg = self._cfg(cfg)
        emb = self._embeddings(embeddings)
        M, K = emb.shape[0], int(num_samples)
        sampler = sampler or self.info.sampler or DEFAULT_SAMPLER[self.family]
        if sampler not in SAMPLERS[self.family]:
            raise ValueError(f"sampler {sampler!r} is not available for family {self.family!r}; "
                             f"choose one of {SAMPLERS[self.family]}")
        gens = row_generators(seed, M)
        if noise is None:
            noise = torch.stack([draw_noise(self.family, (K,), generator=g) for g in gens])
        noise = _as_tensor(noise, torch.float32)
        if noise.shape != (M, K, 3):
            raise ValueError(f"noise must have shape ({M}, {K}, 3); got {tuple(noise.shape)}")
        gammas = self.schedule(time_grid(steps))
        points = MAX_POINTS_PER_CHUNK
        if return_log_prob and self.device.type == "cpu":
            points = min(points, LOG_PROB_POINTS_PER_THREAD * torch.get_num_threads())
        chunk = max(1, points // max(K, 1))
        xs, lps = [], []
        for i in range(0, M, chunk):
            field = self.field(emb[i:i + chunk], cfg, precision)
            x0 = noise[i:i + chunk].to(self.device, self.dtype)
            with torch.no_grad():
                if self.family == "rfm":
                    out = sample_rfm(field, x0, gammas.to(self.dtype), sampler, track_log_prob=return_log_prob)
                elif self.family == "fm":
                    out = sample_fm(field, x0, gammas.to(self.dtype), sampler)
                else:
                    out = sample_diffusion(field, x0, gammas.to(self.dtype), sampler, clamp=clamp,
                                           generators=gens[i:i + chunk])
            xs.append(out.x)
            lps.append(out.log_prob)
        x = torch.cat(xs)
        result = x if return_xyz else sphere.xyz_to_latlon(x)
        if not return_log_prob:
            return result
        if self.family == "rfm":
            return result, torch.cat(lps)
        return result, self.log_prob(emb, sphere.xyz_to_latlon(x), cfg=cfg)

    # ---------------------------------------------------------------- densities
    def log_prob(self, embeddings, latlon_deg, *, cfg: float | None = None, divergence: str = "riemannian",
                 solver: str = "fast", units: str = "nats", dtype: torch.dtype | None = None,
                 steps: int = density.DEFAULT_FAST_STEPS, radial_nodes: int = 24, return_nfe: bool = False):
        """Log-density of locations given embeddings.

        embeddings (M, D) or (1, D) (broadcast); latlon_deg (M, 2) → (M,), or (M, K, 2) → (M, K).
        divergence: ``riemannian`` (the true density on S²) or ``ambient`` (the official pipeline's
        unnormalised value). R³ families (fm, diffusion) integrate the R³ density over the radius
        with ``radial_nodes`` Gauss–Legendre nodes around the shell of the model's samples. solver: ``fast`` (per point, RK4 with ``steps`` uniform
        steps in gamma) or ``official`` (dopri5 1e-6, all points jointly). dtype: e.g.
        torch.float64 to run the network in double precision. cfg: as in :meth:`sample`.
        """
        cfg = self._cfg(cfg)
        if divergence not in density.DIVERGENCES:
            raise ValueError(f"divergence must be one of {density.DIVERGENCES}; got {divergence!r}")
        if solver not in density.SOLVERS:
            raise ValueError(f"solver must be one of {density.SOLVERS}; got {solver!r}")
        if units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}; got {units!r}")
        net = self.net if dtype in (None, self.dtype) else copy.deepcopy(self.net).to(dtype)
        dt = next(net.parameters()).dtype
        emb = self._embeddings(embeddings).to(dt)
        ll = _as_tensor(latlon_deg, torch.float64)
        squeeze = ll.dim() == 2
        if squeeze:
            ll = ll[:, None, :]
        if ll.dim() != 3 or ll.shape[-1] != 2:
            raise ValueError(f"latlon_deg must have shape (M, 2) or (M, K, 2); got {tuple(latlon_deg.shape)}")
        M = max(emb.shape[0], ll.shape[0])
        if emb.shape[0] not in (1, M) or ll.shape[0] not in (1, M):
            raise ValueError(f"cannot broadcast {emb.shape[0]} embeddings against {ll.shape[0]} coordinate rows")
        K = ll.shape[1]
        # one embedding for every row: a single field over all points, its conditioning (and an R³
        # model's radial shell) computed once, not once per row
        ll = ll.reshape(1, -1, 2) if emb.shape[0] == 1 else ll.expand(M, -1, -1)
        x = sphere.latlon_to_xyz(ll).to(device=self.device, dtype=dt)
        with torch.no_grad():  # forward-mode Jacobians need no autograd graph (it would grow with steps)
            out, nfe = self._log_prob_xyz(net, emb, x, cfg, divergence, solver, steps, radial_nodes)
        out = out.reshape(M, K)
        if units == "bits_per_dim_official":
            out = out / (3 * math.log(2))
        out = out[:, 0] if squeeze else out
        return (out, nfe) if return_nfe else out

    @property
    def sharp_field(self) -> bool:
        """Whether the network has Fourier position features (a field sharpest near the data end, so
        ODE densities use :func:`density.gamma_grid`'s ``data_dense`` nodes)."""
        return self.net.position_features is not None

    def _log_prob_xyz(self, net: Denoiser, emb: Tensor, x: Tensor, cfg: float, divergence: str, solver: str,
                      steps: int, radial_nodes: int = 24) -> tuple[Tensor, int]:
        grid = density.gamma_grid(self.schedule, steps, x.dtype, data_dense=self.sharp_field)
        if self.family == "rfm" or divergence == "ambient":
            field = self.field(emb, cfg, net=net)
            if solver == "official":
                return density.sphere_log_prob_official(field, x, self.schedule, divergence)
            return self._chunked(net, emb, x, cfg, lambda f, xs, rows: density.sphere_log_prob_fast(
                f, xs, grid, divergence)), density.fast_evaluations(steps)
        if solver == "official":
            raise ValueError("solver='official' exists only for the official (ambient or rfm) likelihood; "
                             "R³ families use the fast radial solver")
        shell = self._radial_shell(emb, cfg)
        return self._chunked(net, emb, x, cfg, lambda f, xs, rows: density.direction_log_prob(
            f, self.family, xs, shell.rows(rows), grid, radial_nodes), max_points=max(1, 16384 // radial_nodes)), \
            density.fast_evaluations(steps) * radial_nodes

    def _chunked(self, net: Denoiser, emb: Tensor, x: Tensor, cfg: float, fn, max_points: int = 4096) -> Tensor:
        """fn(field, x chunk, row slice) over chunks of at most ``max_points`` points (M, K)."""
        K = x.shape[1]
        per = max(1, max_points // max(K, 1))
        outs = []
        for i in range(0, emb.shape[0], per):
            field, rows = self.field(emb[i:i + per], cfg, net=net), slice(i, i + per)
            cols = [fn(field, x[rows, j:j + max_points], rows) for j in range(0, K, max_points)]
            outs.append(torch.cat(cols, dim=1))
        return torch.cat(outs).detach()

    def ode_sampler(self) -> dict:
        """The :meth:`sample` arguments whose samples follow the density :meth:`log_prob` computes.

        fm/diffusion: ``heun`` without the official x̂₀ clamp, a second-order solve of the same
        probability-flow ODE (Euler leaves it: at 32 steps its fm samples land a mean ~250 km from
        the ODE's; the clamped DDIM leaves the diffusion ODE's distribution). rfm: none (its
        default sampler; its samples carry their exact density).
        """
        return {} if self.family == "rfm" else {"sampler": "heun", "clamp": False}

    def _radial_shell(self, emb: Tensor, cfg: float, n: int = 256) -> density.RadialShell:
        """Each row's shell from n samples (32 steps) of the density's own ODE (:meth:`ode_sampler`)."""
        xyz = self.sample(emb.to(self.dtype), n, steps=32, cfg=cfg, seed=0, return_xyz=True, **self.ode_sampler())
        return density.RadialShell.from_radii(xyz.norm(dim=-1))

    def log_prob_grid(self, embedding, resolution_deg: float = 1.0, *, cfg: float | None = None,
                      divergence: str = "riemannian", steps: int = density.DEFAULT_FAST_STEPS,
                      chunk: int = 4096, progress: bool = False) -> np.ndarray:
        """Log-density (nats/sr) on grid cell centres for one embedding: (180/res, 360/res), streamed."""
        from tqdm.auto import tqdm

        lats, lons = density.latlon_grid(resolution_deg)
        lat_g, lon_g = np.meshgrid(lats, lons, indexing="ij")
        pts = np.stack([lat_g.ravel(), lon_g.ravel()], axis=-1)
        out = np.empty(len(pts))
        emb = self._embeddings(embedding)[:1]
        for i in tqdm(range(0, len(pts), chunk), disable=not progress, desc="density grid", unit="chunk"):
            out[i:i + chunk] = self.log_prob(emb, pts[None, i:i + chunk], cfg=cfg, divergence=divergence,
                                             steps=steps)[0].cpu().numpy()
        return out.reshape(lat_g.shape)

    # ------------------------------------------------------------------ derived
    def localizability(self, embeddings, num_samples: int = 256, *, steps: int = 32, cfg: float | None = None,
                       seed: int | Sequence[int] | None = 0) -> Tensor:
        """Mean log-density of the model's own samples (M,), nats per steradian (= −entropy)."""
        _, lp = self.sample(embeddings, num_samples, steps=steps, cfg=cfg, seed=seed, return_log_prob=True)
        return lp.mean(dim=1)

    def localizability_official(self, embeddings, num_samples: int = 1024, *, steps: int = 250,
                                seed: int | Sequence[int] | None = 0, solver: str = "fast") -> Tensor:
        """The official recipe: cfg 0, ``steps`` Euler steps, ambient density, mean / (4π ln 2)."""
        latlon = self.sample(embeddings, num_samples, steps=steps, cfg=0.0, seed=seed)
        lp = self.log_prob(embeddings, latlon, divergence="ambient", solver=solver)
        return lp.mean(dim=1) / (4 * math.pi * math.log(2))

    def point_estimate(self, embeddings, num_samples: int = 32, *, steps: int = 32, cfg: float | None = None,
                       seed: int | Sequence[int] | None = 0, rule: str | None = None,
                       precision: str = "fp32") -> Tensor:
        """Best of N samples for each embedding, (M, 2) degrees, picked by ``rule`` (None = the model's
        ``best_guess``; see :func:`globeflow.prediction.best_guess_index`) among samples drawn at
        guidance ``cfg`` (None = the model's ``best_guess_cfg``, or ``default_cfg`` when it has none).
        precision: as in :meth:`sample`."""
        from globeflow.prediction import best_guesses

        rule = rule or self.info.best_guess
        w = cfg if cfg is not None else self.info.best_guess_cfg
        if rule == "density":
            latlon, lp = self.sample(embeddings, num_samples, steps=steps, cfg=w, seed=seed, return_log_prob=True,
                                     precision=precision)
        else:  # the geoscore rule needs no densities: plain sampling is several times cheaper
            latlon = self.sample(embeddings, num_samples, steps=steps, cfg=w, seed=seed, precision=precision)
            lp = torch.zeros(latlon.shape[:2])
        return torch.from_numpy(best_guesses(latlon.double().cpu().numpy(), lp.double().cpu().numpy(), rule)).to(latlon)

    def sample_budget(self, num_samples: int | None = None, steps: int | None = None) -> tuple[int, int]:
        """(samples, steps) of ``predict``'s samples with log-densities: the given ones, else
        :attr:`default_samples` and :attr:`default_steps`."""
        return (int(num_samples) if num_samples is not None else self.default_samples,
                int(steps) if steps is not None else self.default_steps)

    def best_guess_budget(self, num_samples: int | None = None, steps: int | None = None) -> tuple[int, int]:
        """(samples, steps) of a separate best-guess pass: the given ones, else the model's
        ``best_guess_samples`` and ``best_guess_steps`` (None: :attr:`default_samples`, 32)."""
        from globeflow.checkpoints import DEFAULT_STEPS

        k = num_samples if num_samples is not None else (self.info.best_guess_samples or self.default_samples)
        return int(k), int(steps if steps is not None else (self.info.best_guess_steps or DEFAULT_STEPS))

    def separate_best_guess(self, cfg: float | None, num_samples: int | None = None) -> bool:
        """Whether predictions draw their best guess apart from their samples: at the model's own
        ``best_guess_cfg``, or (at the same weight, the same distribution) from its larger
        ``best_guess_samples`` when no sample count is given."""
        if cfg is not None:
            return False
        w, k = self.info.best_guess_cfg, self.info.best_guess_samples
        return (w is not None and float(w) != self.default_cfg) or (
            num_samples is None and k is not None and int(k) > self.default_samples)

    # ------------------------------------------------------------ end to end
    @property
    def encoder(self):
        """The frozen encoder this model's embeddings come from (built on first use)."""
        if self._encoder is None:
            if not self.info.encoder:
                raise ValueError(f"model {self.model_id} records no encoder id; pass embeddings instead")
            from globeflow.encoders import get_encoder

            self._encoder = get_encoder(self.info.encoder, device=str(self.device), source=self.encoder_source)
        return self._encoder

    def embed(self, inputs: Sequence, precision: str = "fp32") -> np.ndarray:
        """Paths or PIL images (image models) or strings (text models) → (N, D) float32 embeddings.

        precision: as in :meth:`globeflow.encoders.base.Encoder.embed` (``fp32`` by default).
        """
        if self.info.modality == "text":
            return self.encoder.embed([str(t) for t in inputs], precision=precision)
        from PIL import Image

        from globeflow.data.images import load_image, to_rgb

        images = [to_rgb(x) if isinstance(x, Image.Image) else load_image(x) for x in inputs]
        return self.encoder.embed(images, precision=precision)

    def predict(self, inputs=None, *, texts: Sequence[str] | None = None, num_samples: int | None = None,
                cfg: float | None = None, steps: int | None = None, seed: int | Sequence[int] | None = 0,
                top_k: int = 5, ids: Sequence[str] | None = None, truths=None, precision: str = "auto") -> list:
        """Where was each input taken? One :class:`globeflow.prediction.Prediction` per input.

        Exactly one of ``inputs`` (paths, PIL images, or precomputed embeddings (N, D); one or many)
        or ``texts`` (strings, for text models). ``truths``: optional (N, 2) degrees carried into
        the results. Samples, modes, 50/90 % credible regions, country probabilities and localizability
        come from ``num_samples`` samples (None = :attr:`default_samples`) of ``steps`` Euler steps (None =
        :attr:`default_steps`) at ``cfg`` (None = ``default_cfg``); the best guess is picked by the
        model's ``best_guess`` rule from them, or, when ``cfg`` is None and the model has its own
        ``best_guess_cfg``, from further samples at that weight: ``num_samples`` of ``steps`` steps when
        given, else the model's ``best_guess_samples`` of ``best_guess_steps`` (None: :attr:`default_samples`
        of 32 steps).
        precision: as in :meth:`sample`; ``auto`` (default here) runs the network's block matmuls, and
        the samples' log-densities, in bfloat16 where the hardware has it natively (Intel AMX, AMD
        Zen 4): the same calibrated regions and GeoScore (``docs/performance.md``), ~2× faster; the
        encoder too when it is ``bf16_checked`` (the two shipped offline encoders).
        """
        from globeflow.prediction import summarize

        if (inputs is None) == (texts is None):
            raise ValueError("pass exactly one of inputs= (photos or embeddings) or texts=")
        wanted = "text" if texts is not None else "image"
        items = [texts] if isinstance(texts, str) else texts
        if inputs is not None:
            items = inputs if isinstance(inputs, (list, tuple, np.ndarray, Tensor)) else [inputs]
        is_embedding = isinstance(items, (np.ndarray, Tensor)) and np.asarray(items).dtype.kind == "f"
        if not is_embedding and wanted != self.info.modality:
            raise ValueError(f"model {self.model_id} geolocates {self.info.modality} inputs, not {wanted}; "
                             f"load a {wanted} model (e.g. Geolocator.from_pretrained(modality='{wanted}'))")
        emb = (np.atleast_2d(np.asarray(items, dtype=np.float32)) if is_embedding
               else self.embed(list(items), precision=precision))
        k, s = self.sample_budget(num_samples, steps)
        samples, log_prob = self.sample(emb, k, steps=s, cfg=cfg, seed=seed, return_log_prob=True, precision=precision)
        points = [None] * len(emb)
        if self.separate_best_guess(cfg, num_samples):
            k_best, s_best = self.best_guess_budget(num_samples, steps)
            points = self.point_estimate(emb, k_best, steps=s_best, seed=seed, precision=precision).double().cpu().numpy()
        names = list(ids) if ids is not None else [
            None if is_embedding else (str(x) if isinstance(x, (str, os.PathLike)) else None) for x in
            (items if not is_embedding else range(len(emb)))]
        truths = [None] * len(emb) if truths is None else list(np.asarray(truths, dtype=np.float64))
        return [summarize(samples[i].cpu().numpy(), log_prob[i].cpu().numpy(), model=self.model_id,
                          encoder=self.encoder_id or "", top_k=top_k, input_id=names[i], truth_deg=truths[i],
                          credible_masses=self.info.credible_masses, best_guess=self.info.best_guess,
                          best_guess_point=points[i])
                for i in range(len(emb))]
