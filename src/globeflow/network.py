"""The conditional denoiser: PLONK's AdaLN-MLP, with the official parameter names.

Forward pass for a point ``y`` (B, 3), an embedding ``emb`` (B, C) and
``gamma`` (B,) (1 at data, 0 at noise):

1. time features ``[cos(1000·gamma·f), sin(1000·gamma·f)]`` (T = dim/4
   channels, f_k = 10000^(−2k/T)), standardised per row (unbiased std), then
   ``time_embedder.map_time`` (T → 4T = dim → dim);
2. ``c = cond_mapper(emb) + time`` (``cond_mapper`` is one Linear as in PLONK, or with
   ``cond_hidden`` > 0 an MLP C → H → … → dim with ``cond_layers`` SiLU hidden layers of width H:
   capacity for the embedding → place mapping that costs nothing per sampled point);
3. ``h = initial_mapper(y)`` (with ``fourier_features`` F > 0: ``initial_mapper([y, sin z, cos z])``,
   ``z = ω · (D y)`` for F fixed unit directions D and angular frequencies ω log-spaced from 1 to
   ``fourier_scale`` rad⁻¹: the resolution to fit sub-100 km location clusters, which a Linear on
   y cannot reach (spectral bias)); each block: ``(s, b, g) = ada_map(SiLU(c))``,
   ``h ← h + g · mlp((1 + s)·LN(h) + b)``;
4. ``(s, b) = final_adaln(SiLU(c))``; output ``final_linear((1 + s)·LN(h) + b)``.

The conditioning path (steps 1, 2 and every ``ada_map``) depends only on
(emb, gamma). :meth:`Denoiser.modulation` computes it once, as one tensor, so
that many points sharing one photo and one time pay for it once
(:meth:`Denoiser.apply`). :meth:`Denoiser.apply_bf16` is the same point path with
its block matmuls in bfloat16 (for sampling on hardware with native bf16; see
:mod:`globeflow.precision`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _layer_norm_jvp(h: Tensor, dh: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """LayerNorm without affine (eps 1e-5) of h (..., D) and its derivative along dh (..., T, D).

    The value is ``F.layer_norm``'s own kernel (so it equals the plain forward pass bit for bit).
    LayerNorm's Jacobian σ⁻¹(I − 11ᵀ/D − x̂x̂ᵀ/D) is symmetric, so its product with the tangents is
    the fused LayerNorm backward kernel applied to dh (one pass instead of eight elementwise ops).
    """
    d = h.shape[-1]
    x_hat, mu, rstd = torch.native_layer_norm(h, (d,), None, None, eps)
    shape = dh.shape
    stats = (*shape[:-1], 1)
    dx_hat = torch.ops.aten.native_layer_norm_backward(
        dh.contiguous(), h[..., None, :].expand(shape).contiguous(), (d,),
        mu[..., None, :].expand(stats).contiguous(), rstd[..., None, :].expand(stats).contiguous(),
        None, None, [True, False, False])[0]
    return x_hat, dx_hat


def _gelu_jvp(a: Tensor, da: Tensor) -> Tensor:
    """GELU'(a)·da for a (..., F) and tangents da (..., T, F); GELU's derivative is elementwise.

    float32: GELU's fused backward kernel over the broadcast ``a`` (one pass). bfloat16: that kernel
    is ~1.7× slower on a broadcast operand on CPUs, so the slope GELU'(a) is computed once per point
    and multiplied into the T tangents (apply_jvp 1.22× faster in bf16 on the text model's shape).
    """
    if a.dtype == torch.bfloat16:
        return da * torch.ops.aten.gelu_backward(torch.ones_like(a), a)[..., None, :]
    return torch.ops.aten.gelu_backward(da, a[..., None, :].expand(da.shape))


@dataclass(frozen=True)
class NetworkConfig:
    """Constructor arguments, stored verbatim as the official ``config.json``.

    ``cond_hidden`` / ``cond_layers`` (globeflow's extension, 0 = PLONK's single-Linear
    ``cond_mapper``) are written only when set, so official configs round-trip unchanged.
    """

    input_dim: int = 3
    dim: int = 512
    depth: int = 12
    expansion: int = 4
    cond_dim: int = 1024
    cond_hidden: int = 0
    cond_layers: int = 0
    fourier_features: int = 0
    fourier_scale: int = 0

    OPTIONAL = ("cond_hidden", "cond_layers", "fourier_features", "fourier_scale")

    def __post_init__(self) -> None:
        if self.dim % 8 != 0:
            raise ValueError(f"dim must be divisible by 8 (time features use dim/4 cos/sin pairs); got {self.dim}")
        for name in ("input_dim", "dim", "depth", "expansion", "cond_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        if self.cond_hidden < 0 or self.cond_layers < 0 or (self.cond_hidden > 0) != (self.cond_layers > 0):
            raise ValueError("cond_hidden and cond_layers must both be 0 (one Linear) or both positive; got "
                             f"{self.cond_hidden}, {self.cond_layers}")
        if self.fourier_features < 0 or (self.fourier_features > 0) != (self.fourier_scale >= 1):
            raise ValueError("fourier_features must be 0 (PLONK's Linear on y) or positive with fourier_scale ≥ 1 "
                             f"(rad⁻¹); got {self.fourier_features}, {self.fourier_scale}")

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        """Strict: an unknown or missing key raises an error naming it (the optional keys default to 0)."""
        expected = set(cls.__dataclass_fields__)
        unknown, missing = set(data) - expected, expected - set(data) - set(cls.OPTIONAL)
        if unknown or missing:
            raise ValueError(f"config.json: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                             f"expected {sorted(expected - set(cls.OPTIONAL))} and optionally {list(cls.OPTIONAL)}")
        return cls(**{k: int(v) for k, v in data.items()})

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v or k not in self.OPTIONAL}


def cond_mapper(cond_dim: int, dim: int, hidden: int = 0, layers: int = 0) -> nn.Module:
    """Embedding (…, cond_dim) → (…, dim): one Linear (hidden = 0, PLONK's), else an MLP with
    ``layers`` SiLU hidden layers of width ``hidden``."""
    if hidden == 0:
        return nn.Linear(cond_dim, dim)
    widths = [cond_dim] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        mods += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*mods, nn.Linear(hidden, dim))


class FourierFeatures(nn.Module):
    """y (..., 3) → [y, sin z, cos z] (..., 3 + 2F), z = ω ⊙ (y Dᵀ).

    D (F, 3): fixed random unit directions; ω (F,): angular frequencies in rad⁻¹, log-spaced from 1
    to ``scale`` and shuffled over the directions. Both are persistent buffers, so a checkpoint carries
    the exact features it was trained with (the seed only matters at initialisation).
    """

    def __init__(self, count: int, scale: float, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        directions = torch.randn(count, 3, generator=gen)
        freqs = torch.logspace(0.0, float(torch.tensor(float(scale)).log10()), count)
        self.register_buffer("directions", directions / directions.norm(dim=-1, keepdim=True))
        self.register_buffer("freqs", freqs[torch.randperm(count, generator=gen)])

    def phase(self, y: Tensor) -> Tensor:
        """z = ω ⊙ (y Dᵀ): (..., 3) → (..., F); linear in y, so also its derivative along y."""
        return (y @ self.directions.T) * self.freqs

    def forward(self, y: Tensor) -> Tensor:
        z = self.phase(y)
        return torch.cat([y, z.sin(), z.cos()], dim=-1)

    def jvp(self, y: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
        """Features (..., 3+2F) and their derivatives along tangents (..., T, 3) → (..., T, 3+2F)."""
        z, dz = self.phase(y), self.phase(tangents)
        sin, cos = z.sin(), z.cos()
        feats = torch.cat([y, sin, cos], dim=-1)
        return feats, torch.cat([tangents, cos[..., None, :] * dz, -sin[..., None, :] * dz], dim=-1)


class PositionalEmbedding(nn.Module):
    """cos/sin features of ``u`` with frequencies (1/10000)^(2k/T), cosines first."""

    def __init__(self, num_channels: int, max_positions: int = 10000) -> None:
        super().__init__()
        k = torch.arange(num_channels // 2, dtype=torch.float32)
        self.register_buffer("freqs", (1.0 / max_positions) ** (2 * k / num_channels))

    def forward(self, u: Tensor) -> Tensor:
        x = u[..., None] * self.freqs.to(u.dtype)
        return torch.cat([x.cos(), x.sin()], dim=-1)


class TimeEmbedder(nn.Module):
    def __init__(self, channels: int, dim: int, time_scaling: float = 1000.0) -> None:
        super().__init__()
        self.encode_time = PositionalEmbedding(channels)
        self.time_scaling = time_scaling
        self.map_time = nn.Sequential(nn.Linear(channels, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, gamma: Tensor) -> Tensor:
        feats = self.encode_time(gamma * self.time_scaling)
        feats = (feats - feats.mean(-1, keepdim=True)) / feats.std(-1, keepdim=True)
        return self.map_time(feats)


class AdaLNBlock(nn.Module):
    def __init__(self, dim: int, expansion: int) -> None:
        super().__init__()
        self.ada_map = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.mlp = nn.Sequential(nn.Linear(dim, expansion * dim), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(expansion * dim, dim))


class Denoiser(nn.Module):
    """PLONK's ``GeoAdaLNMLP``; the state dict matches the released checkpoints key for key."""

    def __init__(self, input_dim: int = 3, dim: int = 512, depth: int = 12, expansion: int = 4,
                 cond_dim: int = 1024, cond_hidden: int = 0, cond_layers: int = 0, fourier_features: int = 0,
                 fourier_scale: int = 0) -> None:
        super().__init__()
        self.config = NetworkConfig(input_dim, dim, depth, expansion, cond_dim, cond_hidden, cond_layers,
                                    fourier_features, fourier_scale)
        self.time_embedder = TimeEmbedder(dim // 4, dim)
        self.cond_mapper = cond_mapper(cond_dim, dim, cond_hidden, cond_layers)
        self.position_features = FourierFeatures(fourier_features, fourier_scale) if fourier_features else None
        self.initial_mapper = nn.Linear(input_dim + 2 * fourier_features, dim)
        self.blocks = nn.ModuleList([AdaLNBlock(dim, expansion) for _ in range(depth)])
        self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.final_linear = nn.Linear(dim, input_dim)
        for block in self.blocks:  # residual branches start as identity, as the official init
            nn.init.zeros_(block.mlp[3].weight)
            nn.init.zeros_(block.mlp[3].bias)

    @classmethod
    def from_config(cls, config: NetworkConfig) -> "Denoiser":
        return cls(**asdict(config))

    @property
    def dim(self) -> int:
        return self.config.dim

    def embed_position(self, y: Tensor) -> Tensor:
        """y (..., 3) → h (..., dim): ``initial_mapper`` on y or on its Fourier features."""
        return self.initial_mapper(y if self.position_features is None else self.position_features(y))

    def embed_position_jvp(self, y: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`embed_position` of y (..., 3) and its derivatives along tangents (..., T, 3)."""
        if self.position_features is None:
            return self.initial_mapper(y), tangents @ self.initial_mapper.weight.T
        feats, dfeats = self.position_features.jvp(y, tangents)
        return self.initial_mapper(feats), dfeats @ self.initial_mapper.weight.T

    def modulation(self, emb: Tensor, gamma: Tensor, cond: Tensor | None = None) -> Tensor:
        """Conditioning path: (B, C) embeddings, (B,) gamma → (B, (3·depth + 2)·dim).

        Layout: for each block (scale, shift, gate), then the final (scale, shift). ``cond``: the
        embeddings' ``cond_mapper`` output (B, dim) when already computed (it does not depend on gamma,
        so a sampler computes it once for all its steps); ``emb`` is then unused.
        """
        c = F.silu((self.cond_mapper(emb) if cond is None else cond) + self.time_embedder(gamma))
        parts = [block.ada_map[1](c) for block in self.blocks] + [self.final_adaln[1](c)]
        return torch.cat(parts, dim=-1)

    def split_modulation(self, mod: Tensor) -> tuple[Tensor, ...]:
        """(..., P) → per block (..., 3·dim) and the final (..., 2·dim), as views.

        One split rather than a slice per block: its backward is one concatenation, where each
        slice's backward would fill and add a zero tensor of the full width (B × P).
        """
        d = self.config.dim
        return mod.split([3 * d] * len(self.blocks) + [2 * d], dim=-1)

    def apply(self, y: Tensor, mod: Tensor) -> Tensor:
        """Point path: y (..., 3) with ``mod`` broadcastable to (..., (3·depth+2)·dim) → (..., 3)."""
        d = self.config.dim
        *per_block, final = self.split_modulation(mod)
        h = self.embed_position(y)
        for block, m in zip(self.blocks, per_block):
            s, b, g = m.chunk(3, dim=-1)
            h = h + g * block.mlp((1 + s) * F.layer_norm(h, (d,)) + b)
        s, b = final.chunk(2, dim=-1)
        return self.final_linear((1 + s) * F.layer_norm(h, (d,)) + b)

    def _block_weights(self, bf16: bool = False) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Every block's two MLP layers (w1, b1, w2, b2): the parameters, or with ``bf16`` their
        bfloat16 copies, cached until a weight changes.

        The cache key is each weight's storage address and in-place version counter, so training
        steps, ``load_state_dict`` and ``.to(device)`` all invalidate it.
        """
        layers = [(block.mlp[0].weight, block.mlp[0].bias, block.mlp[3].weight, block.mlp[3].bias)
                  for block in self.blocks]
        if not bf16:
            return layers
        params = [p for layer in layers for p in layer]
        key = tuple((p.data_ptr(), p._version, p.device) for p in params)
        cache = self.__dict__.get("_bf16_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                flat = [p.detach().to(torch.bfloat16) for p in params]
            cache = (key, [tuple(flat[i:i + 4]) for i in range(0, len(flat), 4)])
            self.__dict__["_bf16_cache"] = cache
        return cache[1]

    def apply_bf16(self, y: Tensor, mod: Tensor) -> Tensor:
        """:meth:`apply` with each block's two matmuls (and the GELU between them) in bfloat16.

        y (..., 3) float32, ``mod`` (..., P) float32 → (..., 3) float32. The residual stream h,
        the LayerNorms, the modulation and the input/output layers stay float32; the matmuls
        accumulate in float32 inside the kernels (oneDNN/AMX on CPUs, tensor cores on GPUs). The
        output differs from :meth:`apply` by ~3e-3 relative (8-bit mantissas), so this is for
        sampling, not for densities. No autograd through the bf16 copies (inference only).
        """
        d = self.config.dim
        *per_block, final = self.split_modulation(mod)
        h = self.embed_position(y)
        for (w1, b1, w2, b2), m in zip(self._block_weights(bf16=True), per_block):
            s, b, g = m.chunk(3, dim=-1)
            a = ((1 + s) * F.layer_norm(h, (d,)) + b).to(torch.bfloat16)
            h = h + g * F.linear(F.gelu(F.linear(a, w1, b1)), w2, b2)
        s, b = final.chunk(2, dim=-1)
        return self.final_linear((1 + s) * F.layer_norm(h, (d,)) + b)

    def apply_jvp(self, y: Tensor, tangents: Tensor, mod: Tensor, bf16: bool = False) -> tuple[Tensor, Tensor]:
        """Point path and its forward-mode derivatives (hand-written, no autograd).

        y (..., 3); tangents (..., T, 3) directions; ``mod`` broadcastable to (..., P).
        Returns the output (..., 3) and the directional derivatives J·tangents (..., T, 3).
        ``bf16``: the blocks' matmuls (values and tangents) in bfloat16 with float32 accumulation, as
        :meth:`apply_bf16`; residual streams, LayerNorms and the outer layers stay float32.
        """
        *per_block, final = self.split_modulation(mod)
        h, dh = self.embed_position_jvp(y, tangents)
        low = (lambda t: t.to(torch.bfloat16)) if bf16 else (lambda t: t)
        for (w1, b1, w2, b2), m in zip(self._block_weights(bf16), per_block):
            s, b, g = m.chunk(3, dim=-1)
            s_t, g_t = s[..., None, :], g[..., None, :]
            x_hat, dx_hat = _layer_norm_jvp(h, dh)
            a = F.linear(low((1 + s) * x_hat + b), w1, b1)
            da = low((1 + s_t) * dx_hat) @ w1.T
            h = h + g * F.linear(F.gelu(a), w2, b2)
            dh = dh + g_t * (_gelu_jvp(a, da) @ w2.T)
        s, b = final.chunk(2, dim=-1)
        s_t = s[..., None, :]
        x_hat, dx_hat = _layer_norm_jvp(h, dh)
        out = self.final_linear((1 + s) * x_hat + b)
        return out, ((1 + s_t) * dx_hat) @ self.final_linear.weight.T

    def forward(self, y: Tensor, emb: Tensor, gamma: Tensor) -> Tensor:
        """y (B, 3), emb (B, C), gamma (B,) → velocity / noise prediction (B, 3)."""
        return self.apply(y, self.modulation(emb, gamma))
