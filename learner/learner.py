"""The A2C learner: turns segments into one gradient step and a new weights version."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch

from learner import metrics as M
from learner.batch import Batch, Evaluated, Samples, Targets
from learner.config import LearnerConfig
from learner.core import PolicyWeights, Segment
from learner.device import resolve_device
from learner.losses import A2CLoss, a2c_loss, total_loss
from learner.model import build_model, state_to_numpy
from learner.optim import Optimizer
from learner.returns import gae_advantages, nstep_returns, vtrace
from learner.reward_norm import ReturnScaler
from learner.schedules import scheduled
from learner.screening import SegmentScreen

_LOSS_STATS = (
    M.LOSS_POLICY,
    M.LOSS_VALUE,
    M.LOSS_ENTROPY,
    M.LOSS_TOTAL,
    M.ENTROPY,
    M.GRAD_NORM,
    M.ADVANTAGE_MEAN,
    M.VALUE_MEAN,
    M.RHO_MEAN,
)

ADVANTAGE_STD_EPS = 1e-8
"""Added to the advantages' standard deviation when normalising them: a batch of equal
advantages has none."""


class Learner:
    """Plain-Python A2C learner; `learner.remote` wraps it as a Ray actor.

    `update` takes one batch of segments (all the same length), computes bootstrapped targets
    with the current critic, takes one optimiser step and bumps the policy version. A
    non-finite loss or gradient skips the step and is counted, so one bad batch cannot poison
    the weights.
    """

    def __init__(
        self,
        config: LearnerConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int = 0,
        horizon_frames: int = 0,
    ) -> None:
        """`horizon_frames`: the run's frames, over which linear schedules (`lr_schedule`,
        `entropy_schedule`) decay to 0; needed only by those."""
        self.config = config
        if "linear" in (config.lr_schedule, config.entropy_schedule) and horizon_frames <= 0:
            raise ValueError("a linear lr or entropy schedule needs horizon_frames > 0")
        self.horizon_frames = horizon_frames
        self.frames = 0
        """Frames of the segments trained on so far: where the schedules stand."""
        self.return_scaler = ReturnScaler(config.gamma) if config.normalize_rewards else None
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            torch.set_num_threads(config.num_threads or max(1, math.ceil(config.num_cpus)))
        torch.manual_seed(seed)
        self.model = build_model(config.model, observation_space, action_space).to(self.device)
        self.optimizer = Optimizer(
            self.model.parameters(),
            config.optimizer,
            lr=config.lr,
            eps=config.optimizer_eps,
            alpha=config.rmsprop_alpha,
        )
        self.version = 0
        self.skipped_updates = 0
        self.rejected_segments = 0
        self.stale_segments = 0
        self._screen = SegmentScreen(observation_space, action_space)
        self._weights: PolicyWeights | None = None

    def get_weights(self) -> PolicyWeights:
        """The current weights; copied off the device once per version."""
        if self._weights is None or self._weights.version != self.version:
            self._weights = PolicyWeights(self.version, state_to_numpy(self.model))
        return self._weights

    def _sync(self) -> None:
        """Wait for queued device work, so the update's parts are timed apart (on CUDA the
        copies would otherwise overlap the compute they feed)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def state(self) -> dict:
        """Everything needed to continue exactly from here: model and optimiser state,
        counters and the torch RNG; tensors on CPU, so it loads anywhere (and under
        `torch.load(weights_only=True)`)."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "version": self.version,
            "skipped_updates": self.skipped_updates,
            "rejected_segments": self.rejected_segments,
            "stale_segments": self.stale_segments,
            "frames": self.frames,
            "return_norm": self.return_scaler.state() if self.return_scaler else None,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state(self, state: dict) -> None:
        """Continue from `state()` of a learner with the same config and spaces."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # moves tensors to the params' device
        self.version = int(state["version"])
        self.skipped_updates = int(state["skipped_updates"])
        self.rejected_segments = int(state["rejected_segments"])
        self.stale_segments = int(state.get("stale_segments", 0))  # not in older checkpoints
        self.frames = int(state.get("frames", 0))  # nor this
        if self.return_scaler is not None and state.get("return_norm"):
            self.return_scaler.load_state(state["return_norm"])
        torch.set_rng_state(state["torch_rng"])
        self._weights = None

    def screen(self, segments: Sequence[Segment]) -> tuple[list[Segment], list[str]]:
        """The segments this learner can train on, and why each other one cannot
        (`SegmentScreen`)."""
        return self._screen(segments)

    def update(self, segments: Sequence[Segment]) -> dict:
        """One A2C step on the concatenation of `segments` along the batch axis.

        Malformed segments are left out (see `screen`) and counted; the step uses the rest,
        and with none left the weights stay as they are. Returns scalar statistics keyed by
        `learner.metrics` names, plus the lists `rollout/episode_return` and
        `rollout/episode_length` of the episodes completed in the batch and
        `learner/rejections`, why each left-out segment was left out.
        """
        start = time.perf_counter()
        segments, rejections = self.screen(segments)
        self.rejected_segments += len(rejections)
        segments, lag = self._drop_stale(segments)
        if not segments:
            return {**self._no_step(rejections, start), **lag}
        batch = Batch.collate(segments, self.device)
        self._sync()
        collated = time.perf_counter()
        rewards = self._rewards(batch, segments)
        self._update_obs_norm(batch)  # before the forward pass, which normalises with it
        evaluated = self._evaluate(batch)
        targets = self._targets(batch, rewards, evaluated)
        samples = self._mask(batch, evaluated, targets)
        loss = a2c_loss(
            log_probs=samples.log_probs,
            entropy=samples.entropy,
            values=samples.values,
            advantages=self._normalized(samples.advantages),
            returns=samples.returns,
            weights=samples.rhos if self.config.vtrace else None,
        )
        cfg, done, horizon = self.config, self.frames, self.horizon_frames
        entropy_coef = scheduled(cfg.entropy_schedule, cfg.entropy_coef, done, horizon)
        self.optimizer.lr = scheduled(cfg.lr_schedule, cfg.lr, done, horizon)
        total = total_loss(loss=loss, value_coef=cfg.value_coef, entropy_coef=entropy_coef)
        grad_norm = self._step(total)
        self.frames += sum(s.frames for s in segments)
        stats = {**self._loss_stats(loss, total, grad_norm, samples), **lag}
        stats.update({M.LR: self.optimizer.lr, M.ENTROPY_COEF: entropy_coef})
        return {**stats, **self._batch_stats(segments, rejections, start, collated)}

    def _rewards(self, batch: Batch, segments: Sequence[Segment]) -> torch.Tensor:
        """[T, B] the rewards trained on: scaled by the return's running std with
        `normalize_rewards`, their signs with `clip_rewards`, then scaled by `reward_scale`.
        (Reported episode returns are the segments' own, untouched.)"""
        rewards = batch.rewards
        if self.return_scaler is not None:  # per actor: each keeps its envs' returns
            scaled = self.return_scaler.scale_all(segments)
            rewards = torch.as_tensor(scaled, device=rewards.device)
        if self.config.clip_rewards:
            rewards = torch.sign(rewards)
        if self.config.reward_scale != 1.0:
            rewards = rewards * self.config.reward_scale
        return rewards

    def _update_obs_norm(self, batch: Batch) -> None:
        """Fold the observations the policy acted on (obs[:T], valid steps only) into the
        model's running observation statistics, when it keeps them."""
        if self.model.obs_norm is None:
            return
        t = batch.rewards.shape[0]
        seen = batch.obs[:t] if batch.valid is None else batch.obs[:t][batch.valid]
        self.model.obs_norm.update(seen.reshape(-1, *batch.obs.shape[2:]))

    def _evaluate(self, batch: Batch) -> Evaluated:
        """The current model on every observation of the batch, the bootstrap one included:
        log-probabilities and entropies of the actions taken and the values (gradients flow)."""
        t, n = batch.rewards.shape
        flat_obs = batch.obs.reshape((t + 1) * n, *batch.obs.shape[2:])
        out, values = self.model(flat_obs)
        out = out.reshape(t + 1, n, -1)[:t]
        flat_actions = batch.actions.reshape(t * n, *batch.actions.shape[2:])
        dist = self.model.distribution(out.reshape(t * n, -1))
        return Evaluated(
            log_probs=dist.log_prob(flat_actions),
            entropy=dist.entropy(),
            values=values.reshape(t + 1, n),
        )

    @torch.no_grad()
    def _targets(self, batch: Batch, rewards: torch.Tensor, evaluated: Evaluated) -> Targets:
        """Advantages and value targets bootstrapped from the current critic: V-trace when
        `vtrace` is on, else n-step returns (`gae_lambda` = 1) or GAE."""
        cfg = self.config
        t, n = rewards.shape
        values = evaluated.values.detach()
        final_values = torch.zeros_like(rewards)
        if batch.final_index.numel():
            final_values.view(-1)[batch.final_index] = self.model.value(batch.final_obs)
        # What every estimator takes, by keyword.
        common = dict(
            rewards=rewards,
            values=values,
            terminated=batch.terminated,
            truncated=batch.truncated,
            final_values=final_values,
            gamma=cfg.gamma,
        )
        if cfg.vtrace:
            target_logp = evaluated.log_probs.detach().reshape(t, n)
            off = vtrace(
                behaviour_logp=batch.behaviour_logp,
                target_logp=target_logp.to(batch.behaviour_logp.dtype),
                rho_bar=cfg.rho_bar,
                c_bar=cfg.c_bar,
                lam=cfg.gae_lambda,
                **common,
            )
            return Targets(advantages=off.pg_advantages, returns=off.vs, rhos=off.rhos)
        if cfg.gae_lambda == 1.0:
            returns = nstep_returns(**common)
            advantages = returns - values[:-1]
        else:
            advantages, returns = gae_advantages(lam=cfg.gae_lambda, **common)
        return Targets(advantages=advantages, returns=returns, rhos=torch.ones_like(returns))

    @staticmethod
    def _mask(batch: Batch, evaluated: Evaluated, targets: Targets) -> Samples:
        """The per-step terms flattened from [T, B] to [T * B], then without the reset steps
        of NEXT_STEP vector envs (which carry no transition) when the batch has any."""
        samples = Samples(
            log_probs=evaluated.log_probs,
            entropy=evaluated.entropy,
            values=evaluated.values[:-1].reshape(-1),
            advantages=targets.advantages.reshape(-1),
            returns=targets.returns.reshape(-1),
            rhos=targets.rhos.reshape(-1),
        )
        if batch.valid is None:
            return samples
        keep = batch.valid.reshape(-1)
        return Samples(*(x[keep] for x in samples))

    def _normalized(self, advantages: torch.Tensor) -> torch.Tensor:
        """Advantages standardised over the batch with `normalize_advantages` (and more than
        one sample), else as they are."""
        if not self.config.normalize_advantages or advantages.numel() <= 1:
            return advantages
        return (advantages - advantages.mean()) / (advantages.std() + ADVANTAGE_STD_EPS)

    def _step(self, total: torch.Tensor) -> torch.Tensor:
        """Backpropagate `total`, clip the gradient norm to `max_grad_norm` and take the
        optimiser step, bumping the version. A non-finite loss or gradient norm skips the step
        (counted in `skipped_updates`) and leaves no gradients. Returns the gradient norm
        before clipping, NaN when the loss was not finite."""
        self.optimizer.zero_grad()
        grad_norm = torch.tensor(float("nan"))
        if torch.isfinite(total):
            total.backward()
            max_norm = self.config.max_grad_norm
            clip = max_norm if max_norm > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.version += 1
        else:
            self.optimizer.zero_grad()
            self.skipped_updates += 1
        return grad_norm

    def _loss_stats(
        self, loss: A2CLoss, total: torch.Tensor, grad_norm: torch.Tensor, samples: Samples
    ) -> dict:
        """The step's losses, gradient norm and batch means (advantages before
        normalisation), as floats: the keys of `_LOSS_STATS`."""
        return {
            M.LOSS_POLICY: loss.policy_loss.item(),
            M.LOSS_VALUE: loss.value_loss.item(),
            M.LOSS_ENTROPY: loss.entropy_loss.item(),  # H itself, as the other loss terms
            M.LOSS_TOTAL: total.item(),
            M.ENTROPY: loss.entropy_loss.item(),
            M.GRAD_NORM: grad_norm.item(),
            M.ADVANTAGE_MEAN: samples.advantages.mean().item(),
            M.VALUE_MEAN: samples.values.mean().item(),
            M.RHO_MEAN: samples.rhos.mean().item(),
        }

    def _batch_stats(
        self,
        segments: Sequence[Segment],
        rejections: list[str],
        start: float,
        collated: float | None = None,
    ) -> dict:
        """Counters, timings, the batch's frames and the episodes it completed. The transfer
        and compute times only when a batch was collated (at `collated`)."""
        now = time.perf_counter()
        times = {M.UPDATE_TIME: now - start}
        if collated is not None:
            times |= {M.TRANSFER_TIME: collated - start, M.COMPUTE_TIME: now - collated}
        if segments:
            times |= {
                M.ACTOR_ENV_TIME: float(np.mean([s.env_time_s for s in segments])),
                M.ACTOR_POLICY_TIME: float(np.mean([s.policy_time_s for s in segments])),
            }
        return {
            M.POLICY_VERSION: self.version,
            M.SKIPPED_UPDATES: self.skipped_updates,
            **times,
            M.BATCH_FRAMES: sum(s.frames for s in segments),
            M.EPISODE_RETURN: [float(r) for s in segments for r in s.episode_returns],
            M.EPISODE_LENGTH: [int(x) for s in segments for x in s.episode_lengths],
            M.SEGMENTS_REJECTED: self.rejected_segments,
            M.REJECTIONS: rejections,
        }

    def _drop_stale(self, segments: list[Segment]) -> tuple[list[Segment], dict]:
        """Leave out segments more than `max_policy_lag` versions behind; the lag statistics
        of all of them. (After a restart from a checkpoint a segment can be ahead of the
        learner: its lag counts as 0.)"""
        lags = [max(0, self.version - s.policy_version) for s in segments]
        limit = self.config.max_policy_lag
        fresh = [s for s, lag in zip(segments, lags, strict=True) if not limit or lag <= limit]
        self.stale_segments += len(segments) - len(fresh)
        return fresh, {
            M.POLICY_LAG_MEAN: float(np.mean(lags)) if lags else float("nan"),
            M.POLICY_LAG_MAX: max(lags, default=0),
            M.STALE_SEGMENTS: self.stale_segments,
        }

    def _no_step(self, rejections: list[str], start: float) -> dict:
        """Statistics of an update with no segment left: nothing learned, no loss."""
        nothing = dict.fromkeys(_LOSS_STATS, float("nan"))
        return {**nothing, **self._batch_stats([], rejections, start)}


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
