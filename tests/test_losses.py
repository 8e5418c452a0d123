"""The A2C loss against an independent NumPy computation, for categorical and Gaussian
policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learner.losses import A2CLoss, a2c_loss, total_loss


def _categorical_numpy(logits, actions):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return logp[np.arange(len(actions)), actions], -(np.exp(logp) * logp).sum(axis=1)


def _gaussian_numpy(mean, log_std, actions):
    std = np.exp(log_std)
    logp = -0.5 * ((actions - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    entropy = np.full(len(mean), (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum())
    return logp.sum(axis=1), entropy


def _numpy_loss(logp, ent, values, adv, ret, w):
    return {
        "policy_loss": -np.mean(logp * adv * w),
        "value_loss": np.mean((ret - values) ** 2),
        "entropy_loss": np.mean(ent),
    }


def _inputs(seed=0, n=32, a=4):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, a)),
        rng.integers(0, a, size=n),
        rng.normal(size=n),
        rng.normal(size=n),
        rng.normal(size=n),
        rng.random(n),
    )


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("weighted", [False, True])
def test_categorical_matches_numpy(weighted):
    logits, actions, values, adv, ret, w = _inputs()
    if not weighted:
        w = np.ones_like(w)
    dist = torch.distributions.Categorical(logits=_t(logits))
    logp = dist.log_prob(torch.tensor(actions))
    loss = a2c_loss(logp, dist.entropy(), _t(values), _t(adv), _t(ret), _t(w) if weighted else None)
    want = _numpy_loss(*_categorical_numpy(logits, actions), values, adv, ret, w)
    for name, expected in want.items():
        got = getattr(loss, name)
        assert got.ndim == 0
        assert got.item() == pytest.approx(expected, rel=1e-10), name


def test_gaussian_matches_numpy():
    rng = np.random.default_rng(4)
    mean, log_std = rng.normal(size=(16, 3)), rng.normal(scale=0.5, size=3)
    actions = mean + np.exp(log_std) * rng.normal(size=(16, 3))
    _, _, values, adv, ret, w = _inputs(4, n=16)
    normal = torch.distributions.Normal(_t(mean), _t(np.exp(log_std)).expand(16, 3))
    dist = torch.distributions.Independent(normal, 1)
    loss = a2c_loss(dist.log_prob(_t(actions)), dist.entropy(), *map(_t, (values, adv, ret, w)))
    want = _numpy_loss(*_gaussian_numpy(mean, log_std, actions), values, adv, ret, w)
    for name, expected in want.items():
        assert getattr(loss, name).item() == pytest.approx(expected, rel=1e-10), name


def test_gradients_flow_to_the_policy_and_values_only():
    logits, actions, values, adv, ret, _ = _inputs(1)
    lg = torch.tensor(logits, requires_grad=True)
    vs = torch.tensor(values, requires_grad=True)
    ad = torch.tensor(adv, requires_grad=True)
    rt = torch.tensor(ret, requires_grad=True)
    dist = torch.distributions.Categorical(logits=lg)
    loss = a2c_loss(dist.log_prob(torch.tensor(actions)), dist.entropy(), vs, ad, rt)
    total_loss(loss, value_coef=0.5, entropy_coef=0.01).backward()
    assert ad.grad is None and rt.grad is None  # targets are constants
    # d/d logits, in closed form: log-softmax gives onehot(a) - p for the policy term, and
    # dH/dz_j = -p_j (log p_j + H) for the entropy bonus (subtracted, times entropy_coef).
    n = len(actions)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    entropy = -(p * np.log(p)).sum(axis=1, keepdims=True)
    onehot = np.eye(logits.shape[1])[actions]
    d_policy = -(adv[:, None] / n) * (onehot - p)
    d_entropy = -p * (np.log(p) + entropy) / n
    np.testing.assert_allclose(lg.grad.numpy(), d_policy - 0.01 * d_entropy, rtol=1e-8)
    # d value_loss / d V = -2 (R - V) / N, scaled by value_coef.
    expected = -2 * (ret - values) / len(values) * 0.5
    np.testing.assert_allclose(vs.grad.numpy(), expected, rtol=1e-10)


def test_weights_scale_the_policy_gradient_only():
    logits, actions, values, adv, ret, _ = _inputs(2, n=4)
    logp, ent = map(_t, _categorical_numpy(logits, actions))
    plain = a2c_loss(logp, ent, _t(values), _t(adv), _t(ret))
    w = _t([1.0, 0.0, 1.0, 0.0])
    weighted = a2c_loss(logp, ent, _t(values), _t(adv), _t(ret), weights=w)
    assert weighted.value_loss.item() == plain.value_loss.item()
    assert weighted.entropy_loss.item() == plain.entropy_loss.item()
    # Samples 1 and 3 no longer pull on the policy: their advantages do not matter.
    moved_adv = adv.copy()
    moved_adv[[1, 3]] += 100.0
    moved = a2c_loss(logp, ent, _t(values), _t(moved_adv), _t(ret), weights=w)
    assert moved.policy_loss.item() == pytest.approx(weighted.policy_loss.item())
    assert plain.policy_loss.item() != pytest.approx(weighted.policy_loss.item())


def test_total_loss_combines_terms():
    loss = A2CLoss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0))
    assert total_loss(loss, 0.5, 0.1).item() == pytest.approx(1 + 0.5 * 2 - 0.1 * 3)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="a2c_loss expects"):
        a2c_loss(torch.zeros(4, 2), torch.zeros(4), *[torch.zeros(4)] * 3)
