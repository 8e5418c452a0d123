"""The A2C loss terms as a pure function of network outputs and targets."""

from __future__ import annotations

from typing import NamedTuple

import torch


class A2CLoss(NamedTuple):
    """Each term a 0-dim tensor. `entropy_loss` is the mean policy entropy (a bonus)."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy_loss: torch.Tensor


def a2c_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> A2CLoss:
    """Policy-gradient, value-regression and entropy terms of A2C, for any action
    distribution (categorical or Gaussian: the caller evaluates it).

    Args:
        log_probs:  [N] log pi(a|s) of the actions taken (gradients flow).
        entropy:    [N] H(pi(.|s)) (gradients flow).
        values:     [N] V(s) predicted by the critic (gradients flow).
        advantages: [N] treated as constants.
        returns:    [N] value targets, treated as constants.
        weights:    [N] optional importance weights of the policy gradient (V-trace's
                    truncated rho), treated as constants; 1 when None. They correct the
                    gradient of off-policy samples; the value and entropy terms are not
                    weighted (as in IMPALA), the value targets carry their own correction.

    Returns:
        policy_loss  = -mean(log pi(a|s) * adv * w)
        value_loss   =  mean((R - V)^2)
        entropy_loss =  mean(H(pi(.|s)))
    """
    n = log_probs.shape[0]
    shapes = [tuple(t.shape) for t in (log_probs, entropy, values, advantages, returns)]
    if any(shape != (n,) for shape in shapes):
        raise ValueError(
            "a2c_loss expects log_probs, entropy, values, advantages and returns of shape [N]; "
            f"got {', '.join(map(str, shapes))}"
        )
    w = torch.ones_like(values) if weights is None else weights.detach()
    return A2CLoss(
        policy_loss=-(log_probs * advantages.detach() * w).mean(),
        value_loss=(returns.detach() - values).pow(2).mean(),
        entropy_loss=entropy.mean(),
    )


def total_loss(loss: A2CLoss, value_coef: float, entropy_coef: float) -> torch.Tensor:
    """policy + value_coef * value - entropy_coef * entropy (entropy is maximised)."""
    return loss.policy_loss + value_coef * loss.value_loss - entropy_coef * loss.entropy_loss
