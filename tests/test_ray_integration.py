"""Learner and rollout actors on the shared local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import ray
import torch

from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces
from actors.remote import spawn_rollout_actors
from learner import metrics as M
from learner.config import LearnerConfig
from learner.remote import spawn_learner
from services.config import load_config
from services.control.registry import (
    RunLink,
    find_run,
    list_runs,
    resolve_run,
    run_status,
    scale_run,
    spawn_control,
)
from services.control.run_control import RunConflict, RunNotFound, ScaleError
from services.storage.checkpoints import Checkpoints
from services.storage.rundir import RunDir
from services.training import train
from services.training.counters import Counters
from services.training.fleet import START_TRIES, ActorFleet
from services.training.learner_keeper import LearnerFailed, LearnerKeeper
from services.training.sampling import ActorFailures, Sampler
from tests.envs import CRASHING_ID, EXPLODING_ID, HELD_ID

pytestmark = pytest.mark.ray


@pytest.fixture
def learner_and_actors(ray_cluster):
    """A CartPole learner and two rollout actors (4 envs x 8 steps), killed afterwards."""
    config = LearnerConfig(num_threads=1)
    learner = spawn_learner(config, *env_spaces(EnvConfig()), seed=0)
    actors = spawn_rollout_actors(
        EnvConfig(), ActorConfig(envs_per_actor=4, segment_length=8), config.model, 0, range(2)
    )
    yield learner, actors
    for handle in [*actors, learner]:
        ray.kill(handle)


def test_versions_advance_and_every_actor_runs_the_newest_weights(learner_and_actors):
    learner, actors = learner_and_actors
    weights = learner.get_weights.remote()
    for version in range(1, 4):
        segments = [actor.sample.remote(weights)[0] for actor in actors]
        fetched = ray.get(segments)
        assert [s.policy_version for s in fetched] == [version - 1] * 2
        assert [s.actor_id for s in fetched] == [0, 1]
        stats, weights = learner.update.options(num_returns=2).remote(*segments)
        assert ray.get(stats)[M.POLICY_VERSION] == version
        assert ray.get(weights).version == version
    ray.get([actor.sample.remote(weights)[0] for actor in actors])
    assert ray.get([actor.policy_version.remote() for actor in actors]) == [3, 3]


@ray.remote
def _zero_copy(*objects) -> dict[str, bool]:
    """Per numpy array field of each object Ray resolved here: whether it is a read-only view
    of the object store's buffer (a copy would be writeable)."""
    views = {}
    for i, obj in enumerate(objects):
        arrays = obj.params if hasattr(obj, "params") else vars(obj)
        for name, value in arrays.items():
            if isinstance(value, np.ndarray) and value.nbytes >= 64:
                views[f"{i}.{name}"] = not value.flags.writeable and not value.flags.owndata
    return views


def test_segments_and_weights_cross_the_object_store_without_copies(learner_and_actors):
    """float32 vectors, uint8 frames and the weights arrive as views of the object store;
    the update reports its parts' times."""
    learner, actors = learner_and_actors
    weights = learner.get_weights.remote()
    segments = [actor.sample.remote(weights)[0] for actor in actors]
    frames = ray.get(segments[0]).replace(
        obs=np.zeros((9, 4, 4, 84, 84), np.uint8), final_obs=np.zeros((0, 4, 84, 84), np.uint8)
    )
    views = ray.get(_zero_copy.remote(*segments, ray.put(frames), weights))
    assert views and all(views.values()), views
    stats, weights = learner.update.options(num_returns=2).remote(*segments)
    stats = ray.get(stats)
    for part in (M.TRANSFER_TIME, M.COMPUTE_TIME, M.PUBLISH_TIME):
        assert 0 < stats[part] < stats[M.UPDATE_TIME] + stats[M.PUBLISH_TIME]


