"""The A2C loss terms as a pure function of network outputs and targets."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class A2CLoss(NamedTuple):
    """Each term a 0-dim tensor. `entropy_loss` is the mean policy entropy (a bonus)."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy_loss: torch.Tensor


def a2c_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> A2CLoss:
    """Policy-gradient, value-regression and entropy terms of A2C.

    Args:
        logits:     [N, A] unnormalised log-probabilities of a categorical policy.
        actions:    [N] int64 actions taken.
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
    n = logits.shape[0]
    if logits.ndim != 2 or any(t.shape != (n,) for t in (actions, values, advantages, returns)):
        raise ValueError(
            "a2c_loss expects logits [N, A] and actions, values, advantages, returns [N]; got "
            f"{tuple(logits.shape)}, {tuple(actions.shape)}, {tuple(values.shape)}, "
            f"{tuple(advantages.shape)}, {tuple(returns.shape)}"
        )
    w = torch.ones_like(values) if weights is None else weights.detach()
    log_probs = F.log_softmax(logits, dim=-1)
    taken = log_probs.gather(1, actions.long().unsqueeze(1)).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return A2CLoss(
        policy_loss=-(taken * advantages.detach() * w).mean(),
        value_loss=(returns.detach() - values).pow(2).mean(),
        entropy_loss=entropy.mean(),
    )


def total_loss(loss: A2CLoss, value_coef: float, entropy_coef: float) -> torch.Tensor:
    """policy + value_coef * value - entropy_coef * entropy (entropy is maximised)."""
    return loss.policy_loss + value_coef * loss.value_loss - entropy_coef * loss.entropy_loss
