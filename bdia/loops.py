"""The sample and invert loops of every method (their records are in :data:`bdia.methods.REGISTRY`).

Each loop reads as the paper writes its method. It receives a :class:`~bdia.trajectory.Trajectory` ``traj``
whose ``levels`` are the noise levels in walking order (sampling: ``j = 0`` is the noisiest point and ``j = K``
the data end; inversion: ``j = 0`` is the data end), calls the network through ``traj.predict(z, j)`` (the pair
``(x0_hat, eps_hat)``) or ``traj.eps(z, j)``, and reports each finished step with
``traj.done(step, j, *states)``. The arithmetic of each step is a pure rule of :mod:`bdia.steps`.

``sample_<method>(traj, latents, options)`` returns the final state; ``invert_<method>(traj, x0, options)``
returns the latents of the inversion state.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import steps
from .errors import InvalidValueError
from .trajectory import Trajectory

__all__ = ["sample_ddim", "invert_ddim", "sample_edict", "invert_edict", "sample_bdia", "invert_bdia",
           "sample_obelm", "invert_obelm", "sample_heun", "sample_bdia_edm", "invert_bdia_edm", "sample_midpoint",
           "invert_midpoint", "sample_fireflow", "invert_fireflow", "invert_null_text", "invert_negative_prompt",
           "sample_with_null_embeddings", "sample_ddpm", "invert_ddpm", "sample_direct", "invert_direct",
           "invert_rf", "sample_rf", "invert_flowedit", "sample_flowedit"]


# ---------------------------------------------------------------------------------------------------
# sampling loops: the grid t_K, ..., t_0 walked from j = 0 (noisiest) to j = K


def sample_ddim(traj: Trajectory, latents, opts):
    (z,) = latents
    lv = traj.levels
    for j in range(len(lv) - 1):
        z = steps.ddim_from_prediction(*traj.predict(z, j), lv[j + 1])
        traj.done(j, j + 1, z)
    return z


def _heun_or_euler(traj: Trajectory, z: Tensor, eps: Tensor, j: int) -> Tensor:
    """EDM's step from ``t_j`` to ``t_{j+1}`` (walking order): Heun, or Euler on a step that lands on the data end."""
    lv = traj.levels
    if j + 2 < len(lv):
        return steps.heun_step(z, eps, lambda z_euler: traj.eps(z_euler, j + 1), lv[j], lv[j + 1])
    return steps.ddim_step(z, eps, lv[j], lv[j + 1])


def sample_heun(traj: Trajectory, latents, opts):
    (z,) = latents
    for j in range(len(traj.levels) - 1):
        z = _heun_or_euler(traj, z, traj.eps(z, j), j)
        traj.done(j, j + 1, z)
    return z


def _edict_half_step(traj: Trajectory, j: int, target: int, reading: int):
    """``half(z, other)``: a DDIM step of ``z`` from ``t_reading`` to ``t_target``, with the network evaluated at
    ``(other, t_j)``."""
    return lambda z, other: steps.ddim_from_prediction(*traj.read(traj.output(other, j), z, reading, j),
                                                       traj.levels[target])


def sample_edict(traj: Trajectory, latents, opts):
    x, y = latents if len(latents) == 2 else (latents[0], latents[0])
    for j in range(len(traj.levels) - 1):
        swap = opts["leapfrog"] and j % 2 == 1
        x, y = steps.edict_coupling(x, y, _edict_half_step(traj, j, j + 1, j), opts["p"], swap)
        traj.done(j, j + 1, x, y)
    return x


def _bdia_update(traj: Trajectory, z_noisier: Tensor, z: Tensor, j: int, gamma: float) -> Tensor:
    """``z_{j+1}`` (walking order, so one point cleaner) from the pair ``(z_{j-1}, z_j)``: eq. 29, or on a lattice
    the leapfrog map with its increment rounded onto it."""
    lv = traj.levels
    x0, eps = traj.predict(z, j)
    if traj.lattice is not None:
        return z_noisier + traj.on_lattice(steps.bdia_increment_from_prediction(x0, eps, lv[j - 1], lv[j + 1]))
    return steps.bdia_from_prediction(z_noisier, x0, eps, lv[j - 1], lv[j + 1], gamma)