def test_one_weights_object_per_version_serves_every_actor(ray_cluster):
    """The sync round hands every actor the learner's own weights ref: nothing is put per
    actor, so the object store holds one copy of each version (per node)."""

    class Handle:
        def __init__(self) -> None:
            self.given = []
            self.sample = self

        def remote(self, weights_ref):
            self.given.append(weights_ref)
            return ray.put("segment"), ray.put(64)

    weights_ref = ray.put("weights v1")
    handles = [Handle() for _ in range(3)]
    sampler = Sampler(load_config(None).train, fleet=None, counters=Counters())
    segments = sampler.round(list(enumerate(handles)), weights_ref)
    assert sampler.failure is None and ray.get(segments) == ["segment"] * 3
    assert all(len(h.given) == 1 and h.given[0] is weights_ref for h in handles)


def _small_config(tmp_path, *overrides: str):
    """2 actors x 4 envs x 8 steps: 64 frames an update, 10 updates."""
    return load_config(
        None,
        [
            "actors.envs_per_actor=4",
            "actors.segment_length=8",
            "train.total_frames=640",
            "learner.num_threads=1",
            f"train.run_root={tmp_path}",
            *overrides,
        ],
    )


def test_sync_a2c_writes_a_run_directory(ray_cluster, tmp_path):
    config = _small_config(tmp_path)
    run = RunDir.create(tmp_path, config.name)
    seen = []
    result = train(config, run, on_update=seen.append)
    assert result.frames == 640 and result.updates == 10
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert lines == seen
    assert all(set(x) <= set(M.TABLE) for x in lines)  # every figure declared once
    assert [x[M.POLICY_VERSION] for x in lines] == list(range(1, 11))
    assert [x[M.FRAMES] for x in lines] == [64 * i for i in range(1, 11)]
    assert all(x[M.FPS] > 0 for x in lines)
    assert run.load_model().version == 10
    assert run.load_config() == config
    # The actors, the learner and the run's registration are gone once the run ends.
    assert not ray.util.list_named_actors(all_namespaces=True)
    assert all(x[M.ACTORS_LIVE] == 2 and x[M.ACTORS_PENDING] == 0 for x in lines)


def test_learner_asks_for_a_gpu_only_when_it_can_use_one(ray_cluster):
    from learner.remote import gpus_for

    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    assert gpus_for(LearnerConfig(device="auto")) == (1.0 if has_gpu else 0.0)
    assert gpus_for(LearnerConfig(device="cpu")) == 0.0
    assert gpus_for(LearnerConfig(device="cuda")) == 1.0


class _Idle:
    def ready(self) -> int:
        return 0


def test_fleet_leaves_what_does_not_fit_pending_and_stops_it_first(ray_cluster):
    # The shared cluster has 4 CPUs: three 1.5-CPU actors cannot all run.
    spawn = ray.remote(num_cpus=1.5)(_Idle).remote
    fleet = ActorFleet(lambda actor_id: spawn(), 3)
    try:
        started = time.monotonic()
        while len(fleet.live) < 2 and time.monotonic() - started < 60:
            fleet.poll(timeout_s=1.0)
        fleet.poll(timeout_s=1.0)
        live = sorted(fleet.live)  # which two Ray placed first is up to its scheduler
        assert (len(live), fleet.pending, fleet.size) == (2, 1, 3)
        fleet.resize(2)  # the pending one goes, the live ones stay
        assert (sorted(fleet.live), fleet.pending) == (live, 0)
        fleet.resize(1)  # then the newest live one
        assert sorted(fleet.live) == live[:1]
        fleet.resize(2)  # ids are never reused, so no two actors share seeds
        fleet.poll(timeout_s=30.0)
        assert sorted(fleet.live) == [live[0], 3]
    finally:
        fleet.shutdown()


