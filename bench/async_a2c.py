"""Sync vs async A2C on CartPole-v1, with and without one slow actor among fast ones, side by
side in one run.

Every run uses configs/cartpole.yaml with 4 actors x 32 envs x 16 steps (2,048 frames per
update in both modes: async takes `algo.batch_segments=4` ready segments, from whichever
actors have them) on gymnasium's SyncVectorEnv of CartPole, trained until the greedy policy
averages >= 475 over 20 fresh episodes in 3 evaluations in a row (as bench/cartpole.py). In
the "slow" setting one env instance in one actor sleeps `--delay-ms` per step, which makes
that whole actor slow. Per setting, medians over seeds: frames/s, training seconds to solve
(evaluation time excluded), frames to solve and the mean policy lag; then the async / sync
ratios.

    python -m bench.async_a2c --seeds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from bench.cartpole import run_troupe
from bench.common import start_local_ray
from bench.envs import SLOW_CARTPOLE_ID

ACTORS = 4


def overrides(mode: str, slow: bool, marker: str, delay_s: float) -> list[str]:
    kwargs = f"{{delay_s: {delay_s}, marker: '{marker}'}}" if slow else "{delay_s: 0}"
    return [
        f"env.id={SLOW_CARTPOLE_ID}",
        f"env.kwargs={kwargs}",
        "env.vectorization=sync",
        f"actors.num_actors={ACTORS}",
        "actors.envs_per_actor=32",
        f"algo.mode={mode}",
        f"algo.batch_segments={ACTORS}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=5.0, help="the slow env's sleep/step")
    parser.add_argument("--budget", type=int, default=1_000_000, help="frames per run at most")
    parser.add_argument("--eval-interval", type=float, default=1.0)
    parser.add_argument("--config", default="configs/cartpole.yaml")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.delay_ms < 0 or args.budget < 1:
        parser.error("--seeds and --budget must be >= 1, --delay-ms >= 0")

    import ray

    ray_start = start_local_ray(max(ACTORS + 1, os.cpu_count() or 1))
    settings = [(mode, slow) for slow in (False, True) for mode in ("sync", "async")]
    results: dict[tuple[str, bool], list[dict]] = {s: [] for s in settings}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                for mode, slow in settings:
                    marker = os.path.join(tmp, f"slow-{mode}-{seed}")
                    extra = overrides(mode, slow, marker, args.delay_ms / 1000)
                    run = run_troupe(seed, args.config, args.budget, args.eval_interval, extra)
                    results[(mode, slow)].append(run)
                    print(mode, "slow" if slow else "uniform", seed, run, flush=True)
    finally:
        ray.shutdown()

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"\nCartPole-v1, {ACTORS} actors x 32 envs x 16 steps, to a mean greedy return >= 475; "
        f"medians of {args.seeds} seeds; {os.cpu_count()} cores; slow actor: one env sleeps "
        f"{args.delay_ms:g} ms/step; Ray start {ray_start:.1f}s (not counted)"
    )
    head = ("actors", "mode", "solved", "frames/s", "train s", "frames", "lag")
    print("{:8} {:6} {:>7} {:>10} {:>8} {:>10} {:>6}".format(*head))
    for (mode, slow), runs in results.items():
        solved = f"{sum(r['solved'] for r in runs)}/{len(runs)}"
        print(
            f"{'slow' if slow else 'uniform':8} {mode:6} {solved:>7} {med(runs, 'fps'):>10,.0f} "
            f"{med(runs, 'seconds'):>8.1f} {med(runs, 'frames'):>10,.0f} {med(runs, 'lag'):>6.2f}"
        )
    for slow in (False, True):
        a, s = results[("async", slow)], results[("sync", slow)]
        print(
            f"async / sync ({'slow actor' if slow else 'uniform'}): frames/s "
            f"x{med(a, 'fps') / med(s, 'fps'):.2f}; training seconds to solve "
            f"x{med(a, 'seconds') / med(s, 'seconds'):.2f}"
        )


if __name__ == "__main__":
    main()
