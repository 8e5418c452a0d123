"""`troupe export`: a finished run's policy as ONNX or TorchScript (see `learner.export`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


def add_command(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export", help="write a finished run's policy as ONNX or TorchScript, for deployment"
    )
    export.add_argument("run_dir", help="run directory written by `troupe train`")
    export.add_argument("--format", choices=sorted(SUFFIX), default="onnx")
    export.add_argument("--out", help="file to write (default: RUN_DIR/policy.onnx or policy.pt)")
    export.add_argument(
        "--stochastic", action="store_true", help="sample actions instead of the greedy action"
    )
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from actors.envs import env_spaces
    from learner.export import export_policy
    from learner.model import build_model, load_numpy_state
    from services.storage.rundir import RunDir

    run = RunDir(args.run_dir)
    config = run.load_config()
    weights = run.load_model()
    if args.format == "onnx":
        _require_onnx()
    obs_space, action_space = env_spaces(config.env)
    model = build_model(config.learner.model, obs_space, action_space)
    load_numpy_state(model, weights.params)
    kind = "stochastic" if args.stochastic else "greedy"
    stem = "policy-stochastic" if args.stochastic else "policy"
    out = Path(args.out) if args.out else run.path / (stem + SUFFIX[args.format])
    # The ONNX exporter logs its progress and optional-package notes; the result is below.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    export_policy(model, obs_space, action_space, out, args.format, args.stochastic)
    action = (
        f"int64 [N] of {action_space.n} actions"
        if not getattr(action_space, "shape", None)
        else f"float32 [N, {', '.join(map(str, action_space.shape))}] in the action bounds"
    )
    print(
        f"troupe: wrote {out} ({args.format}, {kind} policy version {weights.version}, "
        f"{config.env.id}): obs {obs_space.dtype} [N, {', '.join(map(str, obs_space.shape))}] "
        f"-> action {action}"
    )
    return 0


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ValueError(
            f"--format onnx needs the onnx and onnxscript packages ({err.name} is missing): "
            "pip install -e '.[export]', or use --format torchscript"
        ) from None