class _StartsSlowly:
    """Comes up at once ("up"), raises in its constructor ("raise"), or writes its pid where the
    test finds it and stalls in start-up ("stall")."""

    def __init__(self, folder: str, actor_id: int, start: str) -> None:
        if start == "raise":
            raise RuntimeError("this env cannot be built")
        if start == "stall":
            with open(os.path.join(folder, f"{actor_id}.pid"), "w") as out:
                out.write(str(os.getpid()))
            time.sleep(60)

    def ready(self) -> int:
        return 0


def _kill_when_started(folder, actor_id: int) -> None:
    path = folder / f"{actor_id}.pid"
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"actor {actor_id} never started its process"
        time.sleep(0.05)
    os.kill(int(path.read_text()), signal.SIGKILL)


def test_fleet_starts_again_an_actor_lost_before_it_came_up(ray_cluster, tmp_path):
    """Its process dies during start-up (as on a node lost mid-run): another takes its slot.
    An actor whose constructor raises is left out instead."""
    spawn = ray.remote(num_cpus=0.5)(_StartsSlowly).remote
    fleet = ActorFleet(
        lambda actor_id: spawn(str(tmp_path), actor_id, "stall" if actor_id == 0 else "up"), 1
    )
    try:
        _kill_when_started(tmp_path, 0)
        deadline = time.monotonic() + 60
        while not fleet.live:
            assert time.monotonic() < deadline, "no actor came up in the lost one's place"
            fleet.poll(timeout_s=1.0)
        assert sorted(fleet.live) == [1]
        counted = fleet.counters
        assert (counted.actor_restarts, counted.actor_start_failures, fleet.pending) == (1, 0, 0)
    finally:
        fleet.shutdown()

    broken = ActorFleet(
        lambda actor_id: spawn(str(tmp_path), actor_id, "raise" if actor_id == 1 else "up"), 2
    )
    try:
        deadline = time.monotonic() + 60
        while broken.pending:
            assert time.monotonic() < deadline
            broken.poll(timeout_s=1.0)
        counted = broken.counters
        assert sorted(broken.live) == [0]
        assert (counted.actor_start_failures, counted.actor_restarts) == (1, 0)
    finally:
        broken.shutdown()


def test_fleet_gives_up_a_slot_whose_actors_keep_dying_at_start(ray_cluster, tmp_path):
    spawn = ray.remote(num_cpus=0.5)(_StartsSlowly).remote
    # Every try is "actor 0" to the class: each one stalls in start-up and is killed there.
    fleet = ActorFleet(lambda actor_id: spawn(str(tmp_path), 0, "stall"), 1)
    try:
        with pytest.raises(ray.exceptions.RayActorError):
            for _ in range(START_TRIES):
                _kill_when_started(tmp_path, 0)
                (tmp_path / "0.pid").unlink()
                tried, deadline = fleet.counters.actor_restarts, time.monotonic() + 60
                while fleet.counters.actor_restarts == tried:
                    assert time.monotonic() < deadline
                    fleet.poll(timeout_s=0.5)
        counted = fleet.counters
        assert (counted.actor_restarts, counted.actor_start_failures) == (START_TRIES - 1, 1)
        assert fleet.size == 0
    finally:
        fleet.shutdown()


def test_a_run_id_is_registered_once_per_cluster(ray_cluster):
    first = spawn_control("dup-20261123-000000", "dup", "/tmp/x", 2)
    try:
        assert resolve_run("dup", list_runs()) == "dup-20261123-000000"
        with pytest.raises(RunConflict, match="already registered"):
            spawn_control("dup-20261123-000000", "dup", "/tmp/y", 2, wait_s=1.0)
        run_id, handle = find_run("dup")
        assert run_id == "dup-20261123-000000"
        assert scale_run(handle, 3)["metrics"][M.ACTORS_TARGET] == 3
        with pytest.raises(ScaleError, match="from 1 to"):
            scale_run(handle, 0)
    finally:
        ray.kill(first)


