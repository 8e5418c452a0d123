"""DI-engine's A2C API (`learner.a2c_error`): the seed document's test, a weighted case
checked by hand, and agreement with troupe's own `a2c_loss`."""

from __future__ import annotations

import math

import pytest
import torch

from learner.a2c_error import a2c_data, a2c_error, a2c_loss
from learner.losses import a2c_loss as troupe_a2c_loss

WEIGHTS = [None, torch.rand(4) + 1]


@pytest.mark.parametrize("weight", WEIGHTS, ids=["unweighted", "weighted"])
def test_a2c(weight):
    """DI-engine's own test (ding/rl_utils/tests/test_a2c.py), ported: B=4, 32 actions, every
    term a 0-dim tensor, and the gradients of their sum reach the logits and the values."""
    B, N = 4, 32
    logit = torch.randn(B, N).requires_grad_(True)
    action = torch.randint(0, N, size=(B,))
    value = torch.randn(B).requires_grad_(True)
    adv = torch.rand(B)
    return_ = torch.randn(B) * 2
    data = a2c_data(logit, action, value, adv, return_, weight)
    loss = a2c_error(data)
    assert isinstance(loss, a2c_loss)
    assert all(term.shape == () for term in loss)
    assert logit.grad is None
    assert value.grad is None
    total_loss = sum(loss)
    total_loss.backward()
    assert isinstance(logit.grad, torch.Tensor)
    assert isinstance(value.grad, torch.Tensor)


def test_the_weight_scales_every_term_by_hand():
    """Two samples of two actions, uniform and certain policies, computed on paper."""
    logit = torch.tensor([[0.0, 0.0], [0.0, -1e9]])  # pi = (.5, .5) and (1, 0)
    action = torch.tensor([1, 0])
    value = torch.tensor([1.0, 0.0])
    adv = torch.tensor([2.0, 3.0])
    return_ = torch.tensor([3.0, 1.0])
    weight = torch.tensor([0.5, 2.0])
    loss = a2c_error(a2c_data(logit, action, value, adv, return_, weight))
    log_half = math.log(0.5)
    # policy: -mean(log pi(a) * adv * w) = -(log .5 * 2 * .5 + 0 * 3 * 2) / 2
    assert loss.policy_loss.item() == pytest.approx(-(log_half * 2 * 0.5) / 2)
    # value: mean((R - V)^2 * w) = ((2^2) * .5 + (1^2) * 2) / 2 = 2
    assert loss.value_loss.item() == pytest.approx(2.0)
    # entropy: mean(H * w) = (ln 2 * .5 + 0 * 2) / 2
    assert loss.entropy_loss.item() == pytest.approx(math.log(2) * 0.5 / 2)


def test_unweighted_it_is_troupes_a2c_loss():
    torch.manual_seed(0)
    logit, value = torch.randn(6, 5), torch.randn(6)
    action, adv, return_ = torch.randint(0, 5, (6,)), torch.randn(6), torch.randn(6)
    ours = a2c_error(a2c_data(logit, action, value, adv, return_, None))
    dist = torch.distributions.Categorical(logits=logit)
    theirs = troupe_a2c_loss(
        log_probs=dist.log_prob(action),
        entropy=dist.entropy(),
        values=value,
        advantages=adv,
        returns=return_,
    )
    for a, b in zip(ours, theirs, strict=True):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_advantages_and_returns_carry_no_gradient():
    adv = torch.ones(3, requires_grad=True)
    return_ = torch.ones(3, requires_grad=True)
    data = a2c_data(torch.zeros(3, 2, requires_grad=True), torch.zeros(3, dtype=torch.int64),
                    torch.zeros(3, requires_grad=True), adv, return_, None)  # fmt: skip
    sum(a2c_error(data)).backward()
    assert adv.grad is None and return_.grad is None
