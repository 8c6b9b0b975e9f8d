"""Properties of the pure update rules, on random tensors and random noise levels."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bdia import steps
from bdia.schedules import Level

# three descending noise levels (prev noisier than cur noisier than next), VP-style
sigmas = st.lists(st.floats(0.02, 0.999), min_size=3, max_size=3, unique=True).map(sorted)


def levels(sig):
    nxt, cur, prev = (Level((1 - s * s) ** 0.5, s) for s in sig)
    return prev, cur, nxt


def tensors(seed, dtype=torch.float64, n=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, generator=g, dtype=torch.float64).to(dtype) for _ in range(n)]


def eps_fn(z):
    # a fixed nonlinear "network"
    return torch.tanh(1.3 * z + 0.2) - 0.1 * z


@given(sig=sigmas, seed=st.integers(0, 10**6), gamma=st.floats(0.05, 1.0))
def test_bdia_step_is_paper_eq_29(sig, seed, gamma):
    prev, cur, nxt = levels(sig)
    z_prev, z_cur, eps, _ = tensors(seed)
    a_i, b_i = nxt.alpha / cur.alpha, nxt.sigma - cur.sigma * nxt.alpha / cur.alpha
    a_ip1, b_ip1 = cur.alpha / prev.alpha, cur.sigma - prev.sigma * cur.alpha / prev.alpha
    literal = (gamma * (z_prev - z_cur) + (a_i * z_cur + b_i * eps)
               - gamma * (z_cur / a_ip1 - b_ip1 / a_ip1 * eps - z_cur))
    ours = steps.bdia_step(z_prev, z_cur, eps, prev, cur, nxt, gamma)
    torch.testing.assert_close(ours, literal, rtol=1e-12, atol=1e-12)


@given(sig=sigmas, seed=st.integers(0, 10**6))
def test_gamma_zero_is_ddim(sig, seed):
    """With gamma = 0, BDIA is eq. 7, ``a_i z_i + b_i eps``, and z_{i+1} has no influence."""
    prev, cur, nxt = levels(sig)
    z_prev, z_cur, eps, other = tensors(seed)
    a_i, b_i = nxt.alpha / cur.alpha, nxt.sigma - cur.sigma * nxt.alpha / cur.alpha
    ours = steps.bdia_step(z_prev, z_cur, eps, prev, cur, nxt, 0.0)
    torch.testing.assert_close(ours, a_i * z_cur + b_i * eps, rtol=1e-12, atol=1e-12)
    assert torch.equal(ours, steps.bdia_step(other, z_cur, eps, prev, cur, nxt, 0.0))


@given(sig=sigmas, seed=st.integers(0, 10**6))
def test_time_symmetry_lemma_1(sig, seed):
    """Swapping t_{i-1} and t_{i+1} in eq. 26 gives eq. 28 as the paper writes it, and that undoes eq. 26."""
    prev, cur, nxt = levels(sig)
    z_next, z_cur, eps, _ = tensors(seed)
    a_i, b_i = nxt.alpha / cur.alpha, nxt.sigma - cur.sigma * nxt.alpha / cur.alpha
    a_ip1, b_ip1 = cur.alpha / prev.alpha, cur.sigma - prev.sigma * cur.alpha / prev.alpha
    eq_28 = z_next - (a_i * z_cur + b_i * eps) + (z_cur / a_ip1 - b_ip1 / a_ip1 * eps)
    swapped = steps.bdia_step(z_next, z_cur, eps, nxt, cur, prev, 1.0)
    torch.testing.assert_close(swapped, eq_28, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(steps.bdia_step(swapped, z_cur, eps, prev, cur, nxt, 1.0), z_next, rtol=1e-12,
                               atol=1e-12)


@given(sig=sigmas, seed=st.integers(0, 10**6))
def test_bdia_increment_is_the_gamma_one_update(sig, seed):
    """z_{i-1} = z_{i+1} + g_i(z_i): the leapfrog form of eq. 26, which the lattice relies on."""
    prev, cur, nxt = levels(sig)
    z_prev, z_cur, eps, _ = tensors(seed)
    torch.testing.assert_close(z_prev + steps.bdia_increment(z_cur, eps, prev, cur, nxt),
                               steps.bdia_step(z_prev, z_cur, eps, prev, cur, nxt, 1.0), rtol=1e-12, atol=1e-12)
    # on a lattice the rounding is exact and the map is undone bit for bit
    spacing = 2.0**-30
    z_prev, z_cur = steps.lattice_round(z_prev, spacing), steps.lattice_round(z_cur, spacing)
    g = steps.lattice_round(steps.bdia_increment(z_cur, eps, prev, cur, nxt), spacing)
    assert torch.equal((z_prev + g) - g, z_prev)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
@given(sig=sigmas, seed=st.integers(0, 10**6), gamma=st.floats(0.5, 1.0))
def test_two_step_inverses(dtype, tol, sig, seed, gamma):
    prev, cur, nxt = levels(sig)
    z_prev, z_cur, eps, _ = tensors(seed, dtype)
    z_next = steps.bdia_step(z_prev, z_cur, eps, prev, cur, nxt, gamma)
    back = steps.bdia_inverse_step(z_next, z_cur, eps, prev, cur, nxt, gamma)
    torch.testing.assert_close(back, z_prev, rtol=tol, atol=tol)
    assert back.dtype == dtype
    z_next = steps.obelm_step(z_prev, z_cur, eps, prev, cur, nxt)
    # the O-BELM inverse divides by (h_i / h_{i+1})^2: rounding grows by that factor
    cond = ((prev.edm_sigma - cur.edm_sigma) / (cur.edm_sigma - nxt.edm_sigma)) ** 2
    torch.testing.assert_close(steps.obelm_inverse_step(z_next, z_cur, eps, prev, cur, nxt), z_prev,
                               rtol=tol * 10 * max(1.0, cond), atol=tol * 10 * max(1.0, cond))
    z_fwd = steps.heun_step(z_cur, eps, eps_fn, cur, nxt)
    z_next = steps.bdia_edm_step(z_prev, z_cur, z_fwd, eps, prev, cur, nxt, gamma)
    back = steps.bdia_edm_inverse_step(z_next, z_cur, z_fwd, eps, prev, cur, nxt, gamma)
    torch.testing.assert_close(back, z_prev, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("swap", [False, True])
@given(sig=sigmas, seed=st.integers(0, 10**6), p=st.floats(0.8, 1.0))
def test_edict_inverse(swap, sig, seed, p):
    _, cur, nxt = levels(sig)
    x, y, _, _ = tensors(seed)
    x1, y1 = steps.edict_step(x, y, eps_fn, cur, nxt, p, swap)
    x0, y0 = steps.edict_inverse_step(x1, y1, eps_fn, cur, nxt, p, swap)
    torch.testing.assert_close(x0, x, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(y0, y, rtol=1e-11, atol=1e-11)


def test_edict_swap_changes_the_order_of_the_half_steps():
    _, cur, nxt = levels([0.3, 0.6, 0.9])
    x, y, _, _ = tensors(1)
    assert not torch.allclose(steps.edict_step(x, y, eps_fn, cur, nxt, 0.93, False)[0],
                              steps.edict_step(x, y, eps_fn, cur, nxt, 0.93, True)[0])
    # without mixing and with swapped roles the two orders mirror each other
    xs, ys = steps.edict_step(y, x, eps_fn, cur, nxt, 1.0, True)
    xn, yn = steps.edict_step(x, y, eps_fn, cur, nxt, 1.0, False)
    torch.testing.assert_close((xs, ys), (yn, xn))


@given(sig=sigmas, seed=st.integers(0, 10**6))
def test_ddim_step_with_fixed_eps_is_invertible_and_the_inversion_step_is_ddim(sig, seed):
    _, cur, nxt = levels(sig)
    z, eps, _, _ = tensors(seed)
    torch.testing.assert_close(steps.ddim_step(steps.ddim_step(z, eps, cur, nxt), eps, nxt, cur), z)
    # eq. 10 as the paper writes it: alpha_i (z_{i-1} - sigma_{i-1} eps) / alpha_{i-1} + sigma_i eps
    eq_10 = cur.alpha * (z - nxt.sigma * eps) / nxt.alpha + cur.sigma * eps
    torch.testing.assert_close(steps.ddim_inversion_step(z, eps, nxt, cur), eq_10, rtol=1e-12, atol=1e-12)


def test_ddim_is_euler_in_edm_space():
    _, cur, nxt = levels([0.3, 0.6, 0.9])
    z, eps, _, _ = tensors(3)
    euler = nxt.alpha * (z / cur.alpha + (nxt.edm_sigma - cur.edm_sigma) * eps)
    torch.testing.assert_close(steps.ddim_step(z, eps, cur, nxt), euler)


def test_obelm_is_exact_for_constant_eps():
    """O-BELM reproduces x(s) = c + s * eps exactly (a linear ODE in EDM space)."""
    prev, cur, nxt = levels([0.2, 0.5, 0.8])
    c, eps, _, _ = tensors(4)
    z = {lv: lv.alpha * (c + lv.edm_sigma * eps) for lv in (prev, cur, nxt)}
    torch.testing.assert_close(steps.obelm_step(z[prev], z[cur], eps, prev, cur, nxt), z[nxt])


def test_heun_is_exact_for_eps_linear_in_sigma():
    """The trapezoidal rule integrates dx/ds = a + b s exactly."""
    cur, nxt = Level(1.0, 2.0), Level(1.0, 0.5)
    a, b, x, _ = tensors(5)
    # eps depends on the state only through s: here s is read off the level the state is evaluated at
    out = steps.heun_step(x, a + b * cur.sigma, lambda _: a + b * nxt.sigma, cur, nxt)
    exact = x + a * (nxt.sigma - cur.sigma) + 0.5 * b * (nxt.sigma**2 - cur.sigma**2)
    torch.testing.assert_close(out, exact)


@pytest.mark.parametrize("fn", [steps.bdia_inverse_step, steps.bdia_edm_inverse_step])
def test_inverse_refuses_gamma_zero(fn):
    prev, cur, nxt = levels([0.2, 0.5, 0.8])
    z = torch.zeros(2)
    args = (z, z, z, z, prev, cur, nxt, 0.0) if fn is steps.bdia_edm_inverse_step else (z, z, z, prev, cur, nxt, 0.0)
    with pytest.raises(ValueError, match="divides by gamma"):
        fn(*args)