def test_run_link_never_blocks_and_outlives_its_control_actor(ray_cluster):
    link = RunLink(spawn_control("link-20261123-000000", "link", "/tmp/x", 2))
    assert link.exchange({M.FRAMES: 1}) is None  # nothing answered yet
    ray.get(link.handle.status.remote())  # the first report has been taken by now
    assert link.exchange({M.FRAMES: 2}) == 2
    scale_run(link.handle, 5)
    # The report in flight was answered before the request; the next one carries it.
    answers = []
    while 5 not in answers:
        time.sleep(0.05)
        answers.append(link.exchange({M.FRAMES: 3}))
        assert len(answers) < 200
    assert {a for a in answers if a is not None} <= {2, 5}
    ray.kill(link.handle)
    deadline = time.monotonic() + 10
    with pytest.raises(RunNotFound, match="ended"):
        while time.monotonic() < deadline:  # the kill takes effect asynchronously
            run_status(link.handle)
            time.sleep(0.05)
    while not link._lost:  # the next answer is the actor's death: noted, not raised
        link.exchange({M.FRAMES: 4})
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert link._lost and link.exchange({M.FRAMES: 5}) is None
    link.close({M.FRAMES: 5}, "finished")  # warns, does not raise


class _Flaky:
    def __init__(self, actor_id: int, broken: tuple[int, ...]) -> None:
        if actor_id in broken:
            raise RuntimeError(f"env of actor {actor_id} is broken")

    def ready(self) -> int:
        return 0


def test_an_actor_that_fails_to_start_is_left_out_and_counted(ray_cluster):
    spawn = ray.remote(num_cpus=0)(_Flaky).remote
    fleet = ActorFleet(lambda actor_id: spawn(actor_id, (1,)), 3)
    try:
        deadline = time.monotonic() + 60
        while fleet.pending:
            fleet.poll(timeout_s=1.0)
            assert time.monotonic() < deadline
        assert sorted(fleet.live) == [0, 2] and fleet.counters.actor_start_failures == 1
    finally:
        fleet.shutdown()

    # With no actor left at all, the start failure ends the run, with the env's error.
    fleet = ActorFleet(lambda actor_id: spawn(actor_id, (0, 1)), 2)
    try:
        with pytest.raises(ray.exceptions.RayActorError, match="env of actor . is broken"):
            while True:
                fleet.poll(timeout_s=1.0)
                assert time.monotonic() < deadline + 60
    finally:
        fleet.shutdown()


def _crash_config(tmp_path, env_kwargs: str, env_id=CRASHING_ID, extra=(), **train):
    return load_config(
        None,
        [
            *extra,
            f"env.id={env_id}",
            f"env.kwargs={env_kwargs}",
            "env.vectorization=sync",
            "actors.envs_per_actor=2",
            "actors.segment_length=4",
            "learner.num_threads=1",
            f"train.run_root={tmp_path}",
            *(f"train.{k}={v}" for k, v in train.items()),
        ],
    )


ROUNDS = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "plain"])
"""Sync faults, in rounds run as a compiled graph and as plain actor calls."""


@ROUNDS
def test_a_crashing_env_costs_one_segment_and_is_rebuilt_in_its_actor(
    ray_cluster, tmp_path, compiled
):
    marker = tmp_path / "crashed"
    config = _crash_config(
        tmp_path,
        f"{{crash_at: 30, marker: {marker}}}",
        extra=[f"train.compiled_graph={compiled}"],
        total_frames=400,
    )
    run = RunDir.create(tmp_path, config.name)
    result = train(config, run)
    assert marker.exists(), "the fault was never injected"
    lines = run.read_metrics()
    last = lines[-1]
    assert (last[M.ENV_REBUILDS], last[M.SEGMENTS_DROPPED], last[M.ACTOR_RESTARTS]) == (1, 1, 0)
    # One update took only the other actor's segment (8 frames); the crashed actor's next
    # segment, from its rebuilt env, was in the one after: no process start to wait for.
    batches = [x[M.BATCH_FRAMES] for x in lines]
    assert batches.count(8) == 1 and batches[batches.index(8) + 1] == 16
    assert result.frames >= 400 and last[M.ACTORS_LIVE] == 2
    # A crash is a result, not a fault: the graph carries on through it.
    assert {x[M.COMPILED_ROUND] for x in lines} == {int(compiled)}