def _sample_two_step(traj: Trajectory, latents, first_step: Callable, update: Callable) -> Tensor:
    """The exact two-step methods: one single-step start (unless the pair is given), then ``update``."""
    if len(latents) == 2:  # reconstruction: the pair (z_K, z_{K-1}) is given
        z_noisier, z = latents
    else:
        z_noisier = latents[0]
        z = traj.on_lattice(first_step(traj, z_noisier))
        traj.done(0, 1, z)
    for j in range(1, len(traj.levels) - 1):
        z_noisier, z = z, update(traj, z_noisier, z, j)
        traj.done(j, j + 1, z)
    return z


def _ddim_first(traj: Trajectory, z: Tensor) -> Tensor:
    return steps.ddim_from_prediction(*traj.predict(z, 0), traj.levels[1])


def _heun_first(traj: Trajectory, z: Tensor) -> Tensor:
    return _heun_or_euler(traj, z, traj.eps(z, 0), 0)


def sample_bdia(traj, latents, opts):
    return _sample_two_step(traj, latents, _ddim_first, lambda traj, zn, z, j: _bdia_update(traj, zn, z, j,
                                                                                           opts["gamma"]))


def sample_obelm(traj, latents, opts):
    lv = traj.levels
    return _sample_two_step(traj, latents, _ddim_first, lambda traj, zn, z, j: _bdia_update(
        traj, zn, z, j, steps.obelm_gamma(lv[j - 1], lv[j], lv[j + 1], traj.euler_variables)))


def _bdia_edm_update(traj: Trajectory, z_noisier: Tensor, z: Tensor, j: int, gamma: float) -> Tensor:
    lv = traj.levels
    eps = traj.eps(z, j)
    z_forward = _heun_or_euler(traj, z, eps, j)
    if traj.lattice is not None:  # alpha = 1 here (checked): x = z, and gamma = 1 makes it a leapfrog map
        increment = steps.bdia_edm_increment(z, z_forward, eps, lv[j - 1], lv[j], lv[j + 1])
        return z_noisier + traj.on_lattice(increment)
    return steps.bdia_edm_step(z_noisier, z, z_forward, eps, lv[j - 1], lv[j], lv[j + 1], gamma)


def sample_bdia_edm(traj, latents, opts):
    return _sample_two_step(traj, latents, _heun_first,
                            lambda traj, zn, z, j: _bdia_edm_update(traj, zn, z, j, opts["gamma"]))


# ---------------------------------------------------------------------------------------------------
# inversion loops: the grid t_0, ..., t_K walked from j = 0 (data) to j = K


def _ddim_inversion_step(traj: Trajectory, z: Tensor, j: int) -> Tensor:
    """Eq. 10 from ``t_j`` to ``t_{j+1}``: the network at the target timestep, on the known cleaner state."""
    return steps.ddim_from_prediction(*traj.read(traj.output(z, j + 1), z, j, j + 1), traj.levels[j + 1])


def invert_ddim(traj: Trajectory, z: Tensor, opts):
    for j in range(len(traj.levels) - 1):
        z = _ddim_inversion_step(traj, z, j)
        traj.done(j, j + 1, z)
    return (z,)


def invert_edict(traj: Trajectory, z: Tensor, opts):
    x, y = z, z
    K = len(traj.levels) - 1
    for j in range(K):
        swap = opts["leapfrog"] and (K - 1 - j) % 2 == 1  # the parity of this interval when sampling
        x, y = steps.edict_inverse_coupling(x, y, _edict_half_step(traj, j + 1, j + 1, j), opts["p"], swap)
        traj.done(j, j + 1, x, y)
    return (x, y)


def _invert_two_step(traj: Trajectory, x0: Tensor, inverse_update: Callable) -> tuple:
    """Seed ``z_1`` with one DDIM inversion step (approximate: it only starts the pair), then exact steps; the state
    is the pair ``(z_K, z_{K-1})``."""
    z_cleaner, z = x0, traj.on_lattice(_ddim_inversion_step(traj, x0, 0))
    traj.done(0, 1, z)
    for j in range(1, len(traj.levels) - 1):
        z_cleaner, z = z, inverse_update(traj, z_cleaner, z, j)
        traj.done(j, j + 1, z)
    return (z, z_cleaner)


