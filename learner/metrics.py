"""Every metric of a run, declared once: its namespaced name, kind, help text and whether a
run's status reports it. The learner, the actors and the services use the name constants; the
status (`troupe status`, the HTTP API), the Prometheus exposition, Ray's metrics and the
TensorBoard events are all derived from `TABLE`.

Status figures are listed in the order a status shows them."""

from __future__ import annotations

from dataclasses import dataclass

COUNTER = "counter"
"""Only grows over a run (Prometheus `..._total`)."""
GAUGE = "gauge"
"""A figure of the latest update or moment."""
DETAIL = "detail"
"""A list kept with one update's statistics (not a number): never exported."""


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    help: str
    status: bool
    """Reported by a run's status, so exported to Prometheus and Ray's metrics."""


TABLE: dict[str, Metric] = {}


def _metric(name: str, help: str, kind: str = GAUGE, status: bool = False) -> str:
    if name in TABLE:
        raise ValueError(f"metric {name!r} is declared twice")
    TABLE[name] = Metric(name, kind, help, status)
    return name


FRAMES = _metric("perf/frames", "Environment frames trained on", COUNTER, status=True)
FPS = _metric("perf/fps", "Training frames per second", status=True)
UPDATES = _metric("perf/updates", "Learner updates", COUNTER, status=True)
# A gauge: a restart or rollback to a checkpoint takes it back.
POLICY_VERSION = _metric("policy/version", "Version of the newest policy weights", status=True)
LOSS_POLICY = _metric("loss/policy", "Policy-gradient loss of the last update", status=True)
LOSS_VALUE = _metric("loss/value", "Value loss of the last update", status=True)
LOSS_ENTROPY = _metric(
    "loss/entropy",
    "Entropy term of the last update: the mean policy entropy H, unscaled (the total "
    "subtracts entropy_coef x H)",
    status=True,
)
ENTROPY = _metric("policy/entropy", "Mean policy entropy of the last batch", status=True)
GRAD_NORM = _metric("policy/grad_norm", "Gradient norm before clipping", status=True)
LR = _metric("learner/lr", "Learning rate of the last update (learner.lr_schedule)")
ENTROPY_COEF = _metric(
    "learner/entropy_coef", "Entropy coefficient of the last update (learner.entropy_schedule)"
)
EPISODE_RETURN = _metric(
    "rollout/episode_return", "Mean return of recent training episodes", status=True
)
EVAL_RETURN = _metric("eval/episode_return", "Mean return of the latest evaluation", status=True)
ACTORS_LIVE = _metric("actors/live", "Rollout actors sampling", status=True)
ACTORS_PENDING = _metric(
    "actors/pending", "Rollout actors waiting for cluster resources", status=True
)
ACTORS_TARGET = _metric("actors/target", "Rollout actors asked for", status=True)
SEGMENTS_DROPPED = _metric(
    "actors/segments_dropped", "Segments that never reached the learner", COUNTER, status=True
)
ACTOR_START_FAILURES = _metric(
    "actors/start_failures",
    "Rollout actors that failed to start (left out, not retried)",
    COUNTER,
    status=True,
)
ACTOR_RESTARTS = _metric(
    "actors/restarts",
    "Rollout actors replaced after failing or stalling mid-run",
    COUNTER,
    status=True,
)
ENV_REBUILDS = _metric(
    "actors/env_rebuilds",
    "Envs rebuilt inside their actor after raising in step or reset",
    COUNTER,
    status=True,
)
SEGMENTS_REJECTED = _metric(
    "learner/segments_rejected", "Malformed segments the learner left out", COUNTER, status=True
)
LEARNER_RESTARTS = _metric(
    "learner/restarts",
    "Times the learner died and was restarted from a checkpoint",
    COUNTER,
    status=True,
)
ROLLBACKS = _metric(
    "learner/rollbacks",
    "Rollbacks to the latest checkpoint after non-finite updates",
    COUNTER,
    status=True,
)
SKIPPED_UPDATES = _metric(
    "learner/skipped_nonfinite_updates",
    "Updates skipped for a non-finite loss or gradient",
    COUNTER,
    status=True,
)
POLICY_LAG_MEAN = _metric(
    "policy/lag_mean",
    "Mean versions the last batch's policies were behind the learner",
    status=True,
)
POLICY_LAG_MAX = _metric(
    "policy/lag_max",
    "Most versions a segment of the last batch was behind the learner",
    status=True,
)
STALE_SEGMENTS = _metric(
    "learner/stale_segments",
    "Segments left out for lagging more than learner.max_policy_lag",
    COUNTER,
    status=True,
)
RHO_MEAN = _metric(
    "policy/rho_mean", "Mean truncated V-trace importance weight of the last batch", status=True
)
UPTIME = _metric("perf/uptime_s", "Seconds since the run started", status=True)

# In each update's metrics line (metrics.jsonl, TensorBoard), not in the status.
LOSS_TOTAL = _metric("loss/total", "Total loss of the last update")
ADVANTAGE_MEAN = _metric("policy/advantage_mean", "Mean advantage of the last batch")
VALUE_MEAN = _metric("policy/value_mean", "Mean value estimate of the last batch")
EPISODES = _metric("rollout/episodes", "Training episodes finished", COUNTER)
EPISODE_LENGTH = _metric("rollout/episode_length", "Mean length of recent training episodes")
BATCH_FRAMES = _metric("learner/batch_frames", "Frames in the last update's batch")
WALL_TIME = _metric("perf/wall_time_s", "Seconds of training so far, earlier attempts included")
UNIX_TIME = _metric(
    "perf/unix_time",
    "Seconds since the epoch when the line was made: lines up metrics with logs and clocks",
)
UPDATE_TIME = _metric("perf/update_time_s", "Seconds the learner spent on the last update")
TRANSFER_TIME = _metric(
    "perf/learner_transfer_s", "Of an update, seconds to put its segments on the device"
)
COMPUTE_TIME = _metric(
    "perf/learner_compute_s", "Of an update, seconds of forward, backward and optimiser step"
)
PUBLISH_TIME = _metric(
    "perf/learner_publish_s",
    "Seconds to copy new weights off the device for the actors (0 when nothing changed)",
)
ACTOR_ENV_TIME = _metric(
    "perf/actor_env_s", "Seconds an actor stepped its envs for one segment (batch mean)"
)
ACTOR_POLICY_TIME = _metric(
    "perf/actor_policy_s", "Seconds an actor computed actions for one segment (batch mean)"
)
COMPILED_ROUND = _metric(
    "perf/compiled_round",
    "Sync mode: 1 when the last update's round ran as a compiled graph, 0 as plain calls",
)

REJECTIONS = _metric("learner/rejections", "Why each left-out segment was left out", DETAIL)

STATUS = tuple(name for name, metric in TABLE.items() if metric.status)
"""What a run's status reports, in this order."""
