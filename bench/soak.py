"""Soak: a long training run with a rollout actor's process killed every minute. Memory must
stay flat: the resident set of every process of the run and of Ray, and the object store.

The benchmark starts a local Ray, runs `troupe train --address` against it as its own driver
process (what a Ray job runs), and every `--sample-s` seconds records:

- RSS in MiB of the driver, the learner, the rollout actors (summed) and Ray's own processes
  (GCS, raylet with the object store, agents, idle workers);
- the object store's bytes in use and object count (the raylet's store stats);
- frames, frames/s and the run's restart counters from its metrics.jsonl.

Every `--kill-every-s` seconds it SIGKILLs one rollout actor process, as the OOM killer or a
lost node would. The verdict compares the median of each series over the last quarter of the
run with the median over the second quarter (the first is warm-up) and fits a slope; it
writes every sample to `--out` (JSON).

    python -m bench.soak --minutes 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

MiB = 1024 * 1024
ROLES = ("driver", "learner", "actor", "gcs", "raylet", "other")


def _role(proc: psutil.Process, driver_pid: int) -> str | None:
    try:
        if proc.pid == driver_pid:
            return "driver"
        argv = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    title = argv[0] if argv else ""
    if title.startswith("ray::RolloutActor"):
        return "actors"
    if title.startswith("ray::LearnerActor"):
        return "learner"
    if title.endswith("gcs_server"):
        return "gcs"
    if title.endswith("raylet"):
        return "raylet"
    return "other"


def memory_by_role(ray_pids: set[int], driver_pid: int) -> dict[str, float]:
    """RSS (MiB) per role, over the driver, its children and the processes Ray started;
    `actor` is the mean over the rollout actor processes (their count changes as they are
    killed and replaced), `other` Ray's agents, log monitor, idle workers and the run's
    control actor."""
    totals = dict.fromkeys((*ROLES, "actors"), 0.0)
    seen: set[int] = set()
    actors = 0
    roots = [psutil.Process(pid) for pid in ray_pids | {driver_pid} if psutil.pid_exists(pid)]
    for root in roots:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in family:
            if proc.pid in seen or proc.pid == os.getpid():
                continue
            seen.add(proc.pid)
            role = _role(proc, driver_pid)
            try:
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if role:
                totals[role] += rss / MiB
                actors += role == "actors"
    totals["actor"] = totals.pop("actors") / actors if actors else float("nan")
    totals["actor_count"] = actors
    return totals


def object_store(gcs_address: str) -> tuple[float, int]:
    """(MiB in use, objects) across the cluster, from the raylet's store stats."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    stats = get_memory_info_reply(get_state_from_address(gcs_address)).store_stats
    return stats.object_store_bytes_used / MiB, stats.num_local_objects