def _bdia_inverse_update(traj: Trajectory, z_cleaner: Tensor, z: Tensor, j: int, gamma: float) -> Tensor:
    """``z_{j+1}`` (one point noisier) from ``(z_{j-1}, z_j)``: the exact inverse of eq. 29."""
    lv = traj.levels
    x0, eps = traj.predict(z, j)
    if traj.lattice is not None:
        return z_cleaner - traj.on_lattice(steps.bdia_increment_from_prediction(x0, eps, lv[j + 1], lv[j - 1]))
    return steps.bdia_inverse_from_prediction(z_cleaner, x0, eps, lv[j + 1], lv[j - 1], gamma)


def invert_bdia(traj, x0, opts):
    return _invert_two_step(traj, x0, lambda traj, zc, z, j: _bdia_inverse_update(traj, zc, z, j, opts["gamma"]))


def invert_obelm(traj, x0, opts):
    lv = traj.levels
    return _invert_two_step(traj, x0, lambda traj, zc, z, j: _bdia_inverse_update(
        traj, zc, z, j, steps.obelm_gamma(lv[j + 1], lv[j], lv[j - 1], traj.euler_variables)))


def _bdia_edm_inverse_update(traj: Trajectory, z_cleaner: Tensor, z: Tensor, j: int, gamma: float) -> Tensor:
    lv = traj.levels
    eps = traj.eps(z, j)
    if j > 1:  # the forward estimate towards t_{j-1}: Heun, or Euler when it lands on the data end
        z_forward = steps.heun_step(z, eps, lambda z_euler: traj.eps(z_euler, j - 1), lv[j], lv[j - 1])
    else:
        z_forward = steps.ddim_step(z, eps, lv[j], lv[j - 1])
    if traj.lattice is not None:
        return z_cleaner - traj.on_lattice(steps.bdia_edm_increment(z, z_forward, eps, lv[j + 1], lv[j], lv[j - 1]))
    return steps.bdia_edm_inverse_step(z_cleaner, z, z_forward, eps, lv[j + 1], lv[j], lv[j - 1], gamma)


def invert_bdia_edm(traj, x0, opts):
    return _invert_two_step(traj, x0,
                            lambda traj, zc, z, j: _bdia_edm_inverse_update(traj, zc, z, j, opts["gamma"]))


# ---------------------------------------------------------------------------------------------------
# what rectified-flow users pick instead: explicit one-step rules walked either way (approximate inversion)


def _midpoint_walk(traj: Trajectory, z: Tensor, reuse: bool) -> Tensor:
    """The midpoint rule along the walk: ``z_mid = z + (h/2) v(z, t)``, ``z' = z + h v(z_mid, t + h/2)`` (written on
    the prediction pair, so a DDIM step stands for each Euler step). RF-Solver's second-order step (Wang et al.
    2024) reduces to it: 2 calls per step. With ``reuse`` (FireFlow, Deng et al. 2024) the start velocity is the
    previous step's midpoint velocity: one call per step after the first."""
    lv, ts = traj.levels, traj.ts
    cached = None
    for j in range(len(lv) - 1):
        start = cached if reuse and cached is not None else traj.output(z, j)
        t_mid = ts[j] + (ts[j + 1] - ts[j]) / 2
        z_mid = steps.ddim_from_prediction(*traj.read(start, z, j), traj.schedule.level(t_mid))
        cached = traj.output_at(z_mid, t_mid)
        z = steps.ddim_from_prediction(*traj.read(cached, z, j), lv[j + 1])
        traj.done(j, j + 1, z)
    return z


def sample_midpoint(traj: Trajectory, latents, opts):
    return _midpoint_walk(traj, latents[0], reuse=False)


def invert_midpoint(traj: Trajectory, x0: Tensor, opts):
    return (_midpoint_walk(traj, x0, reuse=False),)


def sample_fireflow(traj: Trajectory, latents, opts):
    return _midpoint_walk(traj, latents[0], reuse=True)


def invert_fireflow(traj: Trajectory, x0: Tensor, opts):
    return (_midpoint_walk(traj, x0, reuse=True),)


# ---------------------------------------------------------------------------------------------------
# what image editors pick instead: a guided model whose unconditional embedding is replaced per step


