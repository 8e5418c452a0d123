"""Shared fixtures. Ray's temp files and auth token live in a temp folder, never in $HOME."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_RAY_DIR: str | None = None


def pytest_configure(config) -> None:
    # Before Ray is imported anywhere: a short temp dir (Unix socket paths are limited to
    # ~107 bytes), token auth on, with a token this session owns.
    global _RAY_DIR
    _RAY_DIR = tempfile.mkdtemp(prefix="troupe-ray-")
    token = Path(_RAY_DIR) / "auth_token"
    token.write_text(secrets.token_hex(32))
    os.environ["RAY_TMPDIR"] = _RAY_DIR
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    os.environ.pop("RAY_ADDRESS", None)
    # Before MuJoCo is imported anywhere (it picks its GL backend then): headless rendering.
    from actors.video import HEADLESS_GL

    os.environ.setdefault("MUJOCO_GL", HEADLESS_GL)


_GPU_DESELECTED = pytest.StashKey[int]()
LANE_MARKS = ("ray", "subprocess", "slow", "launcher", "gpu")
"""A test with none of these is a unit test (`pytest -m unit`)."""


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test by what it starts, from the fixtures it takes, so no lane depends on a
    test's author remembering a mark: `ray_cluster` is Ray, `troupe_cmd`/`cli_env` a
    subprocess. Tests that start either without these fixtures carry the mark themselves."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "ray_cluster" in fixtures:
            item.add_marker(pytest.mark.ray)
        if fixtures & {"troupe_cmd", "cli_env"}:
            item.add_marker(pytest.mark.subprocess)
        if not any(item.get_closest_marker(mark) for mark in LANE_MARKS):
            item.add_marker(pytest.mark.unit)
    # GPU tests exist to run on a GPU: where torch sees none they are deselected (not skipped
    # one by one), and the header says how many and where to run them.
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not _cuda_available():
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
        config.stash[_GPU_DESELECTED] = len(gpu)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_report_collectionfinish(config, start_path, items) -> str | None:
    count = config.stash.get(_GPU_DESELECTED, 0)
    if count:
        return f"gpu: {count} tests deselected, no CUDA here (`pytest -m gpu` on a GPU machine)"
    return None


def pytest_unconfigure(config) -> None:
    if _RAY_DIR:
        shutil.rmtree(_RAY_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every integration test; yields its address."""
    import ray

    from services.cluster.connection import LOCAL_SYSTEM_CONFIG

    ray.init(
        address="local",
        num_cpus=4,  # logical: sync A2C's learner and actors take turns on the 2 cores
        include_dashboard=False,
        logging_level="WARNING",
        _system_config=LOCAL_SYSTEM_CONFIG,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """Environment for `troupe` subprocesses: the test session's Ray settings, no RAY_ADDRESS."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def troupe_cmd() -> list[str]:
    return [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3-compatible server (moto's), speaking the real S3 protocol over HTTP."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch) -> dict:
    """A fresh bucket on the local S3 server, with credentials in the environment (as a user
    would have them) and the endpoint as checkpoint.storage_options. Yields the bucket URL and
    the options."""
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "troupe-test",
        "AWS_SECRET_ACCESS_KEY": "troupe-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    bucket = f"troupe-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return {"url": f"s3://{bucket}", "options": {"endpoint_url": s3_endpoint}}


# --- Shared helpers (plain functions: `from tests.conftest import make_segment`) -------------


def make_segment(t=4, b=3, obs_dim=2, actor_id=7, truncate=((1, 2),), terminate=((2, 0),)):
    """A valid hand-made segment: rewards of 1, the given (t, b) truncations and terminations,
    random observations and actions of 2 choices, behaviour log-probs of -0.69, one finished
    episode (return 3, length 3), policy version 5."""
    import numpy as np

    from learner.core import Segment

    rng = np.random.default_rng(0)
    terminated = np.zeros((t, b), dtype=bool)
    truncated = np.zeros((t, b), dtype=bool)
    for i, j in terminate:
        terminated[i, j] = True
    for i, j in truncate:
        truncated[i, j] = True
    cut = np.flatnonzero((truncated & ~terminated).reshape(-1))
    return Segment(
        obs=rng.normal(size=(t + 1, b, obs_dim)).astype(np.float32),
        actions=rng.integers(0, 2, size=(t, b)),
        rewards=np.ones((t, b), dtype=np.float32),
        terminated=terminated,
        truncated=truncated,
        valid=np.ones((t, b), dtype=bool),
        behaviour_logp=np.full((t, b), -0.69, dtype=np.float32),
        final_obs=rng.normal(size=(len(cut), obs_dim)).astype(np.float32),
        final_index=cut.astype(np.int64),
        episode_returns=np.array([3.0], dtype=np.float32),
        episode_lengths=np.array([3], dtype=np.int64),
        policy_version=5,
        actor_id=actor_id,
    )


def sample_segments(learner, n=2, t=8, b=4, **env):
    """`n` segments of `t` steps of `b` envs (actors 0 .. n-1, `EnvConfig(**env)`, CartPole by
    default), sampled with the learner's current weights."""
    from actors.config import ActorConfig, EnvConfig
    from actors.rollout import RolloutWorker

    actors = ActorConfig(envs_per_actor=b, segment_length=t)
    workers = [RolloutWorker(EnvConfig(**env), actors, learner.config.model, i) for i in range(n)]
    weights = learner.get_weights()
    return [w.sample(weights) for w in workers]
