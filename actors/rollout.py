"""The rollout worker: steps a vector env with the acting policy and cuts segments."""

from __future__ import annotations

import contextlib
import time
import traceback

import numpy as np
from gymnasium.vector import AutoresetMode

from actors.config import ActorConfig, EnvConfig
from actors.envs import autoreset_mode, make_vector_env
from actors.policy import ActorPolicy
from learner.config import ModelConfig
from learner.core import PolicyWeights, Segment

SEED_MASK = 0x7FFFFFFF
"""Actor seeds keep the low 31 bits of the mixed seed: a non-negative number that fits a
signed 32-bit integer, which every env's seed argument accepts."""


def actor_seed(seed: int, actor_id: int, rebuilds: int = 0) -> int:
    """A per-actor seed; env `i` of the actor is seeded `actor_seed + i` by gymnasium. A
    rebuilt env gets a new one, so it does not replay the episode that crashed it."""
    entropy = [seed, actor_id, rebuilds] if rebuilds else [seed, actor_id]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & SEED_MASK)


class EnvCrashed(RuntimeError):
    """An env raised in `step` or its autoreset. The worker has rebuilt its envs and dropped
    the partial segment; this carries what happened to the driver."""

    def __init__(self, actor_id: int, env_id: str, trace: str) -> None:
        super().__init__(actor_id, env_id, trace)
        self.actor_id, self.env_id, self.trace = actor_id, env_id, trace

    def __str__(self) -> str:
        return (
            f"env {self.env_id} raised in actor {self.actor_id} (rebuilt; its partial segment "
            f"was dropped):\n{self.trace}"
        )


class RolloutWorker:
    """Owns `envs_per_actor` envs and emits fixed-length segments (plain Python, no Ray).

    Episodes continue across segments: the last observation of one segment is the first of
    the next. Whatever the env's autoreset mode, segments follow the same-step convention of
    `Segment`; the reset steps of NEXT_STEP envs are kept but marked invalid.
    """

    def __init__(
        self,
        env_config: EnvConfig,
        actor_config: ActorConfig,
        model_config: ModelConfig,
        actor_id: int = 0,
        seed: int = 0,
    ) -> None:
        self.actor_id = actor_id
        self.env_config, self.envs_per_actor, self.seed = (
            env_config,
            actor_config.envs_per_actor,
            seed,
        )
        self.segment_length = actor_config.segment_length
        self.rebuilds = 0
        self._start_envs()
        space = self.env.single_observation_space
        self.obs_dtype = np.uint8 if space.dtype == np.uint8 else np.float32
        self.obs_shape = space.shape
        s = actor_seed(seed, actor_id)
        self.policy = ActorPolicy(model_config, space, self.env.single_action_space, seed=s)
        self._reset_envs()

    def _start_envs(self) -> None:
        self.env = make_vector_env(self.env_config, self.envs_per_actor)
        self.next_step_reset = autoreset_mode(self.env) == AutoresetMode.NEXT_STEP

    def _reset_envs(self) -> None:
        obs, _ = self.env.reset(seed=actor_seed(self.seed, self.actor_id, self.rebuilds))
        self.obs = np.asarray(obs, dtype=self.obs_dtype)
        b = self.env.num_envs
        self.episode_return = np.zeros(b, dtype=np.float64)
        self.episode_length = np.zeros(b, dtype=np.int64)
        self.resetting = np.zeros(b, dtype=bool)  # NEXT_STEP: next step of these envs resets

    def _rebuild(self) -> None:
        """Replace envs that raised with fresh ones: a vector env is not safe to step again
        after one of its envs failed halfway. Episodes in progress are lost. If building or
        resetting fails too, that error propagates: the actor is then replaced whole."""
        with contextlib.suppress(Exception):  # a broken env may not close cleanly
            self.env.close()
        self.rebuilds += 1
        self._start_envs()
        self._reset_envs()

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    def sample(self, weights: PolicyWeights | None = None) -> Segment:
        """Step every env `segment_length` times with `weights` (or the ones already loaded)."""
        if weights is not None:
            self.policy.load(weights)
        if self.policy.version < 0:
            raise RuntimeError(f"actor {self.actor_id}: sample() before any weights were loaded")
        self.policy.new_noise(self.num_envs)
        t_len, b = self.segment_length, self.num_envs
        obs = np.empty((t_len + 1, b, *self.obs_shape), dtype=self.obs_dtype)
        action_dtype = np.float32 if self.policy.continuous else np.int64
        actions = np.empty((t_len, b, *self.policy.action_shape), dtype=action_dtype)
        logp = np.empty((t_len, b), dtype=np.float32)
        rewards = np.empty((t_len, b), dtype=np.float32)
        terminated = np.empty((t_len, b), dtype=bool)
        truncated = np.empty((t_len, b), dtype=bool)
        valid = np.ones((t_len, b), dtype=bool)
        final_obs, final_index, ep_returns, ep_lengths = [], [], [], []
        env_s = policy_s = 0.0

        for t in range(t_len):
            obs[t] = self.obs
            start = time.perf_counter()
            actions[t], logp[t] = self.policy.act(obs[t])
            acted = time.perf_counter()
            try:
                next_obs, reward, term, trunc, info = self.env.step(self.policy.to_env(actions[t]))
            except Exception:
                trace = traceback.format_exc()
                self._rebuild()
                raise EnvCrashed(self.actor_id, self.env_config.id, trace) from None
            stepped = time.perf_counter()
            policy_s += acted - start
            env_s += stepped - acted
            rewards[t], terminated[t], truncated[t] = reward, term, trunc
            if self.next_step_reset:
                valid[t] = ~self.resetting
            self.episode_return += rewards[t]
            self.episode_length += valid[t]
            done = terminated[t] | truncated[t]
            if done.any():
                for i in np.flatnonzero(done):
                    ep_returns.append(self.episode_return[i])
                    ep_lengths.append(self.episode_length[i])
                    if truncated[t, i] and not terminated[t, i]:
                        last = next_obs[i] if self.next_step_reset else info["final_obs"][i]
                        final_obs.append(
                            np.array(last, dtype=self.obs_dtype)
                        )  # a copy: envs may reuse buffers
                        final_index.append(t * b + i)
                self.episode_return[done] = 0.0
                self.episode_length[done] = 0
            if self.next_step_reset:
                self.resetting = done
            self.obs = np.asarray(next_obs, dtype=self.obs_dtype)
        obs[t_len] = self.obs

        return Segment(
            obs=obs,
            actions=actions,
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            valid=valid,
            behaviour_logp=logp,
            final_obs=(
                np.stack(final_obs)
                if final_obs
                else np.empty((0, *self.obs_shape), dtype=self.obs_dtype)
            ),
            final_index=np.asarray(final_index, dtype=np.int64),
            episode_returns=np.asarray(ep_returns, dtype=np.float32),
            episode_lengths=np.asarray(ep_lengths, dtype=np.int64),
            policy_version=self.policy.version,
            actor_id=self.actor_id,
            env_time_s=env_s,
            policy_time_s=policy_s,
        )

    def close(self) -> None:
        self.env.close()
