"""The A2C loss against an independent NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.losses import A2CLoss, a2c_loss, total_loss


def _numpy_loss(logits, actions, values, adv, ret, w):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    taken = logp[np.arange(len(actions)), actions]
    ent = -(p * logp).sum(axis=1)
    return (
        -np.mean(taken * adv * w),
        np.mean((ret - values) ** 2),
        np.mean(ent),
    )


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


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_numpy(weighted):
    logits, actions, values, adv, ret, w = _inputs()
    if not weighted:
        w = np.ones_like(w)
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    loss = a2c_loss(
        t(logits), torch.tensor(actions), t(values), t(adv), t(ret), t(w) if weighted else None
    )
    assert isinstance(loss, A2CLoss)
    for got, want in zip(loss, _numpy_loss(logits, actions, values, adv, ret, w), strict=True):
        assert got.ndim == 0
        assert got.item() == pytest.approx(want, rel=1e-10)


def test_gradients_flow_to_logits_and_values_only():
    logits, actions, values, adv, ret, _ = _inputs(1)
    lg = torch.tensor(logits, requires_grad=True)
    vs = torch.tensor(values, requires_grad=True)
    ad = torch.tensor(adv, requires_grad=True)
    rt = torch.tensor(ret, requires_grad=True)
    loss = a2c_loss(lg, torch.tensor(actions), vs, ad, rt)
    total_loss(loss, value_coef=0.5, entropy_coef=0.01).backward()
    assert lg.grad is not None and lg.grad.abs().sum() > 0
    assert vs.grad is not None and vs.grad.abs().sum() > 0
    assert ad.grad is None and rt.grad is None  # targets are constants
    # d value_loss / d V = -2 (R - V) / N, scaled by value_coef.
    expected = -2 * (ret - values) / len(values) * 0.5
    np.testing.assert_allclose(vs.grad.numpy(), expected, rtol=1e-10)


def test_weights_scale_the_policy_gradient_only():
    logits, actions, values, adv, ret, _ = _inputs(2, n=4)
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    args = (t(logits), torch.tensor(actions), t(values), t(adv), t(ret))
    plain = a2c_loss(*args)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    weighted = a2c_loss(*args, weights=w)
    assert weighted.value_loss.item() == plain.value_loss.item()
    assert weighted.entropy_loss.item() == plain.entropy_loss.item()
    # Samples 1 and 3 no longer pull on the policy: their advantages do not matter.
    moved_adv = adv.copy()
    moved_adv[[1, 3]] += 100.0
    moved = a2c_loss(args[0], args[1], args[2], t(moved_adv), args[4], weights=w)
    assert moved.policy_loss.item() == pytest.approx(weighted.policy_loss.item())
    assert plain.policy_loss.item() != pytest.approx(weighted.policy_loss.item())


def test_total_loss_combines_terms():
    loss = A2CLoss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0))
    assert total_loss(loss, 0.5, 0.1).item() == pytest.approx(1 + 0.5 * 2 - 0.1 * 3)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="a2c_loss expects"):
        a2c_loss(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), *[torch.zeros(4)] * 3)
