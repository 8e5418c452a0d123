"""`troupe export`: each export runs in a process that never imports troupe and acts as troupe's
own greedy policy does, for discrete, Gaussian (normalised observations), gSDE and pixel
policies."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from actors.envs import env_spaces
from actors.policy import ActorPolicy
from learner.core import PolicyWeights
from learner.model import build_model, state_to_numpy
from services.cli import main
from services.config import load_config
from services.storage.rundir import RunDir

CASES = {
    "discrete": ("configs/cartpole.yaml", []),
    # Orthogonal init: its small policy head, sharpened below, keeps greedy actions inside
    # the action bounds, so they still depend on the observation.
    "gaussian": (
        "configs/pendulum.yaml",
        ["learner.model.exploration=gaussian", "learner.model.ortho_init=true"],
    ),
    "gsde": ("configs/halfcheetah.yaml", ["learner.model.ortho_init=true"]),
    "pixels": ("configs/pong.yaml", []),
}
OBSERVATIONS = 1000

# What a user runs: numpy and the runtime, nothing of troupe.
RUNNER = """
import json, sys
import numpy as np
files = json.loads(sys.argv[1])
out = {}
for name, (path, obs_path) in files.items():
    obs = np.load(obs_path)
    if path.endswith(".onnx"):
        import onnxruntime
        session = onnxruntime.InferenceSession(path)
        out[name] = session.run(None, {"obs": obs})[0].tolist()
    else:
        import torch
        policy = torch.jit.load(path)
        out[name] = policy(torch.from_numpy(obs)).numpy().tolist()
troupe = [m for m in sys.modules if m.split(".")[0] in ("learner", "actors", "services")]
assert not troupe, troupe
print(json.dumps(out))
"""


def _run_dir(tmp_path, name: str, path: str, overrides: list[str]) -> tuple[RunDir, ActorPolicy]:
    """A finished run's folder with weights far from their initialisation: random
    observation statistics and a sharper policy head, so greedy actions are not near ties."""
    config = load_config(path, overrides)
    obs_space, action_space = env_spaces(config.env)
    model = build_model(config.learner.model, obs_space, action_space)
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.policy_head.weight.mul_(100.0)
        if model.obs_norm is not None:
            dim = model.obs_norm.mean.shape[0]
            model.obs_norm.mean.copy_(torch.randn(dim, generator=rng, dtype=torch.float64))
            model.obs_norm.var.copy_(torch.rand(dim, generator=rng, dtype=torch.float64) * 4)
            model.obs_norm.count.fill_(1000.0)
    weights = PolicyWeights(7, state_to_numpy(model))
    run = RunDir.create(tmp_path / name, config.name)
    run.write_config(config)
    run.save_model(weights, frames=1000)
    policy = ActorPolicy(config.learner.model, obs_space, action_space, seed=0)
    policy.load(weights)
    return run, policy


def _observations(policy: ActorPolicy, space, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if space.dtype == np.uint8:
        return rng.integers(0, 256, size=(OBSERVATIONS, *space.shape), dtype=np.uint8)
    return rng.normal(0.0, 3.0, size=(OBSERVATIONS, *space.shape)).astype(space.dtype)


@pytest.mark.subprocess
def test_exports_act_as_troupes_greedy_policy_without_troupe(tmp_path, capsys):
    files, expected = {}, {}
    for i, (name, (path, overrides)) in enumerate(CASES.items()):
        run, policy = _run_dir(tmp_path, name, path, overrides)
        obs_space = env_spaces(run.load_config().env)[0]
        obs = _observations(policy, obs_space, seed=i)
        np.save(tmp_path / f"{name}.npy", obs)
        expected[name] = policy.to_env(policy.act_greedy(obs))
        for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
            assert main(["export", str(run.path), "--format", fmt]) == 0
            out = capsys.readouterr().out
            assert f"policy.{suffix} ({fmt}, greedy policy version 7" in out, out
            files[f"{name}/{fmt}"] = (
                str(run.path / f"policy.{suffix}"),
                str(tmp_path / f"{name}.npy"),
            )
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(files)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    actions = json.loads(proc.stdout)
    for key, got in actions.items():
        want = expected[key.split("/")[0]]
        got = np.asarray(got)
        assert got.shape == want.shape, key
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=key)
            assert not np.allclose(want, want[0])  # the actions depend on the observation
        else:
            assert got.dtype.kind == "i" and (got == want).all(), key
            assert len(np.unique(want)) > 1, key


def test_a_stochastic_export_samples_around_the_greedy_action(tmp_path, capsys):
    run, policy = _run_dir(tmp_path, "gsde", *CASES["gsde"])
    assert main(["export", str(run.path), "--format", "torchscript", "--stochastic"]) == 0
    assert "stochastic policy" in capsys.readouterr().out
    exported = torch.jit.load(str(run.path / "policy-stochastic.pt"))
    obs = np.repeat(_observations(policy, policy_space(run), seed=9)[:1], 2000, axis=0)
    samples = exported(torch.from_numpy(obs)).numpy()
    greedy = policy.to_env(policy.act_greedy(obs[:1]))[0]
    assert samples.std(0).min() > 0  # new noise every row
    # The median: clipping to the bounds moves a Gaussian's mean but not its median.
    np.testing.assert_allclose(np.median(samples, 0), greedy, atol=0.06)


def policy_space(run: RunDir):
    return env_spaces(run.load_config().env)[0]


def test_export_of_a_folder_without_a_finished_run_exits_2_saying_why(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "torchscript"]) == 2
    assert "is not a run directory: no config.yaml" in capsys.readouterr().err
