"""`troupe train`: a new run, or `--resume` of one from its latest checkpoint."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from learner import metrics as M
from learner.config import ConfigError
from services.training.stopping import TERMINATION


def _resumed(target: str, overrides: Sequence[str], allow_env_import: bool = False):
    """(config, latest checkpoint, run directory) for `--resume RUN_DIR`, or for
    `--resume STORAGE_URL/RUN_ID` when the run directory is gone with its node: then the
    config comes from the checkpoint and the run directory is made anew under run_root.

    A checkpoint in shared storage is only as trustworthy as everyone who can write there, so
    from one its config is not obeyed blindly: where checkpoints go (`checkpoint.storage` and
    `storage_options`) comes from the command line, and an `env.id` that names a module to
    import (`module:Env`) is refused unless `allow_env_import` (`--allow-env-import`)."""
    import copy

    from services.config import load_config, with_overrides
    from services.storage.checkpoints import Checkpoints
    from services.storage.rundir import CONFIG_FILE

    if "://" in target:
        url = target.rstrip("/")
        parent, _, run_id = url.rpartition("/")
        options = load_config(None, overrides).checkpoint.storage_options
        store = Checkpoints(url, storage_options=options, run_id=run_id)
        store.verify(new=False)  # another run's folder: refused before anything is read
        latest = store.latest()
        if latest is None:
            raise ConfigError(f"--resume {target}: no readable checkpoint there")
        data = copy.deepcopy(latest.config)
        if not isinstance(data, dict) or not isinstance(data.get("checkpoint", {}), dict):
            raise ConfigError(f"--resume {target}: the checkpoint's config is not a mapping")
        data.setdefault("checkpoint", {}).update(storage=parent, storage_options=options)
        config = with_overrides(data, overrides)
        env_set = any(item.partition("=")[0].strip() == "env.id" for item in overrides)
        if ":" in config.env.id and not env_set and not allow_env_import:
            module = config.env.id.partition(":")[0]
            raise ConfigError(
                f"--resume {target}: the checkpoint's env.id {config.env.id!r} would import "
                f"the module {module!r}; pass --allow-env-import if you trust everyone who "
                "can write to that storage, or --set env.id=..."
            )
        run_path = Path(config.train.run_root).expanduser() / run_id
    else:
        run_path = Path(target).resolve()
        config_file = run_path / CONFIG_FILE
        if not config_file.is_file():
            raise ConfigError(f"--resume {target}: not a run directory (no {CONFIG_FILE})")
        config = load_config(config_file, overrides)
        ckpt = config.checkpoint
        store = Checkpoints.for_run(run_path, ckpt.storage, ckpt.keep, ckpt.storage_options)
        store.verify(new=False)
        latest = store.latest()
        if latest is None:
            raise ConfigError(f"--resume {target}: no readable checkpoint in {store.location}")
    store.claim(new=False)  # unwritable storage fails now, not at every save
    return config, latest, run_path


def _named(run_id: str, config_file: str | None, overrides: Sequence[str]):
    """(config, newest checkpoint or None, run directory) of `--run-id RUN_ID`: the run of
    that id under train.run_root (its checkpoints under checkpoint.storage when set). Run
    again, it continues from its newest checkpoint with the config given now, which must
    train the same env and model."""
    from services.config import load_config
    from services.storage.checkpoints import Checkpoints

    config = load_config(config_file, overrides)
    run_path = (Path(config.train.run_root).expanduser() / run_id).resolve()
    ckpt = config.checkpoint
    store = Checkpoints.for_run(run_path, ckpt.storage, ckpt.keep, ckpt.storage_options)
    store.claim(new=False)  # refused if another run owns it; unwritable fails now
    latest = store.latest()
    if latest is not None:
        given, saved = config.to_dict(), latest.config
        for key in ("env", "learner.model"):
            now, then = _section(given, key), _section(saved, key)
            if now != then:
                raise ConfigError(
                    f"--run-id {run_id}: that run trains {key}={then}, this config {key}={now}; "
                    "give the new config another --run-id, or the old one's values"
                )
    return config, latest, run_path


def _section(data, dotted: str):
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def run_train(args: argparse.Namespace) -> int:
    from services.config import load_config

    # Validate before the heavy imports (torch, Ray): a typo answers in well under a second.
    resume_from = run_path = None
    if args.resume and args.run_id:
        raise ConfigError("--run-id names a run to start or continue; --resume names its own")
    if args.resume:
        config, resume_from, run_path = _resumed(args.resume, args.set or (), args.allow_env_import)
    elif args.run_id:
        config, resume_from, run_path = _named(args.run_id, args.config, args.set or ())
    else:
        config = load_config(args.config, args.set or ())

    from services.cluster.connection import ray_connection
    from services.cluster.resources import check_resources
    from services.storage.checkpoints import Checkpoints
    from services.storage.rundir import RunDir
    from services.training import check_run, train
    from services.training.learner_keeper import LearnerFailed
    from services.training.sampling import ActorFailures

    ckpt = config.checkpoint
    if run_path is None and ckpt.storage is not None:
        # Fail now, not after the first checkpoint's worth of training.
        Checkpoints(ckpt.storage, storage_options=ckpt.storage_options).check()

    try:
        check_run(config)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    on_update = _Progress(config.train.total_frames) if not args.no_progress else None
    import ray

    _import_in_background("torch", "tensorboardX")
    run_dir = None
    try:
        with ray_connection(config, args.address) as started_here:
            check_resources(config, can_grow=not started_here)
            # `troupe stop`/`ray job stop` send SIGTERM, Ctrl-C SIGINT. Raised as SystemExit
            # or KeyboardInterrupt, once out of a compiled round, each unwinds the run, which
            # saves a final checkpoint and stops its actors. (Set after connecting: ray.init
            # installs a SIGTERM handler that dumps a stack trace and dies.)
            signal.signal(signal.SIGTERM, TERMINATION.handler)
            signal.signal(signal.SIGINT, TERMINATION.handler)
            if run_path is not None:
                run_path.mkdir(parents=True, exist_ok=True)
                run_dir = RunDir(run_path)
            else:
                run_dir = RunDir.create(config.train.run_root, config.name)
            if resume_from is not None:
                counters = resume_from.counters
                print(
                    f"troupe: resuming {run_dir.path} from {resume_from.name} "
                    f"({counters['frames']:,} frames, {counters['updates']} updates)",
                    flush=True,
                )
            else:
                print(f"troupe: run directory {run_dir.path}", flush=True)
            result = train(config, run_dir, on_update, resume=resume_from)
    except ConnectionError as err:
        print(f"troupe: {err}", file=sys.stderr)
        return 2
    except (ray.exceptions.RayError, ActorFailures, LearnerFailed) as err:
        # An actor or the learner failed; its traceback is in the message. The metrics logged
        # so far stay in the run directory.
        where = f"; metrics so far in {run_dir.path}" if run_dir is not None else ""
        print(f"troupe: training failed{where}\n{err}", file=sys.stderr)
        return 1
    finally:
        if on_update is not None:
            on_update.close()
    verdict = ""
    if config.train.target_return is not None:
        verdict = " (solved)" if result.solved else " (target not reached)"
    print(
        f"troupe: {result.frames:,} frames, {result.updates} updates in {result.wall_time_s:.1f}s "
        f"({result.fps:,.0f} frames/s) after {result.startup_s:.1f}s start-up; learner on "
        f"{result.learner_device}; eval return {result.eval_return:.1f}{verdict}\n"
        f"troupe: model saved to {result.run_dir / 'model.pt'}"
    )
    return 0


def _import_in_background(*modules: str) -> None:
    """Import `modules` on a daemon thread: ray.init spends seconds waiting for Ray's
    processes to come up, time in which the driver's own heavy imports (torch ~2.4 s here, for
    checkpoints and the final model) can load. A later `import` on the main thread waits for
    a module still loading, so callers need nothing more."""
    import importlib
    import threading

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the main thread's own import reports it
                return

    threading.Thread(target=load, name="troupe-imports", daemon=True).start()


class _Progress:
    """A live tqdm bar on a terminal; elsewhere (logs, CI) a plain line every 10 seconds."""

    def __init__(self, total_frames: int) -> None:
        self.bar = None
        self.last_line = time.monotonic()
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_frames, unit="frame", unit_scale=True, smoothing=0.1)

    def __call__(self, record: dict) -> None:
        ret = record[M.EPISODE_RETURN]
        post = {"fps": f"{record[M.FPS]:,.0f}", "return": "-" if ret is None else f"{ret:.1f}"}
        if M.EVAL_RETURN in record:
            post["eval"] = f"{record[M.EVAL_RETURN]:.1f}"
        if self.bar is not None:
            self.bar.update(min(record[M.FRAMES], self.bar.total) - self.bar.n)
            self.bar.set_postfix(post, refresh=False)
        elif time.monotonic() - self.last_line >= 10 or M.EVAL_RETURN in record:
            self.last_line = time.monotonic()
            fields = " ".join(f"{k}={v}" for k, v in post.items())
            print(f"troupe: frames={record[M.FRAMES]:,} {fields}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
