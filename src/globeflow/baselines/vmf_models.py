"""Embedding-conditioned von Mises–Fisher densities trained by NLL (torch).

- ``vmf``: one vMF whose mean direction μ(e) and concentration κ(e) are predicted by a
  small MLP (``conditional=False`` learns one unconditional μ, κ instead).
- ``vmf_mixture``: C components with learned, embedding-independent means and
  concentrations (means initialised by spherical k-means of the training locations)
  and embedding-conditioned weights softmax(MLP(e)).
Both are trained with Adam and early stopping on a group-aware validation split.
Point estimates: μ(e) for ``vmf``; for the mixture, the component mean with the
highest mixture density.

``vmf_mixture`` with extra unconditional rows (``fit(..., prior=latlon)``): the prior part, an
unconditional mixture (means, concentrations, weights), is fitted on photos and prior rows
together; then only the embedding's correction of the log-weights (an MLP starting at zero) is
trained on the photos.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from globeflow.baselines import vmf
from globeflow.baselines.base import (Standardizer, check_inputs, check_prior, collapse_repeats, group_split,
                                      seed_everything, single_thread, to_latlon, to_xyz, train_by_nll)
from globeflow.sphere import normalize

KAPPA_MIN, KAPPA_MAX = 1e-3, 1e5


def _kappa(raw: torch.Tensor) -> torch.Tensor:
    return (nn.functional.softplus(raw) + KAPPA_MIN).clamp_max(KAPPA_MAX)


def _mlp(dim: int, hidden: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, out))


class _VMFNet(nn.Module):
    def __init__(self, dim: int, hidden: int, conditional: bool, init_mu: torch.Tensor):
        super().__init__()
        self.conditional = conditional
        self.net = _mlp(dim, hidden, 4)
        with torch.no_grad():  # start at the mean training direction with a broad κ
            self.net[-1].weight.mul_(0.01)
            self.net[-1].bias.copy_(torch.cat([init_mu.float() * 3, torch.tensor([1.0])]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x if self.conditional else torch.zeros_like(x))
        return normalize(out[..., :3]), _kappa(out[..., 3])


class _MixtureNet(nn.Module):
    """log-weights softmax(MLP(x) + log_prior), means and concentrations shared by all rows."""

    def __init__(self, dim: int, hidden: int, means: torch.Tensor, kappa0: float,
                 log_prior: torch.Tensor | None = None):
        super().__init__()
        self.weights = _mlp(dim, hidden, len(means))
        self.means = nn.Parameter(means.float().clone())
        inv_softplus = float(np.log(np.expm1(kappa0)))
        self.raw_kappa = nn.Parameter(torch.full((len(means),), inv_softplus))
        self.register_buffer("log_prior", torch.zeros(len(means)) if log_prior is None else log_prior.float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_w = torch.log_softmax(self.weights(x) + self.log_prior, -1)
        mu = normalize(self.means).expand(len(x), -1, -1)
        return log_w, mu, _kappa(self.raw_kappa).expand(len(x), -1)


class _PriorMixture(nn.Module):
    """An unconditional vMF mixture (the prior part); its input only sets the batch size."""

    def __init__(self, means: torch.Tensor, kappa0: float):
        super().__init__()
        self.means = nn.Parameter(means.float().clone())
        self.raw_kappa = nn.Parameter(torch.full((len(means),), float(np.log(np.expm1(kappa0)))))
        self.logits = nn.Parameter(torch.zeros(len(means)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = len(x)
        return (torch.log_softmax(self.logits, -1).expand(n, -1), normalize(self.means).expand(n, -1, -1),
                _kappa(self.raw_kappa).expand(n, -1))


def spherical_kmeans(xyz: torch.Tensor, num: int, iters: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 3) unit vectors → (num, 3) cluster mean directions (cosine k-means)."""
    num = min(num, len(xyz))
    centres = xyz[torch.randperm(len(xyz), generator=generator)[:num]].clone()
    for _ in range(iters):
        assign = (xyz @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, xyz)
        keep = sums.norm(dim=-1, keepdim=True) > 1e-9
        centres = torch.where(keep, normalize(sums), centres)
    return centres