def _pivot(traj: Trajectory, x0: Tensor) -> list:
    """DDIM inversion (eq. 10) at guidance 1, the conditional branch alone: the states ``z_0 .. z_K``."""
    lv, states, z = traj.levels, [x0], x0
    for j in range(len(lv) - 1):
        z = steps.ddim_step(z, traj.conditional(z, j + 1), lv[j], lv[j + 1])
        traj.done(j, j + 1, z)
        states.append(z)
    return states


def invert_null_text(traj: Trajectory, x0: Tensor, opts):
    """Null-text inversion (Mokady et al. 2023): the pivot is DDIM inversion at guidance 1; then, from the noisy end,
    the unconditional embedding of each step is optimised (Adam, ``inner_steps`` at a learning rate ``lr`` decaying
    with the step, stopped early below ``early_stop + i * early_stop_growth`` at the ``i``-th step, as in the
    reference code) so that the guided DDIM step from the current state lands on the pivot's next state. At
    guidance 1 the unconditional branch has no weight and there is nothing to optimise. The embeddings, in
    sampling order, go into the state's ``extras``."""
    import torch

    lv, pivot = traj.levels, _pivot(traj, x0)
    K = len(lv) - 1
    null = traj.model.null_embedding(x0.shape[0]).detach()
    w = float(traj.model.guidance_scale)
    z, nulls, backward = pivot[K], [], 0
    for i, j in enumerate(range(K, 0, -1)):
        eps_c = traj.conditional(z, j).detach()
        null = null.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([null], lr=opts["lr"] * (1.0 - i / 100.0))
        for _ in range(opts["inner_steps"] if w != 1.0 else 0):
            with torch.enable_grad():
                eps_u = traj.unconditional(z, j, null)
                landed = steps.ddim_step(z, eps_u + w * (eps_c - eps_u), lv[j], lv[j - 1])
                loss = torch.nn.functional.mse_loss(landed, pivot[j - 1])
                optimiser.zero_grad()
                loss.backward()
            optimiser.step()
            backward += 1
            if loss.item() < opts["early_stop"] + i * opts["early_stop_growth"]:
                break
        null = null.detach()
        nulls.append(null)
        z = steps.ddim_step(z, traj.guided(z, j, null), lv[j], lv[j - 1])
    traj.extras.update(null_embeddings=tuple(nulls), backward_passes=backward, forward_passes=traj.forward_passes)
    return (pivot[K],)


def invert_negative_prompt(traj: Trajectory, x0: Tensor, opts):
    """Negative-prompt inversion (Miyake et al. 2023): DDIM inversion at guidance 1, and the source condition's own
    embedding as every step's unconditional embedding, with no optimisation."""
    pivot = _pivot(traj, x0)
    source = traj.model.conditional_embedding(x0.shape[0]).detach()
    traj.extras.update(null_embeddings=(source,) * (len(traj.levels) - 1), backward_passes=0,
                       forward_passes=traj.forward_passes)
    return (pivot[-1],)


def sample_with_null_embeddings(traj: Trajectory, latents, opts):
    """Guided DDIM with the per-step unconditional embeddings of a null-text or negative-prompt inversion (from the
    state), or the model's own null embedding when sampling from noise."""
    (z,) = latents
    lv = traj.levels
    nulls = traj.extras.get("null_embeddings")
    if nulls is None:
        nulls = (traj.model.null_embedding(z.shape[0]),) * (len(lv) - 1)
    if len(nulls) != len(lv) - 1:
        raise InvalidValueError(f"the state holds {len(nulls)} null embeddings for {len(lv) - 1} steps")
    for j in range(len(lv) - 1):
        z = steps.ddim_step(z, traj.guided(z, j, nulls[j]), lv[j], lv[j + 1])
        traj.done(j, j + 1, z)
    return z


# ---------------------------------------------------------------------------------------------------
# edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024)


