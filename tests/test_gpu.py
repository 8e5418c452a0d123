"""The learner on a GPU: the same updates as on CPU, weights and checkpoints that load on
CPU-only nodes, and whole runs with the learner actor holding the GPU.

Collected only where torch sees CUDA: `pytest -m gpu` on a GPU machine. Elsewhere
tests/conftest.py deselects them and says so in the header.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces
from actors.rollout import RolloutWorker
from learner import metrics as M
from learner.config import LearnerConfig, ModelConfig
from learner.learner import Learner

pytestmark = pytest.mark.gpu

PONG = EnvConfig(
    id="ale_py:ALE/Pong-v5", preprocessing="atari", kwargs={"repeat_action_probability": 0.0}
)
CASES = {
    "mlp-discrete": (EnvConfig(), LearnerConfig(), 16),
    "gsde-normalized": (
        EnvConfig(id="Pendulum-v1"),
        LearnerConfig(
            normalize_rewards=True,
            model=ModelConfig(exploration="gsde", normalize_obs=True, ortho_init=False),
        ),
        8,
    ),
    "nature-cnn": (PONG, LearnerConfig(model=ModelConfig(shared_trunk=True)), 2),
}
STATS = (M.LOSS_POLICY, M.LOSS_VALUE, M.ENTROPY, M.GRAD_NORM)


@pytest.fixture
def exact_float32(monkeypatch):
    """TF32 off: CUDA's convolutions default to it (10-bit mantissa), which is a speed choice,
    not the learner's math; the comparison below is about the math."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _segments(env: EnvConfig, config: LearnerConfig, learner: Learner, envs: int) -> list:
    actors = ActorConfig(envs_per_actor=envs, segment_length=5)
    workers = [RolloutWorker(env, actors, config.model, actor_id=i, seed=i) for i in range(2)]
    weights = learner.get_weights()
    segments = [w.sample(weights) for w in workers]
    for w in workers:
        w.close()
    return segments


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cuda_update_is_the_cpu_update(case, exact_float32):
    env, config, envs = CASES[case]
    spaces = env_spaces(env)
    cpu = Learner(config, *spaces, seed=3)
    cuda = Learner(dataclasses.replace(config, device="cuda"), *spaces, seed=3)
    assert cuda.device.type == "cuda" and next(cuda.model.parameters()).is_cuda
    start = cpu.get_weights().params
    segments = _segments(env, config, cpu, envs)
    for _ in range(3):
        batch = [s.replace(policy_version=cpu.version) for s in segments]
        on_cpu, on_cuda = cpu.update(batch), cuda.update(batch)
        for key in STATS:
            assert on_cuda[key] == pytest.approx(on_cpu[key], rel=1e-3, abs=1e-6), key
    assert cuda.version == cpu.version == 3
    # Three RMSprop steps agree to 1% of how far they moved each tensor.
    a, b = cpu.get_weights().params, cuda.get_weights().params
    for name in start:
        moved = np.abs(a[name] - start[name]).max()
        assert np.abs(a[name] - b[name]).max() <= 1e-2 * moved + 1e-6, name


def test_weights_and_state_leave_the_gpu_and_load_on_cpu_learners_and_actors():
    env, config, envs = CASES["mlp-discrete"]
    spaces = env_spaces(env)
    cuda = Learner(dataclasses.replace(config, device="cuda"), *spaces)
    cuda.update(_segments(env, config, cuda, envs))
    weights = cuda.get_weights()
    assert all(isinstance(v, np.ndarray) for v in weights.params.values())
    # A CPU-only actor samples with them.
    worker = RolloutWorker(env, ActorConfig(envs_per_actor=2, segment_length=4), config.model)
    assert worker.sample(weights).validate().policy_version == 1
    worker.close()
    # The checkpoint state is CPU tensors that torch.load(weights_only=True) takes on a CPU node.
    buffer = io.BytesIO()
    torch.save(cuda.state(), buffer)
    buffer.seek(0)
    cpu = Learner(dataclasses.replace(config, device="cpu"), *spaces)
    cpu.load_state(torch.load(buffer, weights_only=True))
    assert cpu.version == 1
    for name, value in cpu.get_weights().params.items():
        np.testing.assert_array_equal(value, weights.params[name])
    # And back: a CPU checkpoint continues on the GPU, optimiser state moved along.
    again = Learner(dataclasses.replace(config, device="cuda"), *spaces)
    again.load_state(cpu.state())
    assert all(
        v.is_cuda
        for s in again.optimizer.state_dict()["state"].values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    stats = again.update(_segments(env, config, again, envs))
    assert stats[M.POLICY_VERSION] == 2 and np.isfinite(stats[M.LOSS_TOTAL])


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.compiled_graph=true"],
        ["train.compiled_graph=false"],
        ["algo.mode=async", "actors.num_actors=3"],
    ],
    ids=["sync-compiled", "sync-plain", "async"],
)
def test_a_run_trains_with_its_learner_actor_on_the_gpu(ray_cluster, tmp_path, overrides):
    import ray

    from services.config import load_config
    from services.storage.rundir import RunDir
    from services.training import train

    assert ray.cluster_resources().get("GPU", 0) >= 1  # Ray found the GPU torch sees
    config = load_config(
        None,
        [
            "actors.envs_per_actor=4",
            "actors.segment_length=8",
            "train.total_frames=1280",
            f"train.run_root={tmp_path}",
            *overrides,
        ],
    )
    assert config.learner.device == "auto"  # the default takes the GPU when there is one
    run = RunDir.create(tmp_path, config.name)
    result = train(config, run)
    assert result.learner_device == "cuda"  # resolve_device("auto")
    lines = run.read_metrics()
    assert result.frames >= 1280 and lines[-1][M.POLICY_VERSION] >= 10
    assert all(np.isfinite(x[M.LOSS_TOTAL]) for x in lines)
    assert run.load_model().version == lines[-1][M.POLICY_VERSION]
