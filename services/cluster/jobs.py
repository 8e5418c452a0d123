"""Training runs as Ray Jobs: submit, status, logs, stop, through Ray's Job Submission API.

The job's entrypoint is `python -m services.job --config CONFIG [--set K=V ...]`, exactly what
`ray job submit ... -- python -m services.job --config CONFIG` runs, so both routes behave
the same. The working dir (default: the current one) is uploaded with the job; Ray leaves out
what `.gitignore` lists (the venv, `runs/`), and the config must lie inside it.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learner.config import ConfigError
from services.config import load_config

SECRET_EXCLUDES = [
    ".env", ".env.*", "*.pem", "*.key", "*.p12", "id_rsa*", "id_ed25519*", "id_ecdsa*",
    ".ssh/", ".aws/", ".ray/", ".kube/", ".netrc", ".git-credentials", "*credentials*",
    "auth_token", "*.tfstate",
]  # fmt: skip
"""Files that hold secrets by name or by convention: a job's working dir is uploaded to the
cluster's storage, where whoever can read it would find them."""
EXCLUDES = ["runs/", "__pycache__/", "*.egg-info/", *SECRET_EXCLUDES]
"""Never uploaded with a job, even without a `.gitignore` saying so (Ray itself leaves out
`.git` and `.venv`)."""
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobNotFound(LookupError):
    def __str__(self) -> str:
        return str(self.args[0])


class JobApiError(RuntimeError):
    """The job API refused a request (auth, a duplicate id, a server error)."""


def client(address: str | None):
    """A Job Submission client for `address` (http://HEAD:8265); without one, Ray's own
    default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, else a cluster running on this machine."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = (
            address
            or os.environ.get("RAY_API_SERVER_ADDRESS")
            or os.environ.get("RAY_ADDRESS", "the local cluster")
        )
        raise ConnectionError(
            f"cannot reach the Ray job API at {where}: {err}. Pass --address "
            "http://HEAD:8265 (with `ray dashboard CLUSTER.yaml` forwarding it), and make sure "
            "this machine has the cluster's auth token (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
        ) from None


def entrypoint(
    config: Path, overrides: Sequence[str], working_dir: Path, tune: bool = False
) -> str:
    """The job's command line; `config` becomes relative to the uploaded working dir."""
    config, working_dir = config.resolve(), working_dir.resolve()
    try:
        relative = config.relative_to(working_dir)
    except ValueError:
        raise ConfigError(
            f"config {config} lies outside the working dir {working_dir}, so the job could not "
            "read it: run from a folder that holds it, or pass --working-dir"
        ) from None
    args = ["python", "-m", "services.job", "--config", relative.as_posix()]
    if tune:
        args.append("--tune")
    for item in overrides:
        args += ["--set", item]
    return shlex.join(args)


def submit(
    config: str,
    overrides: Sequence[str],
    address: str | None,
    working_dir: str = ".",
    submission_id: str | None = None,
    tune: bool = False,
) -> str:
    """Validate the run config here (errors name the field before anything is sent), then
    submit it (`tune`: as a search, `troupe tune` of the config's tune section); returns the
    job's submission id."""
    run = load_config(config, overrides)
    if tune:
        from services.tune.search import check_search

        check_search(run, run.tune, cluster_cpus=None)
    wd = Path(working_dir)
    if not wd.is_dir():
        raise ConfigError(f"--working-dir {working_dir}: no such directory")
    command = entrypoint(Path(config), overrides, wd, tune)
    jobs = client(address)
    try:
        return jobs.submit_job(
            entrypoint=command,
            submission_id=submission_id,
            runtime_env={"working_dir": str(wd.resolve()), "excludes": EXCLUDES},
            metadata={"troupe_run": run.name},
        )
    except RuntimeError as err:
        raise JobApiError(f"the job API refused the submission: {err}") from None


def _job_call(call, job_id: str):
    """Ray's client raises RuntimeError with the HTTP status for every refusal; an unknown job
    id is the 404."""
    try:
        return call()
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise JobNotFound(f"job {job_id}: {err}") from None
        raise JobApiError(f"job {job_id}: {err}") from None


def status(address: str | None, job_id: str) -> dict[str, Any]:
    jobs = client(address)
    info = _job_call(lambda: jobs.get_job_info(job_id), job_id)
    return {
        "job": job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "run": (info.metadata or {}).get("troupe_run"),
    }


def logs(address: str | None, job_id: str, follow: bool = False) -> None:
    jobs = client(address)
    if not follow:
        sys.stdout.write(_job_call(lambda: jobs.get_job_logs(job_id), job_id))
        return
    _job_call(lambda: jobs.get_job_status(job_id), job_id)

    import asyncio

    async def _tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(_tail())


def stop(address: str | None, job_id: str, wait_s: float = 30.0) -> str:
    """Stop a job (Ray sends SIGTERM, then SIGKILL) and wait until it has ended; its
    driver's actors end with it. Returns the final status."""
    jobs = client(address)
    _job_call(lambda: jobs.stop_job(job_id), job_id)
    deadline = time.monotonic() + wait_s
    while True:
        state = str(jobs.get_job_status(job_id).value)
        if state in TERMINAL or time.monotonic() >= deadline:
            return state
        time.sleep(0.5)
