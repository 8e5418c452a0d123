"""`troupe` commands for runs on a cluster: submit, status, logs, stop, scale, metrics, serve."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from learner import metrics as M


def _submit(args: argparse.Namespace) -> int:
    from services.cluster import jobs

    job_id = jobs.submit(
        args.config, args.set or (), args.address, args.working_dir, tune=args.tune
    )
    print(job_id)
    hint = f" --address {args.address}" if args.address else ""
    print(
        f"troupe: submitted; follow it with `troupe logs {job_id} --follow{hint}`",
        file=sys.stderr,
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from services.cluster import jobs

    info = jobs.status(args.address, args.job)
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key + ':':12} {value}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from services.cluster import jobs

    jobs.logs(args.address, args.job, follow=args.follow)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from services.cluster import jobs

    state = jobs.stop(args.address, args.job, wait_s=args.wait)
    print(f"troupe: job {args.job} {state}")
    return 0 if state in jobs.TERMINAL else 1


def _scale(args: argparse.Namespace) -> int:
    from services.cluster.connection import cluster_connection
    from services.control.registry import find_run, scale_run

    with cluster_connection(args.address):
        run_id, handle = find_run(args.run)
        status = scale_run(handle, args.actors)
    figures = status["metrics"]
    print(
        f"troupe: run {run_id} now wants {figures[M.ACTORS_TARGET]} rollout actors "
        f"(live {figures[M.ACTORS_LIVE]}, pending {figures[M.ACTORS_PENDING]} at the last "
        "update; it applies the change before its next update)"
    )
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from services.cluster.connection import cluster_connection
    from services.control.registry import RayRuns, RunNotFound

    runs = RayRuns()
    with cluster_connection(args.address):
        while True:
            try:
                statuses = [runs.status(args.run)] if args.run else runs.statuses()
            except RunNotFound:
                if not args.watch:
                    raise
                print(f"troupe: run {args.run} has ended", file=sys.stderr)
                return 0
            _print_statuses(statuses, args.json)
            if not args.watch:
                return 0
            time.sleep(args.interval)


def _print_statuses(statuses: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for status in statuses:
            print(json.dumps(status), flush=True)
        return
    if not statuses:
        print("troupe: no runs on this cluster", flush=True)
    for status in statuses:
        print(f"run {status['run']} ({status['state']}), run dir {status['run_dir']}")
        for key, value in status["metrics"].items():
            print(f"  {key:28} {_figure_text(value)}")
    sys.stdout.flush()


def _figure_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _serve(args: argparse.Namespace) -> int:
    import ray

    from services.cluster.connection import cluster_connection, watch_gcs
    from services.control.auth import ray_token_authorize
    from services.control.http_api import LOOPBACK_HOSTS, make_server
    from services.control.registry import RayRuns

    with cluster_connection(args.address):
        server = make_server(RayRuns(), ray_token_authorize, args.host, args.port)
        host, port = server.server_address[:2]
        gcs = ray.get_runtime_context().gcs_address

        def gone() -> None:
            print(f"troupe: the Ray cluster at {gcs} is gone; stopping", flush=True)
            server.shutdown()

        watch_gcs(gcs, gone)
        print(f"troupe: serving http://{host}:{port} (/status, /metrics, POST /scale)", flush=True)
        if args.host not in LOOPBACK_HOSTS:
            print(
                f"troupe: warning: --host {args.host} is reachable beyond this machine: anyone "
                "who can reach the port reads every run's status and metrics (POST /scale "
                "still needs the token, which travels in clear over plain HTTP). Prefer "
                "--host 127.0.0.1 with an SSH tunnel",
                file=sys.stderr,
                flush=True,
            )
        try:
            server.serve_forever()
        finally:
            server.server_close()
    return 0


def _actor_count(text: str) -> int:
    from services.control.run_control import MAX_ACTORS

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= value <= MAX_ACTORS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_ACTORS}, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def _interval(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


JOB_ADDRESS = "Ray job API, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS)"
RAY_ADDRESS = "Ray cluster address HOST:6379 (default: RAY_ADDRESS, else this machine's cluster)"


def add_commands(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="submit a training run as a Ray Job")
    submit.add_argument("config", help="run config YAML, inside the working dir")
    submit.add_argument("--address", help=JOB_ADDRESS)
    submit.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, repeatable")
    submit.add_argument(
        "--working-dir", default=".", help="folder uploaded with the job (default: .)"
    )
    submit.add_argument(
        "--tune",
        action="store_true",
        help="run the config's tune: section as a search (`troupe tune`) instead of one run",
    )
    submit.set_defaults(func=_submit)

    for name, func, text in (
        ("status", _status, "a submitted job's status"),
        ("logs", _logs, "a submitted job's output"),
        ("stop", _stop, "stop a submitted job and its actors"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("job", help="job id printed by `troupe submit`")
        cmd.add_argument("--address", help=JOB_ADDRESS)
        if name == "status":
            cmd.add_argument("--json", action="store_true")
        if name == "logs":
            cmd.add_argument("--follow", "-f", action="store_true", help="stream until it ends")
        if name == "stop":
            cmd.add_argument(
                "--wait", type=_interval, default=30.0, help="seconds to wait for it to end"
            )
        cmd.set_defaults(func=func)

    scale = sub.add_parser("scale", help="change a running run's rollout actor count")
    scale.add_argument("run", help="run id (its run dir's name), or its name if unique")
    scale.add_argument("--actors", type=_actor_count, required=True, help="actors wanted")
    scale.add_argument("--address", help=RAY_ADDRESS)
    scale.set_defaults(func=_scale)

    metrics = sub.add_parser("metrics", help="a running run's live metrics")
    metrics.add_argument("run", nargs="?", help="run id or name (default: every run)")
    metrics.add_argument("--json", action="store_true", help="one JSON object per run")
    metrics.add_argument("--watch", action="store_true", help="repeat until the run ends")
    metrics.add_argument("--interval", type=_interval, default=2.0, help="--watch period (s)")
    metrics.add_argument("--address", help=RAY_ADDRESS)
    metrics.set_defaults(func=_metrics)

    serve = sub.add_parser("serve", help="HTTP API: /status, /metrics, POST /scale")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8270, help="port (default: 8270)")
    serve.add_argument("--address", help=RAY_ADDRESS)
    serve.set_defaults(func=_serve)
