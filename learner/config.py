"""Frozen, validated configuration of the model and the learner."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from learner.schedules import Schedule


class ConfigError(ValueError):
    """A configuration value out of range; the message names the field and what is allowed."""


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise `ConfigError` naming `name`, its `value` and what is `allowed` unless `ok`."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


def check_types(config: Any, section: str) -> None:
    """Raise `ConfigError` for the first field of the dataclass `config` whose value is not of
    its annotated type, named with `section` in front ('learner.model.').

    The YAML loader converts and type-checks values before it builds a config; this holds a
    config built directly in Python to the same contract, where `num_actors=True` or
    `segment_length=2.5` would pass the range checks (a bool is an int; 2.5 >= 1) and fail
    far from the mistake. Each config's `__post_init__` calls it before its range checks,
    which may then compare without a TypeError.
    """
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if not _is_a(value, hint):
            raise ConfigError(f"{section}{f.name}={value!r} is invalid: expected {type_name(hint)}")


def type_name(hint: Any) -> str:
    """How an error message names a field's type."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a tuple of {type_name(typing.get_args(hint)[0])} (a list in YAML)"
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_a(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, arm) for arm in args)
    if origin is tuple:  # tuple[X, ...]
        return isinstance(value, tuple) and all(_is_a(v, args[0]) for v in value)
    if origin is not None:  # dict[str, Any]
        return isinstance(value, origin)
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


@dataclass(frozen=True)
class ModelConfig:
    """Actor-critic network shape."""

    torso: Literal["auto", "mlp", "cnn"] = "auto"
    """Feature extractor: 'mlp' for vector observations, 'cnn' (the Nature DQN layout, 512
    features) for stacked frames [C, H, W]; 'auto' takes the CNN for uint8 observations of
    rank 3 and the MLP otherwise."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the MLP torso's hidden layers (the CNN torso has its own fixed layout)."""
    shared_trunk: bool = False
    """One torso for policy and value (True) or a separate torso for each (False)."""
    activation: Literal["tanh", "relu"] = "tanh"
    exploration: Literal["gaussian", "gsde"] = "gaussian"
    """Continuous actions: 'gaussian' adds independent noise each step (a learned std per
    action); 'gsde' is generalised state-dependent exploration (Raffin et al. 2022): the
    noise is the policy's features times a random matrix drawn once per segment, so it is
    smooth over time and scales with the state. rl-baselines3-zoo's A2C results for Pendulum
    and MuJoCo use it."""
    log_std_init: float = 0.0
    """Continuous actions: initial value of the learned log standard deviations. With
    'gaussian' exploration they are the policy's own, one per action and the same in every
    state; with 'gsde' they are those of the exploration matrix's entries, one per (feature,
    action), and the policy's standard deviation in a state follows from them and the state's
    features h: sqrt(sum_f h_f^2 exp(2 log_std_f)) per action (plus a small epsilon)."""
    ortho_init: bool = True
    """Initialise every layer orthogonally (torso gain sqrt(2), policy head 0.01, value head
    1: the OpenAI baselines' and SB3's default); false keeps PyTorch's default init, as
    rl-baselines3-zoo's gSDE settings ask (`ortho_init=False`). With gSDE the torso's
    features set the exploration's scale, so the init sets it too."""
    normalize_obs: bool = False
    """Standardise observations with running mean and variance kept by the learner; they
    travel with the weights, so every actor and evaluation normalises the same way."""

    def __post_init__(self) -> None:
        check_types(self, "learner.model.")
        require(
            -5.0 <= self.log_std_init <= 2.0,
            "learner.model.log_std_init",
            self.log_std_init,
            "a number in [-5, 2]",
        )
        sizes = self.hidden_sizes
        require(
            len(sizes) >= 1 and all(h >= 1 for h in sizes),
            "learner.model.hidden_sizes",
            sizes,
            "a non-empty list of positive integers",
        )

    def torso_for(self, observation_space) -> str:
        """'cnn' or 'mlp': the torso `torso` gives a gymnasium Box space, 'auto' resolved.

        'auto' takes the CNN for uint8 observations of rank 3 (stacked frames, channels first)
        and the MLP otherwise. Raises ConfigError when the choice cannot take the space.
        """
        shape, dtype = tuple(observation_space.shape), observation_space.dtype
        pixels = len(shape) == 3 and dtype == np.uint8
        kind = self.torso if self.torso != "auto" else ("cnn" if pixels else "mlp")
        if kind == "cnn":
            if len(shape) != 3 or min(shape[1:]) < NATURE_MIN_SIDE:
                raise ConfigError(
                    f"learner.model.torso='cnn' needs observations [C, H, W] with H, W >= "
                    f"{NATURE_MIN_SIDE} (e.g. env.preprocessing: atari gives [4, 84, 84]); "
                    f"the env's are {shape}. Use torso: mlp for vector observations"
                )
            if self.normalize_obs:
                raise ConfigError(
                    "learner.model.normalize_obs=True does not apply to pixel observations, "
                    "which the CNN scales to [0, 1]; set it to false"
                )
        return kind