class VMFBaseline:
    """One vMF per item, μ and κ from the embedding."""

    id = "vmf"

    def __init__(self, hidden: int = 128, conditional: bool = True, epochs: int = 300):
        self.hidden, self.conditional, self.epochs = hidden, conditional, epochs

    def fit(self, emb, latlon_deg, groups=None, *, seed: int = 0) -> "VMFBaseline":
        e, c = check_inputs(emb, latlon_deg)
        gen = seed_everything(seed)
        self.scaler = Standardizer(e)
        y = to_xyz(c).float()
        self.model = _VMFNet(e.shape[1], self.hidden, self.conditional, normalize(y.mean(0)))
        tr, va = group_split(len(e), groups, seed=seed)
        nll = lambda m, x, t: -vmf.log_prob(t, *m(x))  # noqa: E731
        self.val_nll = train_by_nll(self.model, nll, self.scaler(e), y, tr, va, epochs=self.epochs,
                                    lr=3e-3, generator=gen)
        return self

    def params(self, emb) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, 3) float64 mean directions and (M,) concentrations."""
        e, _ = check_inputs(emb)
        runs, run_of = collapse_repeats(e)
        with torch.no_grad(), single_thread():
            mu, kappa = self.model(self.scaler(runs))
        idx = torch.as_tensor(run_of)
        return normalize(mu.double())[idx], kappa.double()[idx]

    def log_prob(self, emb, latlon_deg) -> np.ndarray:
        e, c = check_inputs(emb, latlon_deg)
        mu, kappa = self.params(e)
        with single_thread():
            return vmf.log_prob(to_xyz(c), mu, kappa).numpy()

    def sample(self, emb, num_samples: int, *, seed: int | None = None) -> np.ndarray:
        mu, kappa = self.params(emb)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        mu_k = mu[:, None, :].expand(-1, num_samples, -1)
        return to_latlon(vmf.sample(mu_k, kappa[:, None].expand(-1, num_samples), generator=gen))

    def point_estimate(self, emb) -> np.ndarray:
        return to_latlon(self.params(emb)[0])


class VMFMixtureBaseline:
    """Mixture of C vMF with embedding-conditioned weights."""

    id = "vmf_mixture"

    def __init__(self, components: int = 16, hidden: int = 128, kappa0: float = 50.0, epochs: int = 300):
        self.components, self.hidden, self.kappa0, self.epochs = components, hidden, kappa0, epochs

    def fit(self, emb, latlon_deg, groups=None, *, seed: int = 0, prior=None) -> "VMFMixtureBaseline":
        """Photos: emb (N, D), latlon (N, 2) degrees; prior: optional (P, 2) degrees of extra
        unconditional locations for the prior part (means, concentrations, weights)."""
        e, c = check_inputs(emb, latlon_deg)
        gen = seed_everything(seed)
        self.scaler = Standardizer(e)
        y = to_xyz(c).float()
        tr, va = group_split(len(e), groups, seed=seed)
        nll = lambda m, x, t: -vmf.mixture_log_prob(t, *m(x))  # noqa: E731
        if prior is None:
            means = spherical_kmeans(y[torch.as_tensor(tr)], self.components, generator=gen)
            self.model = _MixtureNet(e.shape[1], self.hidden, means, self.kappa0)
        else:
            self.model = self._with_prior(e.shape[1], y, groups, check_prior(prior), seed, gen)
        self.val_nll = train_by_nll(self.model, nll, self.scaler(e), y, tr, va, epochs=self.epochs,
                                    lr=3e-3, generator=gen)
        return self

    def _with_prior(self, dim: int, y: torch.Tensor, groups, prior: np.ndarray, seed: int,
                    gen: torch.Generator) -> _MixtureNet:
        """A mixture net whose means, concentrations and prior weights are fitted (then frozen) on the
        photos' y (N, 3) and the prior rows together; its weight MLP starts at zero."""
        ally = torch.cat([y, to_xyz(prior).float()])
        labels = np.concatenate([np.asarray([f"g:{g}" for g in groups] if groups is not None else
                                            [f"p:{i}" for i in range(len(y))], dtype=str),
                                 np.char.add("prior:", np.arange(len(prior)).astype(str))])
        tr, va = group_split(len(ally), labels, seed=seed)
        part = _PriorMixture(spherical_kmeans(ally[torch.as_tensor(tr)], self.components, generator=gen), self.kappa0)
        nll = lambda m, x, t: -vmf.mixture_log_prob(t, *m(x))  # noqa: E731
        train_by_nll(part, nll, torch.zeros(len(ally), 1), ally, tr, va, epochs=min(self.epochs, 60), lr=1e-2,
                     batch_size=4096, patience=5, generator=gen)
        net = _MixtureNet(dim, self.hidden, part.means.detach(), self.kappa0,
                          torch.log_softmax(part.logits.detach(), -1))
        with torch.no_grad():
            net.raw_kappa.copy_(part.raw_kappa)
            net.weights[-1].weight.zero_()
            net.weights[-1].bias.zero_()
        net.means.requires_grad_(False)
        net.raw_kappa.requires_grad_(False)
        return net

    def params(self, emb) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M, C) log-weights, (M, C, 3) means, (M, C) concentrations, all float64."""
        e, _ = check_inputs(emb)
        runs, run_of = collapse_repeats(e)
        with torch.no_grad(), single_thread():
            log_w, mu, kappa = self.model(self.scaler(runs))
        idx = torch.as_tensor(run_of)
        return torch.log_softmax(log_w.double(), -1)[idx], normalize(mu.double())[idx], kappa.double()[idx]

    def log_prob(self, emb, latlon_deg) -> np.ndarray:
        e, c = check_inputs(emb, latlon_deg)
        params = self.params(e)
        with single_thread():
            return vmf.mixture_log_prob(to_xyz(c), *params).numpy()

    def sample(self, emb, num_samples: int, *, seed: int | None = None) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return to_latlon(vmf.mixture_sample(*self.params(emb), num_samples, generator=gen))

    def point_estimate(self, emb) -> np.ndarray:
        log_w, mu, kappa = self.params(emb)
        # mixture density at every component mean: (M, C) points against (M, C, C) components
        at_means = vmf.mixture_log_prob(mu, log_w[:, None, :], mu[:, None, :, :].expand(-1, mu.shape[1], -1, -1),
                                        kappa[:, None, :])
        best = at_means.argmax(1)
        return to_latlon(mu[torch.arange(len(mu)), best])