def test_an_env_that_always_crashes_ends_the_run_naming_the_error(ray_cluster, tmp_path):
    config = _crash_config(tmp_path, "{crash_at: 3}", total_frames=10_000, max_actor_failures=2)
    with pytest.raises(ActorFailures, match="malformed segments in 3 rounds in a row") as err:
        train(config, RunDir.create(tmp_path, config.name))
    assert f"env {CRASHING_ID} raised in actor" in str(err.value)
    assert "RuntimeError: injected env crash at step 3" in str(err.value)  # the traceback
    assert not ray.util.list_named_actors(all_namespaces=True)


@ROUNDS
def test_a_dead_learner_restarts_from_the_latest_checkpoint(ray_cluster, tmp_path, compiled):
    config = _small_config(
        tmp_path, "checkpoint.every_updates=3", f"train.compiled_graph={compiled}"
    )
    run = RunDir.create(tmp_path, config.name)

    def kill_the_learner(record):
        if record[M.UPDATES] == 5:
            (pid,) = _actor_pids("ray::LearnerActor")
            os.kill(pid, signal.SIGKILL)

    result = train(config, run, on_update=kill_the_learner)
    lines = run.read_metrics()
    # Updates 4 and 5 are lost with the learner; it comes back at ckpt-3 (version 3).
    assert [x[M.POLICY_VERSION] for x in lines][:7] == [1, 2, 3, 4, 5, 4, 5]
    assert lines[-1][M.LEARNER_RESTARTS] == 1 and result.frames >= 640
    assert lines[-1][M.COMPILED_ROUND] == int(compiled)  # a graph with the new learner


def test_the_learner_keeper_holds_the_update_the_run_has_not_counted(ray_cluster, tmp_path):
    """What a run that ends between an update and its count must still count: the update in
    flight (its statistics once the learner answers), or the one that landed; once."""
    config = _small_config(tmp_path, "actors.num_actors=1")
    store = Checkpoints.for_run(tmp_path / "run")
    keeper = LearnerKeeper(config, env_spaces(config.env), store, Counters())
    (actor,) = spawn_rollout_actors(config.env, config.actors, config.learner.model, 0, [0])
    try:
        keeper.submit([actor.sample.remote(keeper.weights)[0]])  # stopped while in flight
        stats = keeper.uncounted()
        assert stats[M.BATCH_FRAMES] == 32 and stats[M.POLICY_VERSION] == 1
        assert keeper.uncounted() is None
        landed = keeper.land(keeper.submit([actor.sample.remote(keeper.weights)[0]]))
        assert keeper.uncounted() is landed and landed[M.POLICY_VERSION] == 2
        keeper.land(keeper.submit([actor.sample.remote(keeper.weights)[0]]))
        keeper.counted()
        assert keeper.uncounted() is None
    finally:
        ray.kill(actor)
        keeper.kill()


def test_non_finite_updates_roll_back_then_end_the_run(ray_cluster, tmp_path):
    config = _crash_config(
        tmp_path,
        "{explode_at: 12}",
        env_id=EXPLODING_ID,
        extra=["checkpoint.every_updates=1"],
        total_frames=100_000,
        max_nonfinite_updates=2,
    )
    run = RunDir.create(tmp_path, config.name)
    with pytest.raises(LearnerFailed, match="2 non-finite updates in a row .* again after a"):
        train(config, run)
    lines = run.read_metrics()
    assert lines[-1][M.ROLLBACKS] == 1
    assert lines[0][M.SKIPPED_UPDATES] == 0 and max(x[M.SKIPPED_UPDATES] for x in lines) >= 1
    assert Checkpoints.for_run(run.path).latest() is not None


