"""Creating vectorised gymnasium environments with a known autoreset convention."""

from __future__ import annotations

import importlib

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from actors.config import EnvConfig

SUPPORTED_AUTORESET = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


def make_vector_env(config: EnvConfig, num_envs: int) -> gym.vector.VectorEnv:
    """`num_envs` copies of the configured env as one vector env.

    Copies stepped by gymnasium's `SyncVectorEnv` use the same-step autoreset; native vector
    envs keep their own mode (CartPole's resets on the next step), which the rollout worker
    handles. Raises ValueError naming `env.id` when the id is unknown.
    """
    env_id = registered_id(config)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:
        raise ValueError(f"env.id={config.id!r} is not a registered gymnasium env: {err}") from err
    native = spec.vector_entry_point is not None
    if config.vectorization == "native" and not native:
        raise ValueError(
            f"env.vectorization='native' but {config.id} has no native vectorised "
            "implementation; use 'auto' or 'sync'"
        )
    try:
        if native and config.vectorization != "sync":
            env = gym.make_vec(
                env_id, num_envs, vectorization_mode="vector_entry_point", **config.kwargs
            )
        else:
            env = gym.make_vec(
                env_id,
                num_envs,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                **config.kwargs,
            )
    except TypeError as err:
        raise ValueError(
            f"env.kwargs={config.kwargs!r} are not accepted by {config.id}: {err}"
        ) from err
    except gym.error.Error as err:
        raise ValueError(f"env.id={config.id!r} cannot be created: {err}") from err
    mode = autoreset_mode(env)
    if mode not in SUPPORTED_AUTORESET:
        env.close()
        raise ValueError(f"{config.id}: vector autoreset mode {mode} is not supported")
    return env


def registered_id(config: EnvConfig) -> str:
    """The gymnasium id of `env.id`. As in `gym.make`, `module:EnvId` first imports the module
    that registers the env, in whichever process builds it (every rollout actor)."""
    module, sep, env_id = config.id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(
                f"env.id={config.id!r}: cannot import {module!r} to register the env: {err}"
            ) from err
    return env_id


def autoreset_mode(env: gym.vector.VectorEnv) -> AutoresetMode | None:
    mode = getattr(env, "autoreset_mode", None)
    return mode if mode is not None else env.metadata.get("autoreset_mode")


def env_spaces(config: EnvConfig) -> tuple[gym.Space, gym.Space]:
    """(single observation space, single action space) of the configured env."""
    env = make_vector_env(config, 1)
    try:
        return env.single_observation_space, env.single_action_space
    finally:
        env.close()