def _noise(traj: Trajectory, like: Tensor, seed: int):
    """Standard normal draws of ``like``'s shape, one after another from one seeded generator."""
    import torch

    generator = torch.Generator(device=like.device).manual_seed(seed)
    return lambda: torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def sample_ddpm(traj: Trajectory, latents, opts):
    """DDPM's stochastic sampler (eta = 1). From an edit-friendly inversion each step adds the stored noise map
    (``extras["noise_maps"]``, in sampling order) instead of fresh noise, so regenerating retraces the inverted
    states and editing keeps their noise."""
    (z,) = latents
    lv = traj.levels
    maps = traj.extras.get("noise_maps")
    if maps is not None and len(maps) != len(lv) - 1:
        raise InvalidValueError(f"the state holds {len(maps)} noise maps for {len(lv) - 1} steps")
    draw = _noise(traj, z, opts["seed"]) if maps is None else None
    for j in range(len(lv) - 1):
        std = steps.ddpm_posterior_std(lv[j], lv[j + 1])
        mean = steps.ddpm_mean_from_prediction(*traj.predict(z, j), lv[j + 1], std)
        z = mean + (maps[j] if maps is not None else std * draw())
        traj.done(j, j + 1, z)
    return z


def invert_ddpm(traj: Trajectory, x0: Tensor, opts):
    """Edit-friendly DDPM inversion: noisy versions ``z_j = alpha_j x0 + sigma_j eps_j`` drawn independently for
    every timestep, then, from the noisy end, the noise map ``z_{j-1} - mean(z_j)`` that makes each DDPM step land
    on the next (stored scaled by the step's noise, so a step to a noiseless end stays exact). The state is
    ``z_K``; the maps go into ``extras``."""
    lv = traj.levels
    draw = _noise(traj, x0, opts["seed"])
    states = [x0] + [level.alpha * x0 + level.sigma * draw() for level in lv[1:]]
    maps = []  # each step's map depends on its two drawn states only: walk up the grid like every inversion
    for j in range(1, len(lv)):
        std = steps.ddpm_posterior_std(lv[j], lv[j - 1])
        maps.append(states[j - 1] - steps.ddpm_mean_from_prediction(*traj.predict(states[j], j), lv[j - 1], std))
        traj.done(j - 1, j, states[j])
    traj.extras.update(noise_maps=tuple(reversed(maps)))
    return (states[-1],)


def sample_direct(traj: Trajectory, latents, opts):
    """Direct Inversion's regeneration (Ju et al. 2024): DDIM steps, after each of which the source rows are pinned
    to the inversion's trajectory (``extras["source_trajectory"]``, in sampling order, ending at the data), which adds
    the step's drift back to the source branch alone. The source rows are the first ``1 / extras["copies"]`` of the
    batch where the state was tiled for a controlled edit, every row otherwise; from noise it is DDIM."""
    (z,) = latents
    lv = traj.levels
    pinned = traj.extras.get("source_trajectory")
    if pinned is not None and len(pinned) != len(lv) - 1:
        raise InvalidValueError(f"the state holds {len(pinned)} source states for {len(lv) - 1} steps")
    source_rows = z.shape[0] // traj.extras.get("copies", 1)
    for j in range(len(lv) - 1):
        z = steps.ddim_from_prediction(*traj.predict(z, j), lv[j + 1])
        if pinned is not None:
            z = torch.cat([pinned[j][:source_rows].to(z.dtype), z[source_rows:]])
        traj.done(j, j + 1, z)
    return z


def invert_direct(traj: Trajectory, z: Tensor, opts):
    """Direct Inversion: DDIM inversion (eq. 10) that keeps every state it passes, the data included, for the source
    branch to be pinned to (``extras["source_trajectory"]``, in sampling order)."""
    states = [z]
    for j in range(len(traj.levels) - 1):
        z = _ddim_inversion_step(traj, z, j)
        traj.done(j, j + 1, z)
        states.append(z)
    traj.extras.update(source_trajectory=tuple(reversed(states[:-1])))
    return (z,)


# ---------------------------------------------------------------------------------------------------
# RF-Inversion (Rout et al., ICLR 2025): Euler steps of the flow with a controller toward a fixed target


def _velocity(traj: Trajectory, z: Tensor, j: int) -> Tensor:
    """The velocity ``v = eps_hat - x0_hat`` at ``(z, t_j)``: one network call."""
    x0, eps = traj.predict(z, j)
    return eps - x0