def test_checkpoint_storage_going_away_does_not_stop_training(
    ray_cluster, tmp_path, s3_bucket, caplog
):
    """Storage that fails mid-run (a deleted bucket here) costs checkpoints, not the run."""
    import s3fs

    s3 = s3fs.S3FileSystem(**s3_bucket["options"])
    config = _small_config(
        tmp_path,
        "checkpoint.every_updates=2",
        f"checkpoint.storage={s3_bucket['url']}",
        f"checkpoint.storage_options={{endpoint_url: '{s3_bucket['options']['endpoint_url']}'}}",
    )
    run = RunDir.create(tmp_path, config.name)

    def delete_the_bucket(record):
        if record[M.UPDATES] == 3:
            s3.rm(s3_bucket["url"], recursive=True)

    result = train(config, run, on_update=delete_the_bucket)
    assert result.frames >= config.train.total_frames
    assert run.read_metrics()[-1][M.UPDATES] > 4
    assert f"checkpoint to {s3_bucket['url']}/{run.path.name} failed" in caplog.text


def _actor_pids(title: str = "ray::RolloutActor") -> list[int]:
    """Processes of live actors of a class, found as an operator would, by Ray's process
    title; only those of the test session's own Ray (they descend from this process)."""
    import psutil

    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline()[0].startswith(title):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
    return pids


@ROUNDS
def test_an_actor_process_killed_mid_run_is_replaced_without_a_stall(
    ray_cluster, tmp_path, compiled
):
    """kill -9 of a rollout actor's process: the round's update goes ahead with the other
    actor (a compiled round is run again plainly for that), a replacement starts, and no
    update waits anywhere near train.sample_timeout_s."""
    config = _small_config(
        tmp_path,
        "train.total_frames=1280",
        "train.sample_timeout_s=20",
        f"train.compiled_graph={compiled}",
    )
    run = RunDir.create(tmp_path, config.name)
    killed = []

    def kill_an_actor(record):
        if record[M.UPDATES] == 3:
            (pid, *_) = _actor_pids()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = train(config, run, on_update=kill_an_actor)
    assert killed, "the fault was never injected"
    lines = run.read_metrics()
    last = lines[-1]
    assert (last[M.ACTOR_RESTARTS], last[M.SEGMENTS_DROPPED]) == (1, 1)
    assert result.frames >= 1280 and 32 in {x[M.BATCH_FRAMES] for x in lines}  # one actor's
    gaps = np.diff([x[M.WALL_TIME] for x in lines])
    assert gaps.max() < config.train.sample_timeout_s / 2, gaps  # found dead, not timed out
    if compiled:  # the failed round ran plainly; the graph was built again after it
        assert lines[3][M.COMPILED_ROUND] == 0 and lines[-1][M.COMPILED_ROUND] == 1


def test_a_graph_that_cannot_be_built_leaves_plain_rounds(
    ray_cluster, tmp_path, monkeypatch, caplog
):
    """Where Ray cannot compile the graph, the run trains on plain calls, saying so once."""
    from ray.dag.dag_node import DAGNode

    def no_channels(self, *args, **kwargs):
        raise RuntimeError("no shared memory here")

    monkeypatch.setattr(DAGNode, "experimental_compile", no_channels)
    config = _small_config(tmp_path)
    run = RunDir.create(tmp_path, config.name)
    result = train(config, run)
    assert result.frames == 640
    assert {x[M.COMPILED_ROUND] for x in run.read_metrics()} == {0}
    assert caplog.text.count("no compiled graph for these actors") == 1
    assert "no shared memory here" in caplog.text


