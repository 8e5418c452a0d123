"""Stable-Baselines3's A2C as an independent reference for troupe's update
(tests/test_sb3_reference.py).

SB3 trains at rl-baselines3-zoo's settings (`bench.zoo`) and collects one rollout; these helpers
copy its weights and RMSprop state onto a troupe `Learner`, turn the rollout into a `Segment`,
and run both updates keeping what each computes on the way.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback

from bench.zoo import ZooRow, sb3_a2c
from learner.core import Segment
from learner.learner import Learner

TOTAL_FRAMES = 1_000_000
"""The run length both sides' linear learning rates decay over (the zoo's Pendulum row)."""

SB3_TO_TROUPE = {
    "mlp_extractor.policy_net.0.weight": "policy_torso.0.weight",
    "mlp_extractor.policy_net.0.bias": "policy_torso.0.bias",
    "mlp_extractor.policy_net.2.weight": "policy_torso.2.weight",
    "mlp_extractor.policy_net.2.bias": "policy_torso.2.bias",
    "mlp_extractor.value_net.0.weight": "value_torso.0.weight",
    "mlp_extractor.value_net.0.bias": "value_torso.0.bias",
    "mlp_extractor.value_net.2.weight": "value_torso.2.weight",
    "mlp_extractor.value_net.2.bias": "value_torso.2.bias",
    "action_net.weight": "policy_head.weight",
    "action_net.bias": "policy_head.bias",
    "value_net.weight": "value_head.weight",
    "value_net.bias": "value_head.bias",
    "log_std": "log_std",
}
"""SB3's ActorCriticPolicy parameter names -> troupe's ActorCritic names (separate torsos)."""


class StepRecorder(BaseCallback):
    """Each env step as SB3's rollout loop receives it, copied before the loop adds the
    truncation bootstrap gamma * V(final obs) into the rewards in place: troupe is given the
    final observation instead and bootstraps itself. With VecNormalize the rewards and final
    observations here are already normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, Any]] = []

    def _on_step(self) -> bool:
        dones, infos = self.locals["dones"], self.locals["infos"]
        ends = zip(dones, infos, strict=True)
        truncated = np.array([bool(d and i.get("TimeLimit.truncated")) for d, i in ends])
        self.steps.append(
            {
                "rewards": np.array(self.locals["rewards"], dtype=np.float32),
                "terminated": np.asarray(dones, dtype=bool) & ~truncated,
                "truncated": truncated,
                "final_obs": {
                    i: np.array(info["terminal_observation"], dtype=np.float32)
                    for i, info in enumerate(infos)
                    if truncated[i]
                },
            }
        )
        return True


def build_sb3(env_id: str, row: ZooRow, seed: int, time_limit: int, **changes: Any) -> A2C:
    """SB3's A2C as `bench.zoo` builds it for `row` (with `changes` to its arguments), on envs
    cut at `time_limit` steps, set up as `learn()` sets up before its first rollout."""
    model = sb3_a2c(env_id, row, seed, {"max_episode_steps": time_limit}, **changes)
    model._setup_learn(total_timesteps=TOTAL_FRAMES)
    return model


def collect(model: A2C) -> list[dict[str, Any]]:
    """One rollout into SB3's buffer, as an iteration of `learn()` collects it; its steps."""
    recorder = StepRecorder()
    recorder.init_callback(model)
    model.collect_rollouts(model.env, recorder, model.rollout_buffer, model.n_steps)
    model._update_current_progress_remaining(model.num_timesteps, TOTAL_FRAMES)
    return recorder.steps


