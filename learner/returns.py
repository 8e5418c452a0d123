"""Bootstrapped return targets, time-major `[T, B]`.

Episode ends are kept apart: `terminated` means the MDP ended and nothing follows, so the
continuation value is zero; `truncated` means a time limit cut the episode, so the target
bootstraps from `final_values`, the value of the episode's true last observation (the
observation at `t + 1` already belongs to the next episode). Where both are set, termination
wins.
"""

from __future__ import annotations

import torch


def _continuation(values, terminated, truncated, final_values):
    """Value of the state after step t as seen from inside the episode: `[T, B]`."""
    nxt = torch.where(truncated, final_values, values[1:])
    return torch.where(terminated, torch.zeros_like(nxt), nxt)


def nstep_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """n-step bootstrapped returns to the end of the segment.

    Args:
        rewards:      [T, B] r_t.
        values:       [T + 1, B] V(s_t) for every observation of the segment and the bootstrap
                      observation after it.
        terminated:   [T, B] bool.
        truncated:    [T, B] bool.
        final_values: [T, B] V(final observation), read only where truncated.
        gamma:        discount.

    Returns:
        [T, B] with R_t = r_t + gamma * X, where X = 0 if terminated_t, final_values[t] if
        truncated_t, else R_{t+1}; and R_T = values[T].
    """
    _check_shapes(rewards, values, terminated, truncated, final_values)
    cut = terminated | truncated
    cont = _continuation(values, terminated, truncated, final_values)
    returns = torch.empty_like(rewards)
    nxt = values[-1]
    for t in range(rewards.shape[0] - 1, -1, -1):
        nxt = rewards[t] + gamma * torch.where(cut[t], cont[t], nxt)
        returns[t] = nxt
    return returns


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation with the same conventions as `nstep_returns`.

    delta_t = r_t + gamma * X_t - V(s_t), with X_t the continuation value (0, the final value,
    or V(s_{t+1})); A_t = delta_t + gamma * lam * A_{t+1}, the sum cut at episode ends and
    A_T = 0. `lam = 1` gives `nstep_returns - values[:-1]`.

    Returns:
        (advantages [T, B], returns [T, B]) where returns = advantages + values[:-1].
    """
    _check_shapes(rewards, values, terminated, truncated, final_values)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    cut = terminated | truncated
    deltas = rewards + gamma * _continuation(values, terminated, truncated, final_values)
    deltas = deltas - values[:-1]
    keep = (~cut).to(rewards.dtype) * (gamma * lam)
    advantages = torch.empty_like(rewards)
    acc = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        acc = deltas[t] + keep[t] * acc
        advantages[t] = acc
    return advantages, advantages + values[:-1]


def _check_shapes(rewards, values, terminated, truncated, final_values) -> None:
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [T, B], got shape {tuple(rewards.shape)}")
    t, b = rewards.shape
    if tuple(values.shape) != (t + 1, b):
        raise ValueError(f"values must be [T + 1, B] = {(t + 1, b)}, got {tuple(values.shape)}")
    for name, x in (("terminated", terminated), ("truncated", truncated)):
        if tuple(x.shape) != (t, b) or x.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool [T, B] = {(t, b)} tensor")
    if tuple(final_values.shape) != (t, b):
        raise ValueError(f"final_values must be [T, B] = {(t, b)}, got {tuple(final_values.shape)}")
