"""The learner's optimisers against `torch.optim`: the same steps, state dicts that load
either way, clear errors for state of another model or optimiser, and no torch._dynamo."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from learner.optim import Optimizer

KINDS = {
    "rmsprop": lambda params: torch.optim.RMSprop(params, lr=3e-3, alpha=0.99, eps=1e-5),
    "adam": lambda params: torch.optim.Adam(params, lr=3e-3, eps=1e-5),
}


def _ours(kind, model):
    return Optimizer(model.parameters(), kind, lr=3e-3, eps=1e-5, alpha=0.99)


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _backward(model, step):
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(32, 4, generator=generator)
    target = torch.randn(32, 3, generator=generator)
    ((model(x) - target) ** 2).mean().backward()


def _steps(model, optimizer, first, count):
    for step in range(first, first + count):
        optimizer.zero_grad()
        _backward(model, step)
        optimizer.step()


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_steps_match_torch_optim_exactly(kind):
    ref, mine = _model(), _model()
    _steps(ref, KINDS[kind](ref.parameters()), 0, 20)
    _steps(mine, _ours(kind, mine), 0, 20)
    assert not _same(ref, _model())  # the parameters did move
    assert _same(ref, mine)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_optim_state_loads_here_and_ours_loads_there(kind):
    ref = _model()
    ref_opt = KINDS[kind](ref.parameters())
    _steps(ref, ref_opt, 0, 5)

    # An older checkpoint, written by torch.optim, continues here exactly.
    mine = copy.deepcopy(ref)
    my_opt = _ours(kind, mine)
    my_opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    _steps(ref, ref_opt, 5, 5)
    _steps(mine, my_opt, 5, 5)
    assert _same(ref, mine)

    # And ours continues in torch.optim exactly.
    back = copy.deepcopy(mine)
    back_opt = KINDS[kind](back.parameters())
    back_opt.load_state_dict(copy.deepcopy(my_opt.state_dict()))
    _steps(back, back_opt, 10, 5)
    _steps(mine, my_opt, 10, 5)
    assert _same(back, mine)


def test_state_dict_survives_a_weights_only_round_trip(tmp_path):
    model = _model()
    optimizer = _ours("adam", model)
    _steps(model, optimizer, 0, 3)
    torch.save(optimizer.state_dict(), tmp_path / "opt.pt")
    again = _ours("adam", copy.deepcopy(model))
    again.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    for i, state in optimizer.state.items():
        for key, value in state.items():
            assert torch.equal(again.state[i][key], value)


def test_parameters_without_a_gradient_are_left_alone():
    model = _model()
    frozen = model[2].bias
    optimizer = _ours("rmsprop", model)
    optimizer.zero_grad()
    _backward(model, 0)
    frozen.grad = None
    before = frozen.detach().clone()
    optimizer.step()
    assert torch.equal(frozen, before)
    assert sorted(optimizer.state) == [0, 1, 2]  # state only for the three that stepped


def test_state_of_another_model_or_optimizer_is_refused():
    model = _model()
    adam = _ours("adam", model)
    _steps(model, adam, 0, 1)
    smaller = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="another model"):
        _ours("adam", smaller).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="learner.optimizer"):
        _ours("rmsprop", model).load_state_dict(adam.state_dict())
    wide = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"shape \(16, 4\), the parameter \(8, 4\)"):
        _ours("adam", wide).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="not one of"):
        Optimizer(model.parameters(), "sgd", lr=1e-3, eps=1e-5)


@pytest.mark.subprocess
def test_a_learner_never_imports_torch_dynamo():
    """torch.optim.Optimizer's methods would (about 2 s at every learner start)."""
    script = textwrap.dedent(
        """
        import sys
        from actors.config import EnvConfig
        from actors.envs import env_spaces
        from learner.config import LearnerConfig
        from learner.learner import Learner
        from tests.conftest import sample_segments
        learner = Learner(LearnerConfig(), *env_spaces(EnvConfig()))
        learner.update(sample_segments(learner))
        learner.load_state(learner.state())
        learner.update(sample_segments(learner))
        assert learner.version == 2
        assert "torch._dynamo" not in sys.modules, "the learner imported torch._dynamo"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
