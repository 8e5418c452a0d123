"""Running count, mean and variance of a stream, merged part by part (Chan et al.): the
observation statistics (`model.ObsNormalizer`, per feature, as tensors) and the return
statistics (`reward_norm.ReturnScaler`) both fold batches in with `merge`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Moments(NamedTuple):
    """Running count, mean and (population) variance of a stream of numbers."""

    count: float
    mean: float
    var: float


def merge(a: Moments, b: Moments) -> Moments:
    """The moments of two streams together, from each one's (Chan et al.): merging the
    moments of parts equals the moments of the whole."""
    total = a.count + b.count
    if total == 0:
        return a
    delta = b.mean - a.mean
    mean = a.mean + delta * b.count / total
    spread = a.var * a.count + b.var * b.count + delta**2 * a.count * b.count / total
    return Moments(total, mean, spread / total)


def moments_of(x: np.ndarray) -> Moments:
    x = np.asarray(x, dtype=np.float64).ravel()
    return Moments(float(x.size), float(x.mean()), float(x.var())) if x.size else Moments(0, 0, 1)