def test_a_linear_lr_schedule_and_reward_scaling_run_and_are_checkpointed(ray_cluster, tmp_path):
    config = _small_config(
        tmp_path, "learner.lr_schedule=linear", "learner.lr=1e-3", "learner.normalize_rewards=true"
    )
    run = RunDir.create(tmp_path, config.name)
    train(config, run)
    lines = run.read_metrics()  # 10 updates of 64 frames, 640 in all
    assert [x[M.LR] for x in lines] == pytest.approx([1e-3 * (1 - n / 10) for n in range(10)])
    state = Checkpoints.for_run(run.path).latest().learner
    assert state["frames"] == 640 and 0 < state["return_norm"]["count"] <= 640


def test_past_the_buffer_budget_a_run_goes_on_with_plain_rounds(
    ray_cluster, tmp_path, monkeypatch, caplog
):
    """Ray keeps a torn-down graph's channel buffers: once torn-down graphs have left more
    than the budget behind, the run builds no more and says why, once. (A budget of one
    byte: the first graph is built, the second not.)"""
    from services.training import compiled

    monkeypatch.setattr(compiled, "BUFFERS_LEFT_BUDGET", 1)
    config = _small_config(tmp_path)
    run = RunDir.create(tmp_path, config.name)
    rounds = []

    def close_after_3(record):  # as an actor replaced would: the graph is torn down
        rounds.append(record[M.COMPILED_ROUND])
        if len(rounds) == 3:
            run_parts_compiled[0].close()

    run_parts_compiled = []
    original = compiled.CompiledRounds.__init__

    def keep(self, parts):
        original(self, parts)
        run_parts_compiled.append(self)

    monkeypatch.setattr(compiled.CompiledRounds, "__init__", keep)
    assert train(config, run, on_update=close_after_3).frames == 640
    assert rounds[:3] == [1, 1, 1] and set(rounds[3:]) == {0}
    assert caplog.text.count("ray-project/ray#43836") == 1


def _held_config(tmp_path, *overrides: str):
    """(config, marker, release) of a run whose actors have 2 `HeldEnv`s x 4 steps: the
    first env to step is held until the file `release` exists."""
    marker, release = tmp_path / "held", tmp_path / "release"
    config = load_config(
        None,
        [
            f"env.id={HELD_ID}",
            f"env.kwargs={{marker: {marker}, release: {release}}}",
            "env.vectorization=sync",
            "actors.envs_per_actor=2",
            "actors.segment_length=4",
            "learner.num_threads=1",
            f"train.run_root={tmp_path}",
            *overrides,
        ],
    )
    return config, marker, release


def test_a_stalled_actor_in_a_compiled_round_is_replaced(ray_cluster, tmp_path):
    """One actor is held at its first step for good: the compiled round misses
    train.sample_timeout_s, the held actor is replaced, and rounds run compiled again (with
    the free actor, and its replacement once up)."""
    config, marker, release = _held_config(
        tmp_path, "train.sample_timeout_s=3", "train.total_frames=160"
    )
    run = RunDir.create(tmp_path, config.name)
    started = time.monotonic()
    try:
        result = train(config, run)
    finally:
        release.touch()
    lines = run.read_metrics()
    assert marker.exists() and result.frames >= 160
    first = lines[0]
    # The first round lost the held actor (replaced); the plain round after it took the
    # free actor's segment alone.
    assert (first[M.ACTOR_RESTARTS], first[M.SEGMENTS_DROPPED], first[M.BATCH_FRAMES]) == (
        1,
        1,
        8,
    )
    assert first[M.COMPILED_ROUND] == 0 and lines[-1][M.COMPILED_ROUND] == 1
    assert time.monotonic() - started < 60  # the teardown did not wait on the held actor