def invert_rf(traj: Trajectory, x0: Tensor, opts):
    """RF-Inversion's controlled forward ODE (its Algorithm 1, eq. 8): Euler steps toward noise along
    ``v + controller (u - v)``, where ``u = (y_1 - z) / (1 - t)`` is the straight line from ``z`` to a fixed noise
    sample ``y_1`` (drawn with ``seed``). The state is ``z_K``; the source ``x0`` goes into ``extras["source"]`` for
    the edit's controller."""
    ts, z = traj.ts, x0
    target = _noise(traj, x0, opts["seed"])()
    for j in range(len(ts) - 1):
        v = _velocity(traj, z, j)
        u = (target - z) / (1 - float(ts[j]))
        z = z + float(ts[j + 1] - ts[j]) * (v + opts["controller"] * (u - v))
        traj.done(j, j + 1, z)
    traj.extras.update(source=x0)
    return (z,)


def sample_rf(traj: Trajectory, latents, opts):
    """RF-Inversion's controlled reverse ODE (its Algorithm 2): Euler steps toward the data along
    ``v + eta (u - v)`` for the steps from ``start`` to ``stop`` (fractions of the walk, from the noisy end), where
    ``u = (z - x_0) / t`` is the straight line from the source ``x_0`` (``extras["source"]``) through ``z``; plain
    Euler elsewhere, and from noise."""
    (z,) = latents
    ts = traj.ts
    source = traj.extras.get("source")
    n = len(ts) - 1
    start, stop = int(opts["start"] * n), min(int(opts["stop"] * n), n)  # the community pipeline's rounding
    for j in range(n):
        v = _velocity(traj, z, j)
        if source is not None and start <= j < stop:
            v = v + opts["eta"] * ((z - source.to(z.dtype)) / float(ts[j]) - v)
        z = z + float(ts[j + 1] - ts[j]) * v
        traj.done(j, j + 1, z)
    return z


# ---------------------------------------------------------------------------------------------------
# FlowEdit (Kulikov et al., 2025): an edit without inversion, integrating the difference of two velocities


def invert_flowedit(traj: Trajectory, x0: Tensor, opts):
    """FlowEdit's "inversion" is none: it edits from the source image itself, so the state is the source (no
    network call). The walk is recorded step by step all the same, so that a callback sees the grid it covers."""
    for j in range(len(traj.ts) - 1):
        traj.done(j, j + 1, x0)
    return (x0,)


def sample_flowedit(traj: Trajectory, latents, opts):
    """FlowEdit's edit ODE (Kulikov et al. 2025, its Algorithm 1 with one noise sample per step): the edit
    ``z`` starts at the source ``x_src`` and moves by ``(t_{j+1} - t_j) (v_tar(z_tar) - v_src(z_src))``, where
    ``z_src = (1 - t) x_src + t eps`` takes fresh noise ``eps`` at every step (drawn with ``seed``) and
    ``z_tar = z + z_src - x_src``. On the two-branch batch (the state tiled twice,
    :meth:`~bdia.InversionState.tile`: the first half conditioned on the source, the rest on the target) the two
    velocities come from one call, and the source rows come back as the source. Alone (an untiled state) the one
    model gives both, in two calls per step: FlowEdit with the source's condition as the target's, which returns
    the source up to rounding."""
    (x,) = latents
    ts = traj.ts
    rows = x.shape[0] // traj.extras.get("copies", 1)
    source, z = (x[:rows], x[rows:]) if rows < x.shape[0] else (x, x)
    branches = z.shape[0] // rows

    def beside(t: Tensor) -> Tensor:  # a source-sized tensor for every edit row
        return t.repeat(branches, *([1] * (t.dim() - 1)))

    draw = _noise(traj, source, opts["seed"])
    for j in range(len(ts) - 1):
        noisy = (1 - float(ts[j])) * source + float(ts[j]) * draw()
        lifted = z + beside(noisy - source)
        if rows < x.shape[0]:
            v = _velocity(traj, torch.cat([noisy, lifted]), j)
            v_src, v_tar = v[:rows], v[rows:]
        else:
            v_src, v_tar = _velocity(traj, noisy, j), _velocity(traj, lifted, j)
        z = z + float(ts[j + 1] - ts[j]) * (v_tar - beside(v_src))
        traj.done(j, j + 1, z if rows == x.shape[0] else torch.cat([source, z]))
    return z if rows == x.shape[0] else torch.cat([source, z])
