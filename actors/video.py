"""MP4s of evaluation episodes: one env rendered as rgb_array frames, streamed to ffmpeg
(imageio-ffmpeg's bundled binary: the `video` extra) a frame at a time, so a long episode
never sits in memory. gymnasium's RecordVideo goes through moviepy, whose frame timing
drops or repeats a frame at some lengths; here every file holds exactly the first
observation's frame and one per step."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from actors.config import EnvConfig
from actors.envs import _atari_wrapper, _sync_kwargs, registered_id
from actors.evaluate import MAX_STEPS
from actors.policy import ActorPolicy
from learner.config import ModelConfig
from learner.core import PolicyWeights

HEADLESS_GL = "egl"
"""MuJoCo's rendering backend unless MUJOCO_GL says otherwise: EGL renders without a display
(a cluster node, CI); MuJoCo's default, GLFW, needs one. Read when MuJoCo is first imported."""
DEFAULT_FPS = 30


@dataclass(frozen=True)
class Episode:
    file: Path
    steps: int
    episode_return: float


def make_rendered_env(config: EnvConfig) -> gym.Env:
    """One copy of the configured env, as the actors see it, that renders rgb_array frames."""
    env_id = registered_id(config)
    try:
        spec = gym.spec(env_id)
        env = gym.make(env_id, render_mode="rgb_array", **_sync_kwargs(config, spec))
    except TypeError as err:
        raise ValueError(
            f"env.kwargs={config.kwargs!r} are not accepted by {config.id}: {err}"
        ) from err
    except gym.error.Error as err:
        raise ValueError(f"env.id={config.id!r} cannot be rendered: {err}") from err
    return _atari_wrapper(env) if config.preprocessing == "atari" else env


def record_episodes(
    env_config: EnvConfig,
    model_config: ModelConfig,
    weights: PolicyWeights,
    folder: str | Path,
    episodes: int,
    seed: int,
    deterministic: bool = True,
) -> list[Episode]:
    """Play `episodes` episodes (seeds `seed`, `seed + 1`, ...) and write each as
    `FOLDER/ENV-episode-N.mp4` (ENV: the env id, '/' as '-'): a frame for the first
    observation, then one per step."""
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ValueError(
            "--video needs imageio and imageio-ffmpeg: pip install -e '.[video]'"
        ) from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MUJOCO_GL", HEADLESS_GL)  # before the env imports MuJoCo
    env = make_rendered_env(env_config)
    fps = env.metadata.get("render_fps") or DEFAULT_FPS
    prefix = registered_id(env_config).replace("/", "-")
    policy = ActorPolicy(model_config, env.observation_space, env.action_space, seed)
    policy.load(weights)
    dtype = np.uint8 if env.observation_space.dtype == np.uint8 else np.float32
    played = []
    try:
        for i in range(episodes):
            file = folder / f"{prefix}-episode-{i}.mp4"
            obs, _ = env.reset(seed=seed + i)
            policy.new_noise(1)  # gSDE: a fresh exploration matrix per episode
            # macro_block_size 1: keep the env's own frame size (ffmpeg needs it even).
            writer = imageio.get_writer(
                file, fps=fps, codec="libx264", macro_block_size=1, quality=7
            )
            try:
                writer.append_data(env.render())
                total, steps, done = 0.0, 0, False
                while not done:
                    batch = np.asarray(obs, dtype=dtype)[None]
                    action = policy.act_greedy(batch) if deterministic else policy.act(batch)[0]
                    obs, reward, terminated, truncated, _ = env.step(policy.to_env(action)[0])
                    writer.append_data(env.render())
                    total, steps = total + float(reward), steps + 1
                    done = terminated or truncated
                    if steps >= MAX_STEPS:
                        raise RuntimeError(f"{env_config.id} ran {MAX_STEPS} steps without ending")
            finally:
                writer.close()
            played.append(Episode(file, steps, total))
    finally:
        env.close()
    return played
