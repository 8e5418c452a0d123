"""`troupe tune`: a hyper-parameter search (or population-based training) on Ray Tune, every
trial a whole troupe run (see `services.tune`)."""

from __future__ import annotations

import argparse
import dataclasses


def add_command(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser(
        "tune", help="search hyper-parameters on Ray Tune, each trial a whole run"
    )
    tune.add_argument("config", help="run config YAML; its tune: section is the default search")
    tune.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=SPACE",
        help="e.g. learner.lr=loguniform(1e-4,1e-2), actors.segment_length=choice(8,16,32)",
    )
    tune.add_argument("--samples", type=int, help="trials to draw")
    tune.add_argument("--scheduler", choices=("fifo", "asha", "pbt"))
    tune.add_argument("--metric", help="a metrics.jsonl key (default eval/episode_return)")
    tune.add_argument("--mode", choices=("max", "min"))
    tune.add_argument("--max-concurrent", type=int, help="trials at once (0: all that fit)")
    tune.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    tune.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    tune.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    import ray

    from learner.config import ConfigError

    try:
        import ray.tune
    except ImportError as err:
        raise ConfigError(f"troupe tune needs Ray Tune ({err}): pip install -e '.[tune]'") from None

    from services.cluster.connection import ray_connection
    from services.config import load_config
    from services.tune.config import parse_space
    from services.tune.search import check_search, run_search, search_folder, table, trial_cpus

    config = load_config(args.config, args.set or [])
    params = dict(config.tune.params)
    for item in args.param:
        space = parse_space(item)
        params[space.key] = item.partition("=")[2]
    given = {
        "samples": args.samples,
        "scheduler": args.scheduler,
        "metric": args.metric,
        "mode": args.mode,
        "max_concurrent": args.max_concurrent,
    }
    tune_cfg = dataclasses.replace(
        config.tune, params=params, **{k: v for k, v in given.items() if v is not None}
    )
    check_search(config, tune_cfg, cluster_cpus=None)
    with ray_connection(config, args.address, num_cpus=trial_cpus(config, tune_cfg)) as local:
        if local:  # a cluster that cannot grow: a trial that does not fit never will
            cpus = ray.cluster_resources().get("CPU", 0.0)
            check_search(config, tune_cfg, cluster_cpus=cpus)
        folder = search_folder(config, config.name)
        print(f"troupe: search {folder} ({len(tune_cfg.spaces())} values, "
              f"{tune_cfg.samples} samples, {tune_cfg.scheduler})", flush=True)  # fmt: skip
        result = run_search(config, tune_cfg, folder)
    print(table(result, tune_cfg.metric))
    if result.best_config is None:
        print(f"troupe: no trial reported {tune_cfg.metric}; nothing to call best")
        return 1
    print(f"troupe: best trial {result.best.trial}: {result.best.params}")
    print(f"troupe: best config written to {result.best_config}")
    return 0
