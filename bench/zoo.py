"""rl-baselines3-zoo's A2C: its published scores, its hyper-parameters, and Stable-Baselines3's
A2C trained at them, to run beside troupe on the same machine.

Scores are the zoo's benchmark.md (one trained agent each, deterministic evaluation except
Atari); hyper-parameters are its hyperparams/a2c.yml (the MuJoCo rows: `normalize: true`,
which the zoo turns into VecNormalize's defaults, observations and rewards both normalised;
SB3's defaults otherwise). The zoo's LunarLander-v2 and
MuJoCo -v3 rows stand for gymnasium's LunarLander-v3 and -v5 here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ZooRow:
    score: float | None
    """The zoo's published mean return; None where it publishes no A2C row for the env."""
    frames: int
    n_envs: int = 1
    norm_obs: bool = False
    norm_reward: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    """A2C(...) arguments; `lin_lr` becomes a linear decay of the learning rate to 0."""
    note: str = ""


_PENDULUM = {
    "n_steps": 8,
    "gamma": 0.9,
    "gae_lambda": 0.9,
    "vf_coef": 0.4,
    "ent_coef": 0.0,
    "max_grad_norm": 0.5,
    "use_rms_prop": True,
    "normalize_advantage": False,
    "lin_lr": 7e-4,
    "use_sde": True,
    "policy_kwargs": {"log_std_init": -2, "ortho_init": False},
}

ZOO_A2C: dict[str, ZooRow] = {
    "CartPole-v1": ZooRow(500.0, 500_000, n_envs=8, kwargs={"ent_coef": 0.0}),
    "LunarLander-v3": ZooRow(
        155.8,
        200_000,
        n_envs=8,
        kwargs={"gamma": 0.995, "n_steps": 5, "lin_lr": 8.3e-4, "ent_coef": 1e-5},
    ),
    "MountainCar-v0": ZooRow(
        -111.3, 1_000_000, n_envs=16, norm_obs=True, norm_reward=True, kwargs={"ent_coef": 0.0}
    ),
    "Pendulum-v1": ZooRow(
        -163.0, 1_000_000, n_envs=8, norm_obs=True, norm_reward=True, kwargs=_PENDULUM
    ),
    "HalfCheetah-v5": ZooRow(3041.2, 1_000_000, norm_obs=True, norm_reward=True),
    "Hopper-v5": ZooRow(733.5, 1_000_000, norm_obs=True, norm_reward=True),
    "Walker2d-v5": ZooRow(
        None,
        1_000_000,
        norm_obs=True,
        norm_reward=True,
        note="no MuJoCo Walker2d A2C row in the zoo",
    ),
    "ALE/Pong-v5": ZooRow(17.3, 10_000_000),
    "ALE/Breakout-v5": ZooRow(279.8, 10_000_000),
}


def zoo_row(env_id: str) -> ZooRow | None:
    return ZOO_A2C.get(env_id.rpartition(":")[2])


def sb3_a2c(env_id: str, row: ZooRow, seed: int, env_kwargs: dict | None = None, **changes):
    """SB3's A2C at the zoo's settings for `row` (with `changes` to its arguments) on its
    training envs, VecNormalize where the zoo normalises; `env_kwargs` go to `gym.make`."""
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    kwargs = {**row.kwargs, **changes}
    if "lin_lr" in kwargs:
        start = kwargs.pop("lin_lr")
        kwargs["learning_rate"] = lambda remaining: remaining * start
    env = make_vec_env(env_id, n_envs=row.n_envs, seed=seed, env_kwargs=env_kwargs)
    if row.norm_obs or row.norm_reward:
        gamma = kwargs.get("gamma", 0.99)
        env = VecNormalize(env, norm_obs=row.norm_obs, norm_reward=row.norm_reward, gamma=gamma)
    return A2C("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)


def sb3_train_and_evaluate(
    env_id: str, row: ZooRow, seed: int, episodes: int, deterministic: bool
) -> dict:
    """SB3's A2C at the zoo's settings for `row.frames` frames, then `episodes` fresh episodes
    (seeds from 100,000 + seed, as troupe's final evaluation) with the observation statistics
    frozen. Wall time counts building the envs, training and nothing else."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    began = time.perf_counter()
    model = sb3_a2c(env_id, row, seed)
    env = model.get_env()
    model.learn(total_timesteps=row.frames)
    seconds = time.perf_counter() - began

    eval_env = make_vec_env(env_id, n_envs=1, seed=100_000 + seed)
    if isinstance(env, VecNormalize):
        eval_env = VecNormalize(eval_env, norm_obs=row.norm_obs, norm_reward=False, training=False)
        eval_env.obs_rms = env.obs_rms
    returns, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=episodes, deterministic=deterministic,
        return_episode_rewards=True,
    )  # fmt: skip
    env.close()
    eval_env.close()
    return {
        "seed": seed,
        "env": env_id,
        "final_return": float(np.mean(returns)),
        "final_return_std": float(np.std(returns)),
        "frames": model.num_timesteps,
        "seconds": seconds,
        "fps": model.num_timesteps / seconds,
    }
