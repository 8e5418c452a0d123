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


def pytest_unconfigure(config) -> None:
    if _RAY_DIR:
        shutil.rmtree(_RAY_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every integration test; yields its address."""
    import ray

    ray.init(
        address="local",
        num_cpus=4,  # logical: sync A2C's learner and actors take turns on the 2 cores
        include_dashboard=False,
        logging_level="WARNING",
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
