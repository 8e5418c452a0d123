"""`troupe plot RUN_DIR`: the learning curve and throughput of a run, as one PNG."""

from __future__ import annotations

from pathlib import Path

from learner import metrics as M
from services.storage.rundir import RunDir

PLOT_FILE = "learning_curve.png"


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Returns (training and evaluation), training episode lengths and frames/s against
    frames, live actors beside them; written to `out` (default: RUN_DIR/learning_curve.png)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node or in CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    run = RunDir(run_dir)
    config = run.load_config()
    try:
        records = run.read_metrics()
    except FileNotFoundError:
        raise FileNotFoundError(f"{run.path} has no metrics yet: no update was logged") from None
    if not records:
        raise ValueError(f"{run.path} has no metrics yet: no update was logged")

    def series(key: str) -> tuple[list[float], list[float]]:
        pairs = [(r[M.FRAMES], r[key]) for r in records if r.get(key) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    fig, (ax_ret, ax_len, ax_fps) = plt.subplots(3, 1, figsize=(8, 9.5), sharex=True)
    ax_ret.plot(*series(M.EPISODE_RETURN), label="training (mean of recent episodes)")
    frames, evals = series(M.EVAL_RETURN)
    ax_ret.plot(frames, evals, "o-", ms=3, label="evaluation")
    if config.train.target_return is not None:
        ax_ret.axhline(config.train.target_return, ls="--", c="grey", lw=1, label="target")
    ax_ret.set_ylabel("episode return")
    ax_ret.legend(loc="lower right")
    ax_ret.set_title(f"{run.path.name}: {config.env.id}")

    ax_len.plot(*series(M.EPISODE_LENGTH), c="tab:orange", label="training (mean of recent)")
    ax_len.set_ylabel("episode length (steps)")
    ax_len.legend(loc="lower right")

    ax_fps.plot(*series(M.FPS), c="tab:green", label="frames/s")
    ax_fps.set_ylabel("frames/s (cumulative)")
    ax_fps.set_xlabel("frames")
    actors = series(M.ACTORS_LIVE)
    if actors[0]:
        ax_act = ax_fps.twinx()
        ax_act.step(*actors, where="post", c="tab:purple", label="live actors")
        ax_act.set_ylabel("live actors")
        ax_act.set_ylim(0, max(actors[1]) + 1)
        ax_act.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_act.legend(loc="lower right")
    ax_fps.legend(loc="lower left")
    for ax in (ax_ret, ax_len, ax_fps):
        ax.grid(alpha=0.3)

    out = Path(out) if out is not None else run.path / PLOT_FILE
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
