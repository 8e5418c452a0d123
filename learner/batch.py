"""One update's data: segments concatenated along the batch axis on the learner's device
(`Batch`), and the per-step tensors the update derives from them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from learner.core import Segment, SegmentError


@dataclass
class Batch:
    """Segments concatenated along the batch axis, as tensors on the learner's device; the
    shapes of `Segment`, time-major, with B the envs of all segments together."""

    obs: torch.Tensor
    """[T + 1, B, *O]"""
    actions: torch.Tensor
    """[T, B] or [T, B, *A]"""
    behaviour_logp: torch.Tensor
    """[T, B]"""
    rewards: torch.Tensor
    """[T, B] as the envs gave them (see `Learner._rewards`)."""
    terminated: torch.Tensor
    """[T, B]"""
    truncated: torch.Tensor
    """[T, B]"""
    valid: torch.Tensor | None
    """[T, B]; None when every step is valid."""
    final_obs: torch.Tensor
    """[K, *O]"""
    final_index: torch.Tensor
    """[K] flat indices t * B + b into the concatenated batch."""

    @classmethod
    def collate(cls, segments: Sequence[Segment], device: torch.device) -> Batch:
        if not segments:
            raise ValueError("update needs at least one segment")
        lengths = {s.length for s in segments}
        if len(lengths) != 1:
            raise SegmentError(
                f"segments in one update must share T, got lengths {sorted(lengths)}"
            )
        n = sum(s.num_envs for s in segments)
        index, offset = [], 0
        for s in segments:  # re-index flat (t, b) positions into the concatenated batch
            idx = s.final_index
            index.append((idx // s.num_envs) * n + offset + idx % s.num_envs)
            offset += s.num_envs

        def cat(name: str, axis: int = 1) -> torch.Tensor:
            arrays = [getattr(s, name) for s in segments]
            joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=axis)
            with warnings.catch_warnings():
                # One segment is not copied: it is Ray's read-only zero-copy buffer. Nothing
                # writes into batch tensors, so torch's warning about that does not apply.
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(np.ascontiguousarray(joined)).to(device)

        valid = np.concatenate([s.valid for s in segments], axis=1)
        return cls(
            obs=cat("obs"),
            actions=cat("actions"),
            behaviour_logp=cat("behaviour_logp"),
            rewards=cat("rewards"),
            terminated=cat("terminated"),
            truncated=cat("truncated"),
            valid=None if valid.all() else torch.from_numpy(valid).to(device),
            final_obs=cat("final_obs", axis=0),
            final_index=torch.from_numpy(np.concatenate(index)).to(device),
        )


class Evaluated(NamedTuple):
    """The current model on a batch of T steps of B envs (N = T * B, time-major)."""

    log_probs: torch.Tensor
    """[N] log pi(a_t | s_t) of the actions taken (gradients flow)."""
    entropy: torch.Tensor
    """[N] H(pi(. | s_t)) (gradients flow)."""
    values: torch.Tensor
    """[T + 1, B] V(s_t) of every observation, the bootstrap one included (gradients flow)."""


class Targets(NamedTuple):
    """What the critic's bootstrap gives each step, each [T, B] and constant."""

    advantages: torch.Tensor
    returns: torch.Tensor
    """The value targets."""
    rhos: torch.Tensor
    """V-trace's truncated importance weights; ones without V-trace."""


class Samples(NamedTuple):
    """The per-step terms of the loss, flattened from [T, B] to [N], valid steps only."""

    log_probs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    """Not normalised (`Learner._normalized` does that for the loss)."""
    returns: torch.Tensor
    rhos: torch.Tensor
