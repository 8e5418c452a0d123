"""Learner and rollout actors on the shared local Ray cluster."""

from __future__ import annotations

import json

import pytest
import ray

from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces
from actors.remote import spawn_rollout_actors
from learner import metrics as M
from learner.config import LearnerConfig
from learner.remote import spawn_learner
from services.config import load_config
from services.rundir import RunDir
from services.trainer import SyncA2C

pytestmark = pytest.mark.ray


def test_versions_advance_and_every_actor_runs_the_newest_weights(ray_cluster):
    config = LearnerConfig(num_threads=1)
    learner = spawn_learner(config, *env_spaces(EnvConfig()), seed=0)
    actors = spawn_rollout_actors(
        EnvConfig(), ActorConfig(envs_per_actor=4, segment_length=8), config.model, 0, range(2)
    )
    try:
        weights = learner.get_weights.remote()
        for version in range(1, 4):
            segments = [actor.sample.remote(weights) for actor in actors]
            fetched = ray.get(segments)
            assert [s.policy_version for s in fetched] == [version - 1] * 2
            assert [s.actor_id for s in fetched] == [0, 1]
            stats, weights = learner.update.options(num_returns=2).remote(*segments)
            assert ray.get(stats)[M.POLICY_VERSION] == version
            assert ray.get(weights).version == version
        ray.get([actor.sample.remote(weights) for actor in actors])
        assert ray.get([actor.policy_version.remote() for actor in actors]) == [3, 3]
    finally:
        for handle in [*actors, learner]:
            ray.kill(handle)


def test_sync_a2c_writes_a_run_directory(ray_cluster, tmp_path):
    config = load_config(
        None,
        [
            "actors.envs_per_actor=4",
            "actors.segment_length=8",
            "train.total_frames=640",
            "learner.num_threads=1",
            f"train.run_root={tmp_path}",
        ],
    )
    run = RunDir.create(tmp_path, config.name)
    seen = []
    result = SyncA2C(config, run, on_update=seen.append).run()
    assert result.frames == 640 and result.updates == 10
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert lines == seen
    assert [x[M.POLICY_VERSION] for x in lines] == list(range(1, 11))
    assert [x[M.FRAMES] for x in lines] == [64 * i for i in range(1, 11)]
    assert all(x[M.FPS] > 0 for x in lines)
    assert run.load_model().version == 10
    assert run.load_config() == config
    # The actors and learner are gone once the run ends.
    assert not [a for a in ray.util.list_named_actors()]


def test_learner_asks_for_a_gpu_only_when_it_can_use_one(ray_cluster):
    from learner.remote import gpus_for

    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    assert gpus_for(LearnerConfig(device="auto")) == (1.0 if has_gpu else 0.0)
    assert gpus_for(LearnerConfig(device="cpu")) == 0.0
    assert gpus_for(LearnerConfig(device="cuda")) == 1.0
