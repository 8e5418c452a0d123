"""Namespaced metric names, shared by the learner, the actors and the services."""

FRAMES = "perf/frames"
BATCH_FRAMES = "learner/batch_frames"
FPS = "perf/fps"
UPDATES = "perf/updates"
WALL_TIME = "perf/wall_time_s"
UPDATE_TIME = "perf/update_time_s"

LOSS_POLICY = "loss/policy"
LOSS_VALUE = "loss/value"
LOSS_ENTROPY = "loss/entropy"
LOSS_TOTAL = "loss/total"

ENTROPY = "policy/entropy"
GRAD_NORM = "policy/grad_norm"
POLICY_VERSION = "policy/version"
ADVANTAGE_MEAN = "policy/advantage_mean"
VALUE_MEAN = "policy/value_mean"
SKIPPED_UPDATES = "learner/skipped_nonfinite_updates"
SEGMENTS_REJECTED = "learner/segments_rejected"
LEARNER_RESTARTS = "learner/restarts"
ROLLBACKS = "learner/rollbacks"
REJECTIONS = "learner/rejections"

EPISODE_RETURN = "rollout/episode_return"
EPISODE_LENGTH = "rollout/episode_length"
EPISODES = "rollout/episodes"

EVAL_RETURN = "eval/episode_return"

# Run-level figures kept by the driver; in `metrics.jsonl`, `troupe metrics` and the HTTP API.
ACTORS_LIVE = "actors/live"
ACTORS_PENDING = "actors/pending"
ACTORS_TARGET = "actors/target"
SEGMENTS_DROPPED = "actors/segments_dropped"
ACTOR_START_FAILURES = "actors/start_failures"
ACTOR_RESTARTS = "actors/restarts"
UPTIME = "perf/uptime_s"
