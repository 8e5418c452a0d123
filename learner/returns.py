"""Bootstrapped return targets, time-major `[T, B]`.

Episode ends are kept apart: `terminated` means the MDP ended and nothing follows, so the
continuation value is zero; `truncated` means a time limit cut the episode, so the target
bootstraps from `final_values`, the value of the episode's true last observation (the
observation at `t + 1` already belongs to the next episode). Where both are set, termination
wins.
"""

from __future__ import annotations

from typing import NamedTuple

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
    advantages = _backward_sum(deltas, (~cut).to(rewards.dtype) * (gamma * lam))
    return advantages, advantages + values[:-1]


class VTrace(NamedTuple):
    """V-trace targets, each `[T, B]`."""

    vs: torch.Tensor
    """Value targets v_s."""
    pg_advantages: torch.Tensor
    """r_t + gamma * X_t - V(s_t), X_t the continuation with v_{t+1} in place of V(s_{t+1})."""
    rhos: torch.Tensor
    """Truncated importance weights min(rho_bar, pi/mu): the policy gradient's weights."""


def vtrace(
    behaviour_logp: torch.Tensor,
    target_logp: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    lam: float = 1.0,
) -> VTrace:
    """V-trace off-policy targets (Espeholt et al. 2018, IMPALA), with episode ends as in
    `nstep_returns`.

    Args:
        behaviour_logp: [T, B] log mu(a_t|s_t) of the policy that acted.
        target_logp:    [T, B] log pi(a_t|s_t) of the policy being learned.
        rewards, values, terminated, truncated, final_values, gamma: as in `nstep_returns`.
        rho_bar:        truncation of the importance weights in the TD errors and the policy
                        gradient (sets the fixed point the value converges to).
        c_bar:          truncation of the trace coefficients (sets the contraction speed).
        lam:            scales the traces, c_t = lam * min(c_bar, pi/mu) (IMPALA's lambda).

    With rho_t = min(rho_bar, pi/mu), c_t = lam * min(c_bar, pi/mu) and
    delta_t = rho_t (r_t + gamma X_t - V(s_t)), X_t the continuation value (0 if terminated,
    V(final obs) if truncated, else V(s_{t+1})):

        v_t - V(s_t) = delta_t + gamma c_t (v_{t+1} - V(s_{t+1})), cut at episode ends,
        v_T = V(s_T).

    When mu == pi (and rho_bar, c_bar >= 1, lam = 1), v_t equals `nstep_returns` and
    pg_advantages equal the n-step advantages.
    """
    _check_shapes(rewards, values, terminated, truncated, final_values)
    for name, x in (("behaviour_logp", behaviour_logp), ("target_logp", target_logp)):
        if x.shape != rewards.shape:
            raise ValueError(f"{name} must be [T, B] = {tuple(rewards.shape)}")
    ratio = torch.exp(target_logp - behaviour_logp)
    rhos = ratio.clamp(max=rho_bar)
    cs = lam * ratio.clamp(max=c_bar)
    cut = terminated | truncated
    deltas = rhos * (rewards + gamma * _continuation(values, terminated, truncated, final_values))
    deltas = deltas - rhos * values[:-1]
    vs = values[:-1] + _backward_sum(deltas, (~cut).to(rewards.dtype) * gamma * cs)
    next_vs = torch.cat([vs[1:], values[-1:]])
    cont = torch.where(truncated, final_values, next_vs)
    cont = torch.where(terminated, torch.zeros_like(cont), cont)
    return VTrace(vs=vs, pg_advantages=rewards + gamma * cont - values[:-1], rhos=rhos)


def _backward_sum(deltas: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """[T, B] x_t = deltas_t + decay_t * x_{t+1}, with x_T = 0: GAE's and V-trace's scan."""
    out = torch.empty_like(deltas)
    acc = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        acc = deltas[t] + decay[t] * acc
        out[t] = acc
    return out


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
