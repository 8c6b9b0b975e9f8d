"""Exact models: data distributions whose noise predictor is known in closed form.

With an exact predictor every error a sampler makes is its own integration error, which the
book measures against :func:`bdia.ode.solve_probability_flow`.

* :class:`GaussianMixture`: ``x ~ sum_k w_k N(mu_k, s_k^2 I)``. Diffused by eq. (1), ``z_t`` is again
  a mixture, ``sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)``, so its score and the optimal
  noise predictor ``eps(z, t) = -sigma_t grad log p_t(z)`` are exact.
  Under a rectified flow's linear path (``alpha = 1 - t``, ``sigma = t``) the same posterior gives the
  exact velocity ``E[eps - x | z]`` (:meth:`GaussianMixture.velocity_model`).
* :func:`ideal_denoiser`: the same with ``s_k = 0`` and one component per data point: the exact
  predictor for a finite data set (e.g. ``sklearn.datasets.load_digits``), whose samples are
  the data points themselves.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .schedules import Schedule

__all__ = ["GaussianMixture", "ideal_denoiser", "load_digits_data", "two_moons_mixture"]

# bound on the (batch x components) temporaries of one chunk
_CHUNK_ELEMENTS = 1 << 22


class GaussianMixture:
    """Isotropic Gaussian mixture with exact diffused score, noise predictor and denoiser.

    ``means``: ``(K, d)``; ``std``: a scalar or ``(K,)`` (0 gives point masses); ``weights``: ``(K,)``,
    normalised here (uniform if omitted). Parameters are kept, and the posterior computed, in float64;
    results are returned in the dtype of the states.
    """

    def __init__(self, means, std=0.1, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() == 1:
            means = means[:, None]
        if means.dim() != 2 or means.shape[0] == 0:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K = means.shape[0]
        std = torch.as_tensor(std, dtype=torch.float64).flatten()
        if std.numel() == 1:
            std = std.expand(K).clone()
        if std.shape != (K,) or torch.any(std < 0) or not torch.isfinite(std).all():
            raise ValueError(f"std must be a non-negative scalar or have shape ({K},)")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if weights.shape != (K,) or torch.any(weights <= 0):
            raise ValueError(f"weights must be {K} positive numbers")
        self.means, self.std, self.weights = means, std, weights / weights.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _posterior(self, z: Tensor, alpha: float, sigma: float):
        """Responsibilities and per-component variances of ``z = alpha x + sigma n``, in chunks.

        Computed in float64 whatever the dtype of ``z`` (the result is cast back by the callers): squared
        distances come from one matrix product, ``|z|^2 + |alpha mu|^2 - 2 alpha z.mu``, whose cancellation
        error in float64 is far below the noise levels samplers visit.
        """
        flat = z.reshape(z.shape[0], -1).double()
        if flat.shape[1] != self.dim:
            raise ValueError(f"states have {flat.shape[1]} dimensions per sample, the mixture has {self.dim}")
        dev = z.device
        mu = self.means.to(dev) * alpha
        mu_sq = (mu * mu).sum(-1)
        var = (alpha**2) * self.std.to(dev) ** 2 + sigma**2  # (K,)
        log_w = torch.log(self.weights.to(dev)) - 0.5 * self.dim * torch.log(var)
        chunk = max(1, _CHUNK_ELEMENTS // self.num_components)
        for start in range(0, flat.shape[0], chunk):
            zc = flat[start:start + chunk]
            d2 = ((zc * zc).sum(-1, keepdim=True) + mu_sq - 2.0 * zc @ mu.T).clamp_min_(0.0)  # (B, K)
            resp = torch.softmax(log_w - 0.5 * d2 / var, dim=-1)
            yield start, zc, mu, var, resp

    def eps(self, z: Tensor, alpha: float, sigma: float) -> Tensor:
        """Exact noise predictor ``E[eps | z] = sigma * sum_k r_k (z - alpha mu_k) / v_k`` at level ``(alpha, sigma)``."""
        out = torch.empty(z.shape[0], self.dim, dtype=torch.float64, device=z.device)
        for start, zc, mu, var, resp in self._posterior(z, float(alpha), float(sigma)):
            w = resp / var  # (B, K)
            out[start:start + zc.shape[0]] = sigma * (w.sum(-1, keepdim=True) * zc - w @ mu)
        return out.reshape(z.shape).to(z.dtype)

    def posterior_mean(self, z: Tensor, alpha: float, sigma: float) -> Tensor:
        """Exact ``E[x | z]`` (the ideal x0-prediction) at level ``(alpha, sigma)``."""
        out = torch.empty(z.shape[0], self.dim, dtype=torch.float64, device=z.device)
        std2 = self.std.to(z.device) ** 2
        for start, zc, mu, var, resp in self._posterior(z, float(alpha), float(sigma)):
            gain = resp * (alpha * std2 / var)  # (B, K): weight of z in each component's posterior mean
            mean = resp @ self.means.to(z.device) + gain.sum(-1, keepdim=True) * zc - gain @ mu
            out[start:start + zc.shape[0]] = mean
        return out.reshape(z.shape).to(z.dtype)

    def eps_model(self, schedule: Schedule):
        """The exact noise predictor ``model(z, t)`` of the mixture diffused by ``schedule``."""

        def model(z: Tensor, t) -> Tensor:
            lvl = schedule.level(t)
            return self.eps(z, lvl.alpha, lvl.sigma)

        model.mixture, model.schedule = self, schedule
        return model

    def velocity(self, z: Tensor, alpha: float, sigma: float) -> Tensor:
        """Exact velocity ``E[eps - x | z]`` at level ``(alpha, sigma)``: ``dz/dt`` of a rectified flow's linear path."""
        return self.eps(z, alpha, sigma) - self.posterior_mean(z, alpha, sigma)

    def velocity_model(self, schedule: Schedule):
        """The exact velocity model ``model(z, t) -> v`` of the mixture under ``schedule`` (a
        :class:`~bdia.flow.FlowMatchSchedule`, whose path is linear), declared as such (:func:`bdia.from_velocity`)."""
        from .flow import from_velocity

        def model(z: Tensor, t) -> Tensor:
            lvl = schedule.level(t)
            return self.velocity(z, lvl.alpha, lvl.sigma)

        return from_velocity(model, schedule)

    def denoiser(self):
        """The exact EDM denoiser ``D(x, sigma) = E[x0 | x0 + sigma n]`` (``alpha = 1``)."""
        return lambda x, sigma: self.posterior_mean(x, 1.0, float(sigma))

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        """``n`` samples of the mixture, shape ``(n, d)``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.std[k, None] * noise).to(dtype)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, d={self.dim}, std={self.std.unique().tolist()[:4]})"


def ideal_denoiser(data) -> GaussianMixture:
    """Exact model of a finite data set: the empirical distribution convolved with Gaussian noise.

    ``data``: ``(n, d)`` (or ``(n, ...)``, flattened). Its ``eps_model(schedule)`` is the score of the
    noisy empirical distribution; at ``sigma -> 0`` it collapses onto the nearest data point, so a
    perfect sampler reproduces training points. Evaluation is chunked over the batch.
    """
    data = torch.as_tensor(data, dtype=torch.float64)
    return GaussianMixture(data.reshape(data.shape[0], -1), std=0.0)


def load_digits_data(dtype=torch.float64) -> Tensor:
    """``sklearn.datasets.load_digits``: 1797 real 8x8 digits, scaled from 0..16 to [-1, 1], shape ``(1797, 64)``."""
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().data, dtype=torch.float64)
    return (pixels / 8.0 - 1.0).to(dtype)


def two_moons_mixture(num_components: int = 8, std: float = 0.08) -> GaussianMixture:
    """A 2-D mixture along two interleaved half circles (a common toy target)."""
    angles = torch.linspace(0, math.pi, num_components // 2, dtype=torch.float64)
    upper = torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    lower = torch.stack([1 - torch.cos(angles), 0.5 - torch.sin(angles)], -1)
    return GaussianMixture(torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=torch.float64), std)