def last_metrics(run_dir: Path | None) -> dict:
    if run_dir is None or not (run_dir / "metrics.jsonl").exists():
        return {}
    with open(run_dir / "metrics.jsonl", "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 8192))
        lines = f.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def kill_an_actor(rng: random.Random) -> int | None:
    """SIGKILL one rollout actor of this benchmark's Ray (its processes descend from ours)."""
    actors = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline()[0].startswith("ray::RolloutActor"):
                actors.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
    if not actors:
        return None
    victim = rng.choice(actors)
    os.kill(victim.pid, signal.SIGKILL)
    return victim.pid


def verdict(samples: list[dict], key: str) -> dict:
    """Second-quarter and last-quarter medians, their ratio, and a least-squares slope over
    the last three quarters (the first is warm-up). NaN samples (no actor up) are left out."""
    n = len(samples)
    points = [(i, s["t_s"], s[key]) for i, s in enumerate(samples) if s[key] == s[key]]
    second = [v for i, _, v in points if n // 4 <= i < n // 2]
    last = [v for i, _, v in points if i >= 3 * n // 4]
    fit = [(t, v) for i, t, v in points if i >= n // 4]
    slope = 0.0
    if len({t for t, _ in fit}) >= 2:
        slope = statistics.linear_regression(*zip(*fit, strict=True)).slope * 3600
    early, late = statistics.median(second or [0]), statistics.median(last or [0])
    return {
        "early": early,
        "late": late,
        "ratio": late / early if early else float("nan"),
        "slope_per_hour": slope,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--kill-every-s", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--config", default="configs/cartpole.yaml")
    parser.add_argument("--out", default="soak.json", help="every sample, as JSON")
    parser.add_argument(
        "--list-objects",
        action="store_true",
        help="at the end, print the object store's objects and who holds them (`ray memory`)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the run, e.g. actors.envs_per_actor=512 (segments above "
        "Ray's 100 KiB inline limit go through the object store)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.kill_every_s <= 0 or args.sample_s <= 0:
        parser.error("--minutes, --kill-every-s and --sample-s must be > 0")

    import ray

    from services.cluster.connection import LOCAL_SYSTEM_CONFIG, cpus_needed
    from services.config import load_config

    # Logical CPUs as the embedded `troupe train` reserves them, so every actor is placed.
    config = load_config(args.config, args.set)
    cpus = max(os.cpu_count() or 1, math.ceil(cpus_needed(config)))
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        logging_level="WARNING",
        _system_config=LOCAL_SYSTEM_CONFIG,
    )
    gcs = ray.get_runtime_context().gcs_address
    ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
    rng = random.Random(0)
    samples: list[dict] = []
    kills: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        cmd = [
            sys.executable, "-m", "services.cli", "train", "--config", args.config,
            "--address", gcs, "--no-progress",
            "--set", f"train.run_root={root}",
            "--set", "train.target_return=null", "--set", "train.total_frames=1000000000000",
            "--set", "train.eval_interval_s=60", "--set", "checkpoint.every_s=60",
            *(arg for item in args.set for arg in ("--set", item)),
        ]  # fmt: skip
        # The driver's output goes to a file: a pipe nobody drains would fill and stall it.
        driver_log = Path(args.out).with_suffix(".driver.log")
        with open(driver_log, "w") as log_file:
            driver = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        run_dir = None
        start = time.monotonic()
        next_kill = start + args.kill_every_s
        try:
            while run_dir is None and driver.poll() is None and time.monotonic() - start < 120:
                found = [x for x in driver_log.read_text().splitlines() if "run directory" in x]
                run_dir = Path(found[0].split("run directory", 1)[1].strip()) if found else None
                time.sleep(0.2)
            print(f"soak: {args.minutes:g} min, run {run_dir}, driver log {driver_log}")
            print(
                f"{'t_s':>6} {'frames':>12} {'fps':>8} "
                + " ".join(f"{r:>7}" for r in ROLES)
                + f" {'store':>7} {'objs':>5} {'restarts':>8}",
                flush=True,
            )
            while (now := time.monotonic()) - start < args.minutes * 60:
                if driver.poll() is not None:
                    tail = driver_log.read_text()[-3000:]
                    raise RuntimeError(f"the run ended early:\n{tail}")
                if now >= next_kill:
                    if kill_an_actor(rng) is not None:
                        kills.append(round(now - start, 1))
                    next_kill += args.kill_every_s
                record = last_metrics(run_dir)
                store_mib, objects = object_store(gcs)
                sample = {
                    "t_s": round(now - start, 1),
                    "frames": record.get("perf/frames", 0),
                    "fps": record.get("perf/fps", 0.0),
                    **memory_by_role(ray_pids, driver.pid),
                    "store": store_mib,
                    "objects": objects,
                    "restarts": record.get("actors/restarts", 0),
                }
                samples.append(sample)
                print(
                    f"{sample['t_s']:>6.0f} {sample['frames']:>12,} {sample['fps']:>8,.0f} "
                    + " ".join(f"{sample[r]:>7.1f}" for r in ROLES)
                    + f" {store_mib:>7.2f} {objects:>5} {sample['restarts']:>8}",
                    flush=True,
                )
                time.sleep(max(0.0, args.sample_s - (time.monotonic() - now)))
            if args.list_objects:
                from ray._private.internal_api import memory_summary

                print(memory_summary(gcs, units="KB", num_entries=40), flush=True)
        finally:
            driver.send_signal(signal.SIGTERM)
            try:
                driver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
            ray.shutdown()

    summary = {key: verdict(samples, key) for key in (*ROLES, "store")}
    summary["kills"] = len(kills)
    summary["restarts"] = samples[-1]["restarts"] if samples else 0
    summary["frames"] = samples[-1]["frames"] if samples else 0
    Path(args.out).write_text(json.dumps({"samples": samples, "summary": summary}, indent=1))
    print(f"\nkilled {len(kills)} actor processes; the run restarted {summary['restarts']}")
    print(f"{'series':<9} {'2nd quarter':>12} {'last quarter':>13} {'ratio':>7} {'per hour':>10}")
    for key in (*ROLES, "store"):
        v = summary[key]
        print(
            f"{key:<9} {v['early']:>12.1f} {v['late']:>13.1f} {v['ratio']:>7.3f} "
            f"{v['slope_per_hour']:>+10.1f}"
        )
    print("(MiB; RSS per role, store: object store bytes in use)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
