"""n-step returns, GAE and V-trace: hand-computed cases and independent forward-sum references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.returns import gae_advantages, nstep_returns, vtrace

G = 0.9


def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def _case(rewards, values, terminated, truncated, final_values):
    """Single-env helpers: lists of length T (values T+1) -> [T, 1] tensors."""
    col = lambda x, dt=torch.float32: _t(x, dt).reshape(-1, 1)  # noqa: E731
    return (
        col(rewards),
        col(values),
        col(terminated, torch.bool),
        col(truncated, torch.bool),
        col(final_values),
    )


def _returns(*args):
    return nstep_returns(*_case(*args), gamma=G).reshape(-1).tolist()


def test_no_episode_end_bootstraps_from_last_value():
    out = _returns([1, 2, 3], [0, 0, 0, 10], [0, 0, 0], [0, 0, 0], [0, 0, 0])
    r2 = 3 + G * 10
    r1 = 2 + G * r2
    r0 = 1 + G * r1
    assert out == pytest.approx([r0, r1, r2])


def test_termination_cuts_the_return_to_zero():
    out = _returns([1, 2, 3], [0, 0, 7, 10], [0, 1, 0], [0, 0, 0], [0, 99, 0])
    r2 = 3 + G * 10
    r1 = 2.0  # terminated: nothing after, final_values ignored
    assert out == pytest.approx([1 + G * r1, r1, r2])


def test_truncation_bootstraps_from_the_final_observation_value():
    # values[2] = 7 is the next episode's reset obs and must not be used.
    out = _returns([1, 2, 3], [0, 0, 7, 10], [0, 0, 0], [0, 1, 0], [0, 5, 0])
    r2 = 3 + G * 10
    r1 = 2 + G * 5
    assert out == pytest.approx([1 + G * r1, r1, r2])


def test_terminated_and_truncated_at_the_same_step_is_terminal():
    out = _returns([1, 2], [0, 0, 10], [0, 1], [0, 1], [0, 5])
    assert out == pytest.approx([1 + G * 2, 2])


def test_episode_ends_in_the_first_step():
    out = _returns([1, 2, 3], [0, 4, 0, 10], [1, 0, 0], [0, 0, 0], [0, 0, 0])
    assert out == pytest.approx([1, 2 + G * (3 + G * 10), 3 + G * 10])
    out = _returns([1, 2, 3], [0, 4, 0, 10], [0, 0, 0], [1, 0, 0], [6, 0, 0])
    assert out[0] == pytest.approx(1 + G * 6)


def test_episode_ends_in_the_last_step():
    # Truncated at the last step: bootstrap from final_values, not from values[T].
    out = _returns([1, 2], [0, 0, 10], [0, 0], [0, 1], [0, 5])
    assert out == pytest.approx([1 + G * (2 + G * 5), 2 + G * 5])
    out = _returns([1, 2], [0, 0, 10], [0, 1], [0, 0], [0, 0])
    assert out == pytest.approx([1 + G * 2, 2])


def _reference_returns(r, v, term, trunc, fv, gamma):
    """Forward sums, one (t, b) at a time: a different formulation from the backward scan."""
    t_len, b_len = r.shape
    out = np.zeros_like(r)
    for b in range(b_len):
        for t in range(t_len):
            total, disc = 0.0, 1.0
            for k in range(t, t_len):
                total += disc * r[k, b]
                disc *= gamma
                if term[k, b]:
                    break
                if trunc[k, b]:
                    total += disc * fv[k, b]
                    break
            else:
                total += disc * v[t_len, b]
            out[t, b] = total
    return out


def _reference_gae(r, v, term, trunc, fv, gamma, lam):
    t_len, b_len = r.shape
    nxt = np.where(term, 0.0, np.where(trunc, fv, v[1:]))
    delta = r + gamma * nxt - v[:-1]
    out = np.zeros_like(r)
    for b in range(b_len):
        for t in range(t_len):
            total, disc = 0.0, 1.0
            for k in range(t, t_len):
                total += disc * delta[k, b]
                if term[k, b] or trunc[k, b]:
                    break
                disc *= gamma * lam
            out[t, b] = total
    return out


def _random_batch(seed, t_len=12, b_len=6):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(t_len, b_len))
    v = rng.normal(size=(t_len + 1, b_len))
    term = rng.random((t_len, b_len)) < 0.15
    trunc = rng.random((t_len, b_len)) < 0.15
    fv = rng.normal(size=(t_len, b_len))
    return r, v, term, trunc, fv


def _tensors(r, v, term, trunc, fv):
    f = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return f(r), f(v), torch.tensor(term), torch.tensor(trunc), f(fv)


@pytest.mark.parametrize("seed", range(5))
def test_nstep_returns_match_the_reference(seed):
    batch = _random_batch(seed)
    got = nstep_returns(*_tensors(*batch), gamma=0.97).numpy()
    np.testing.assert_allclose(got, _reference_returns(*batch, 0.97), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_matches_the_reference(lam):
    batch = _random_batch(7)
    adv, ret = gae_advantages(*_tensors(*batch), gamma=0.97, lam=lam)
    expected = _reference_gae(*batch, 0.97, lam)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret.numpy(), expected + batch[1][:-1], rtol=1e-10, atol=1e-10)


def test_gae_with_lambda_one_equals_nstep_returns():
    batch = _tensors(*_random_batch(3))
    adv, ret = gae_advantages(*batch, gamma=0.99, lam=1.0)
    nstep = nstep_returns(*batch, gamma=0.99)
    torch.testing.assert_close(ret, nstep)
    torch.testing.assert_close(adv, nstep - batch[1][:-1])


def test_gae_hand_computed_with_truncation():
    # T=2: step 0 truncated (final value 5), step 1 ongoing; lam = 0.5.
    r, v, term, trunc, fv = _case([1, 2], [1, 3, 4], [0, 0], [1, 0], [5, 0])
    adv, _ = gae_advantages(r, v, term, trunc, fv, gamma=G, lam=0.5)
    d1 = 2 + G * 4 - 3
    d0 = 1 + G * 5 - 1  # the chain is cut at the truncation: no lam term
    assert adv.reshape(-1).tolist() == pytest.approx([d0, d1])


def test_shapes_are_checked():
    r, v, term, trunc, fv = _tensors(*_random_batch(0))
    with pytest.raises(ValueError, match="values must be"):
        nstep_returns(r, v[:-1], term, trunc, fv, 0.9)
    with pytest.raises(ValueError, match="terminated"):
        nstep_returns(r, v, term.float(), trunc, fv, 0.9)
    with pytest.raises(ValueError, match="lam"):
        gae_advantages(r, v, term, trunc, fv, 0.9, 1.5)


# --- V-trace --------------------------------------------------------------------------------


def _reference_vtrace(mu, pi, r, v, term, trunc, fv, gamma, rho_bar, c_bar, lam):
    """The paper's definition as a forward sum, one (s, b) at a time:
    v_s = V(x_s) + sum_t gamma^(t-s) (prod_{i=s}^{t-1} c_i) delta_t, cut at episode ends."""
    t_len, b_len = r.shape
    ratio = np.exp(pi - mu)
    rho, c = np.minimum(rho_bar, ratio), lam * np.minimum(c_bar, ratio)
    nxt = np.where(term, 0.0, np.where(trunc, fv, v[1:]))
    delta = rho * (r + gamma * nxt - v[:-1])
    vs = np.zeros_like(r)
    for b in range(b_len):
        for s in range(t_len):
            total, coef = v[s, b], 1.0
            for t in range(s, t_len):
                total += coef * delta[t, b]
                if term[t, b] or trunc[t, b]:
                    break
                coef *= gamma * c[t, b]
            vs[s, b] = total
    adv = np.zeros_like(r)
    for b in range(b_len):
        for s in range(t_len):
            after = vs[s + 1, b] if s + 1 < t_len else v[t_len, b]
            after = 0.0 if term[s, b] else fv[s, b] if trunc[s, b] else after
            adv[s, b] = r[s, b] + gamma * after - v[s, b]
    return vs, adv, rho


def _logps(seed, shape, spread=0.5):
    rng = np.random.default_rng(seed)
    mu = np.log(rng.uniform(0.05, 1.0, size=shape))
    return mu, mu + rng.normal(scale=spread, size=shape)


@pytest.mark.parametrize(
    ("rho_bar", "c_bar", "lam"), [(1.0, 1.0, 1.0), (2.0, 0.5, 1.0), (1.0, 1.0, 0.9), (0.5, 2, 1)]
)
def test_vtrace_matches_the_reference(rho_bar, c_bar, lam):
    batch = _random_batch(11)
    mu, pi = _logps(11, batch[0].shape)
    f = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    got = vtrace(f(mu), f(pi), *_tensors(*batch), 0.97, rho_bar, c_bar, lam)
    vs, adv, rho = _reference_vtrace(mu, pi, *batch, 0.97, rho_bar, c_bar, lam)
    for name, want in (("vs", vs), ("pg_advantages", adv), ("rhos", rho)):
        np.testing.assert_allclose(getattr(got, name).numpy(), want, rtol=1e-10, atol=1e-10)


def test_vtrace_on_policy_equals_nstep_returns():
    batch = _tensors(*_random_batch(5))
    logp = torch.log(torch.rand(batch[0].shape, dtype=torch.float64))
    got = vtrace(logp, logp, *batch, gamma=0.99)
    nstep = nstep_returns(*batch, gamma=0.99)
    torch.testing.assert_close(got.vs, nstep)
    torch.testing.assert_close(got.pg_advantages, nstep - batch[1][:-1])
    torch.testing.assert_close(got.rhos, torch.ones_like(logp))


def test_vtrace_hand_computed_with_clipping_and_truncation():
    # T=2, one env. Step 0: pi/mu = 2, clipped to rho = c = 1; step 1: pi/mu = 0.5, and a
    # truncation there bootstraps from the final value 5.
    r, v, term, trunc, fv = _case([1, 2], [1, 3, 4], [0, 0], [0, 1], [0, 5])
    mu = torch.log(torch.tensor([[0.25], [0.5]]))
    pi = torch.log(torch.tensor([[0.5], [0.25]]))
    got = vtrace(mu, pi, r, v, term, trunc, fv, gamma=G)
    d1 = 0.5 * (2 + G * 5 - 3)
    d0 = 1.0 * (1 + G * 3 - 1)
    v1 = 3 + d1
    v0 = 1 + d0 + G * 1.0 * d1
    assert got.vs.reshape(-1).tolist() == pytest.approx([v0, v1])
    assert got.pg_advantages.reshape(-1).tolist() == pytest.approx([1 + G * v1 - 1, 2 + G * 5 - 3])
    assert got.rhos.reshape(-1).tolist() == pytest.approx([1.0, 0.5])


def test_vtrace_checks_the_log_prob_shapes():
    r, v, term, trunc, fv = _tensors(*_random_batch(0))
    with pytest.raises(ValueError, match="target_logp must be"):
        vtrace(torch.zeros_like(r), torch.zeros(3), r, v, term, trunc, fv, 0.9)