def test_async_mode_does_not_wait_for_a_held_actor(ray_cluster, tmp_path):
    """One of three actors is held at its first step until update 30 has landed; the other
    two are free. Async updates go on with the free ones, and the held actor's segment, made
    with the first weights, arrives 30 versions behind, past learner.max_policy_lag, and is
    left out. Sync would have waited for it at the first update."""
    config, marker, release = _held_config(
        tmp_path,
        "actors.num_actors=3",
        "algo.mode=async",
        "algo.batch_segments=1",
        "learner.max_policy_lag=8",
        "train.total_frames=800",
    )
    assert config.learner.vtrace  # on by default in async mode

    def release_at_30(record):
        if record[M.UPDATES] == 30:
            release.touch()

    run = RunDir.create(tmp_path, config.name)
    result = train(config, run, on_update=release_at_30)
    lines = run.read_metrics()
    assert marker.exists() and release.exists() and result.frames >= 800
    # One segment an update: 8 frames, or none when it was stale (no step). The held actor
    # was never taken for stalled: nothing waited for it.
    assert {x[M.BATCH_FRAMES] for x in lines} <= {0, 8}
    assert all(x[M.ACTORS_LIVE] == 3 and x[M.ACTOR_RESTARTS] == 0 for x in lines)
    # Its segment came 30 versions or more behind: stale (as may be a free one that queued
    # long on this loaded machine).
    stale = lines[-1][M.STALE_SEGMENTS]
    assert stale >= 1 and sum(x[M.BATCH_FRAMES] == 0 for x in lines) == stale
    assert max(x[M.POLICY_LAG_MAX] for x in lines) >= 30
    assert all(x[M.POLICY_LAG_MEAN] <= x[M.POLICY_LAG_MAX] for x in lines)
    assert all(0 < x[M.RHO_MEAN] <= 1 for x in lines if x[M.BATCH_FRAMES])


def _shrunk_run(tmp_path, path: str, *overrides: str):
    """A shipped config with 2 envs per actor and one learner thread: (result,
    metrics lines, the saved model's parameters)."""
    config = load_config(
        path,
        [
            "actors.envs_per_actor=2",
            "learner.num_threads=1",
            f"train.run_root={tmp_path}",
            *overrides,
        ],
    )
    run = RunDir.create(tmp_path, config.name)
    result = train(config, run)
    model = torch.load(run.path / "model.pt", weights_only=True)["params"]
    return result, run.read_metrics(), model


def test_a_mujoco_env_trains_with_a_gaussian_policy(ray_cluster, tmp_path):
    """configs/halfcheetah.yaml, shrunk: 6-D continuous actions and normalised observations
    through the whole Ray path, evaluation included."""
    result, lines, model = _shrunk_run(
        tmp_path, "configs/halfcheetah.yaml", "train.total_frames=160", "train.eval_episodes=2"
    )
    assert result.frames == 160 and len(lines) == 5
    assert all(np.isfinite(x[M.LOSS_POLICY]) and np.isfinite(x[M.GRAD_NORM]) for x in lines)
    assert np.isfinite(result.eval_return)
    assert model["log_std"].shape == (64, 6) and model["obs_norm.count"] == 160  # gSDE


def test_pong_trains_from_pixels(ray_cluster, tmp_path):
    """configs/pong.yaml, shrunk: stacked uint8 frames from ALE's native vector env through
    the object store to the CNN learner, and a sampled-action evaluation."""
    result, lines, model = _shrunk_run(
        tmp_path,
        "configs/pong.yaml",
        "train.total_frames=100",
        "train.eval_episodes=1",
        "env.kwargs.frameskip=32",  # a short evaluation episode: 32 emulator frames a step
    )
    assert result.frames == 100 and len(lines) == 5
    assert all(np.isfinite(x[M.LOSS_TOTAL]) and x[M.BATCH_FRAMES] == 20 for x in lines)
    assert result.eval_return.is_integer() and -21 <= result.eval_return <= 21  # one game
    assert model["policy_torso.convs.0.weight"].shape == (32, 4, 8, 8)