def segment(model: A2C, steps: list[dict[str, Any]]) -> Segment:
    """The rollout in SB3's buffer as a troupe Segment: the observations acted on (plus the
    bootstrap one), the unclipped sampled actions, the rewards before SB3's bootstrap term."""
    rb = model.rollout_buffer
    t, b = rb.rewards.shape
    obs = np.concatenate([rb.observations, model._last_obs[None]]).astype(np.float32)
    actions = rb.actions.astype(np.float32)
    if isinstance(model.action_space, gym.spaces.Discrete):
        actions = actions[..., 0].astype(np.int64)  # SB3 keeps them as floats [T, B, 1]
    truncated = np.stack([s["truncated"] for s in steps])
    final_index = np.flatnonzero(truncated.reshape(-1))
    final_obs = [steps[i // b]["final_obs"][i % b] for i in final_index]
    return Segment(
        obs=obs,
        actions=actions,
        rewards=np.stack([s["rewards"] for s in steps]),
        terminated=np.stack([s["terminated"] for s in steps]),
        truncated=truncated,
        valid=np.ones((t, b), dtype=bool),
        behaviour_logp=rb.log_probs.astype(np.float32),
        final_obs=np.stack(final_obs) if final_obs else np.empty((0, *obs.shape[2:]), np.float32),
        final_index=final_index.astype(np.int64),
        episode_returns=np.empty(0, np.float32),
        episode_lengths=np.empty(0, np.int64),
        policy_version=0,
        actor_id=0,
    ).validate()


@torch.no_grad()
def sb3_evaluate(model: A2C, seg: Segment) -> dict[str, torch.Tensor]:
    """SB3's policy, before its update, on the segment: values [T + 1, B] and the log-probs
    and entropies [T * B] of the actions taken (time-major, as troupe flattens them)."""
    t, b = seg.rewards.shape
    obs = torch.as_tensor(seg.obs).reshape((t + 1) * b, -1)
    actions = torch.as_tensor(seg.actions).reshape(t * b, *seg.actions.shape[2:])
    values, log_probs, entropy = model.policy.evaluate_actions(obs[: t * b], actions)
    last = model.policy.predict_values(obs[t * b :])
    values = torch.cat([values.flatten(), last.flatten()]).reshape(t + 1, b)
    return {"values": values, "log_probs": log_probs, "entropy": entropy}


def copy_state(model: A2C, learner: Learner) -> None:
    """SB3's weights and RMSprop state (per-parameter step and square average) onto troupe's
    learner, by parameter name."""
    sb3_names = {id(p): SB3_TO_TROUPE[n] for n, p in model.policy.named_parameters()}
    params = dict(learner.model.named_parameters())
    assert sorted(sb3_names.values()) == sorted(params), "SB3's and troupe's parameters differ"
    with torch.no_grad():
        for name, p in model.policy.named_parameters():
            target = params[SB3_TO_TROUPE[name]]
            assert target.shape == p.shape, f"{name}: SB3 {p.shape}, troupe {target.shape}"
            target.copy_(p)
    optimizer = model.policy.optimizer
    by_name = {sb3_names[id(p)]: s for p, s in optimizer.state.items() if s}
    order = list(params)  # troupe's Optimizer holds the parameters in this order
    state = {i: copy.deepcopy(by_name[n]) for i, n in enumerate(order) if n in by_name}
    groups = [{"params": list(range(len(order)))}]
    learner.optimizer.load_state_dict({"state": state, "param_groups": groups})


def sb3_train(model: A2C) -> dict[str, Any]:
    """SB3's `train()`, keeping the clipped gradients and learning rate at its optimiser step,
    its logged loss terms and its parameters and RMSprop state after the step (troupe names)."""
    kept: dict[str, Any] = {}
    named = [(SB3_TO_TROUPE[n], p) for n, p in model.policy.named_parameters()]

    def before_step(optimizer, args, kwargs):
        kept["grads"] = {n: p.grad.detach().clone() for n, p in named}
        kept["lr"] = optimizer.param_groups[0]["lr"]

    handle = model.policy.optimizer.register_step_pre_hook(before_step)
    try:
        model.train()
    finally:
        handle.remove()
    logged = model.logger.name_to_value
    kept["losses"] = {
        "policy": logged["train/policy_loss"],
        "value": logged["train/value_loss"],
        "entropy": -logged["train/entropy_loss"],  # SB3 logs minus the mean entropy
    }
    # A2C.train's own sum, which SB3 does not log.
    kept["losses"]["total"] = (
        logged["train/policy_loss"]
        + model.ent_coef * logged["train/entropy_loss"]
        + model.vf_coef * logged["train/value_loss"]
    )
    kept["params"] = {n: p.detach().clone() for n, p in named}
    kept["square_avg"] = {
        n: model.policy.optimizer.state[p]["square_avg"].clone() for n, p in named
    }
    return kept


def troupe_update(learner: Learner, seg: Segment) -> dict[str, Any]:
    """`Learner.update` on `seg` as it runs in training, keeping what its steps return (the
    evaluated batch, the targets) and the clipped gradients at the optimiser step."""
    kept: dict[str, Any] = {}

    def keep(name, method):
        def kept_method(*args, **kwargs):
            kept[name] = method(*args, **kwargs)
            return kept[name]

        return kept_method

    learner._evaluate = keep("evaluated", learner._evaluate)
    learner._targets = keep("targets", learner._targets)
    step = learner.optimizer.step

    def step_keeping_grads():
        kept["grads"] = {n: p.grad.detach().clone() for n, p in learner.model.named_parameters()}
        step()

    learner.optimizer.step = step_keeping_grads
    kept["stats"] = learner.update([seg])
    missing = {"evaluated", "targets", "grads"} - set(kept)
    assert not missing, f"Learner.update no longer goes through {missing}: update this test"
    kept["params"] = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    names = list(dict(learner.model.named_parameters()))
    kept["square_avg"] = {names[i]: s["square_avg"] for i, s in learner.optimizer.state.items()}
    return kept
