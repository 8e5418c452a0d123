"""Creating vectorised gymnasium environments with a known autoreset convention."""

from __future__ import annotations

import importlib

import gymnasium as gym
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

from actors.config import EnvConfig

SUPPORTED_AUTORESET = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
# The Atari pipeline of Mnih et al. (2015); ALE's native vector env defaults to the same.
ATARI_NOOP_MAX, ATARI_FRAME_SKIP, ATARI_SCREEN, ATARI_STACK = 30, 4, 84, 4


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
    atari = str(spec.entry_point).startswith("ale_py")
    if config.preprocessing == "atari" and not atari:
        raise ValueError(
            f"env.preprocessing='atari' needs an Atari env such as 'ale_py:ALE/Pong-v5'; "
            f"{config.id} is not one. Use preprocessing: none"
        )
    try:
        if native and config.vectorization != "sync":
            env = gym.make_vec(
                env_id,
                num_envs,
                vectorization_mode="vector_entry_point",
                **_native_kwargs(config, atari),
            )
        else:
            env = gym.make_vec(
                env_id,
                num_envs,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                wrappers=[_atari_wrapper] if config.preprocessing == "atari" else None,
                **_sync_kwargs(config, spec),
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


def _native_kwargs(config: EnvConfig, atari: bool) -> dict:
    if not atari:
        return dict(config.kwargs)
    if config.preprocessing != "atari":
        raise ValueError(
            f"env.id={config.id!r}: ALE's native vector env always applies the Atari "
            "preprocessing; set env.preprocessing: atari, or env.vectorization: sync for raw "
            "frames"
        )
    # The learner clips rewards when asked (learner.clip_rewards); reported episode returns
    # must be the game's score. One stepping thread, as a rollout actor reserves one CPU by
    # default (ALE's own default is a thread per core, which many actors would oversubscribe);
    # env.kwargs.num_threads raises it.
    return {"reward_clipping": False, "num_threads": 1, **config.kwargs}


def _sync_kwargs(config: EnvConfig, spec: gym.envs.registration.EnvSpec) -> dict:
    kwargs = dict(config.kwargs)
    if config.preprocessing == "atari":
        # AtariPreprocessing skips frames itself, max-pooling the last two; the env must not.
        skip = kwargs.get("frameskip", 1)
        if skip != 1:
            raise ValueError(
                f"env.kwargs.frameskip={skip!r} with env.preprocessing='atari': the "
                f"preprocessing skips {ATARI_FRAME_SKIP} frames itself; remove frameskip"
            )
        if spec.kwargs.get("frameskip", 1) != 1:
            kwargs["frameskip"] = 1
    return kwargs


def _atari_wrapper(env: gym.Env) -> gym.Env:
    env = AtariPreprocessing(
        env,
        noop_max=ATARI_NOOP_MAX,
        frame_skip=ATARI_FRAME_SKIP,
        screen_size=ATARI_SCREEN,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,  # uint8 to the learner, which scales on its device
    )
    return FrameStackObservation(env, ATARI_STACK)


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