NATURE_MIN_SIDE = 36
"""Smallest image side the Nature CNN's three convolutions (8/4, 4/2, 3/1) leave a pixel of."""


@dataclass(frozen=True)
class LearnerConfig:
    """The A2C update: targets, loss weights, optimiser and where it runs."""

    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 gives plain n-step returns."""
    value_coef: float = 0.5
    """Weight of the value loss in the total loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (subtracted from the total loss)."""
    entropy_schedule: Schedule = "constant"
    """'linear' decays entropy_coef to 0 over the run's frames, as `lr_schedule`."""
    normalize_advantages: bool = False
    """Standardise advantages over each update's batch."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    lr: float = 7e-4
    """Learning rate (at the start, with `lr_schedule: linear`)."""
    lr_schedule: Schedule = "constant"
    """'linear' decays the learning rate to 0 over the run's frames (train.total_frames), as
    rl-baselines3-zoo's `lin_` values; 'constant' keeps it."""
    optimizer_eps: float = 1e-5
    """Epsilon of RMSprop/Adam."""
    rmsprop_alpha: float = 0.99
    """RMSprop smoothing constant."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this; 0 disables clipping."""
    device: str = "auto"
    """'auto' (CUDA when the cluster has a GPU, else CPU), 'cpu' or 'cuda' (= 'cuda:0')."""
    num_threads: int = 0
    """Torch threads for the update on CPU; 0: as many as the CPUs the learner reserves
    (`num_cpus`, at least one). More threads than that compete with the actors for the
    node's cores: on 2 cores, 2 threads made small-batch updates ~1.3x slower and large
    ones no faster (README, *Small batches*)."""
    num_cpus: float = 1.0
    """CPUs the learner actor reserves in Ray."""
    vtrace: bool | None = None
    """Off-policy correction with V-trace (importance weights and targets from the behaviour
    and current log-probs). None: on in async mode, off in sync mode (where the two policies
    are the same and V-trace reduces to n-step returns)."""
    rho_bar: float = 1.0
    """V-trace: truncation of the importance weights (TD errors and policy gradient)."""
    c_bar: float = 1.0
    """V-trace: truncation of the trace coefficients."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this in the learner (e.g. 0.1 for large per-step rewards);
    reported episode returns stay unscaled."""
    normalize_rewards: bool = False
    """Scale rewards by the running standard deviation of each env's discounted return
    (gamma), clipped to +-10: SB3's VecNormalize(norm_reward=True), computed in the learner
    over every actor's envs (`learner.reward_norm`). Reported returns stay unscaled."""
    clip_rewards: bool = False
    """Train on the sign of each reward (-1, 0, 1), the Atari convention that puts every game
    on one scale; applied before reward_scale. Reported episode returns stay unclipped."""
    max_policy_lag: int = 8
    """Leave out segments whose policy is more than this many versions behind the learner's
    (counted in learner/stale_segments); 0: keep all. Sync mode has no lag."""
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        check_types(self, "learner.")
        require(0.0 < self.gamma <= 1.0, "learner.gamma", self.gamma, "a number in (0, 1]")
        require(
            0.0 <= self.gae_lambda <= 1.0,
            "learner.gae_lambda",
            self.gae_lambda,
            "a number in [0, 1]",
        )
        require(self.value_coef >= 0, "learner.value_coef", self.value_coef, "a number >= 0")
        require(self.entropy_coef >= 0, "learner.entropy_coef", self.entropy_coef, "a number >= 0")
        require(0 < self.lr < 1, "learner.lr", self.lr, "a number in (0, 1), e.g. 7e-4")
        require(self.optimizer_eps > 0, "learner.optimizer_eps", self.optimizer_eps, "a number > 0")
        require(
            0 < self.rmsprop_alpha < 1,
            "learner.rmsprop_alpha",
            self.rmsprop_alpha,
            "a number in (0, 1)",
        )
        require(
            self.max_grad_norm >= 0,
            "learner.max_grad_norm",
            self.max_grad_norm,
            "a number >= 0 (0 disables clipping)",
        )
        # The learner actor is given one GPU by Ray, which it sees as cuda:0 whichever of the
        # node's GPUs that is: an index past 0 names a device it can never see.
        require(
            self.device in ("auto", "cpu", "cuda", "cuda:0"),
            "learner.device",
            self.device,
            "'auto', 'cpu' or 'cuda' (Ray gives the learner one GPU, which it sees as cuda:0; "
            "pick a GPU type with the node it runs on, not an index)",
        )
        require(self.num_threads >= 0, "learner.num_threads", self.num_threads, "an integer >= 0")
        require(self.num_cpus >= 0, "learner.num_cpus", self.num_cpus, "a number >= 0")
        require(self.reward_scale > 0, "learner.reward_scale", self.reward_scale, "a number > 0")
        require(self.rho_bar > 0, "learner.rho_bar", self.rho_bar, "a number > 0, e.g. 1.0")
        require(self.c_bar > 0, "learner.c_bar", self.c_bar, "a number > 0, e.g. 1.0")
        require(
            self.max_policy_lag >= 0,
            "learner.max_policy_lag",
            self.max_policy_lag,
            "an integer >= 0 (0: no limit)",
        )
