"""The learner's optimisers: torch's own RMSprop and Adam update functions
(`torch.optim.rmsprop.rmsprop`, `torch.optim.adam.adam`), driven without the
`torch.optim.Optimizer` class.

Why not the class: its methods (`__init__`, `step`, `zero_grad`, `state_dict`) import
`torch._dynamo` on first use, which costs about 2 s of CPU, every time a learner process
starts and on its start-up's critical path (the actors wait for its first weights). The update
math stays torch's; this class only keeps the per-parameter state. `state_dict()` has
`torch.optim`'s layout and `load_state_dict` reads it, so checkpoints written with
`torch.optim.RMSprop`/`Adam` load here and the other way round (tests check both, and that
every step matches `torch.optim` exactly).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.optim.adam import adam
from torch.optim.rmsprop import rmsprop

_STATE_KEYS = {"rmsprop": ("square_avg",), "adam": ("exp_avg", "exp_avg_sq")}


class Optimizer:
    """RMSprop (no momentum, not centred) or Adam (no AMSGrad) over one group of parameters,
    without weight decay: what `LearnerConfig` offers."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        kind: Literal["rmsprop", "adam"],
        lr: float,
        eps: float,
        alpha: float = 0.99,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        if kind not in _STATE_KEYS:
            raise ValueError(f"optimizer {kind!r} is not one of {sorted(_STATE_KEYS)}")
        self.kind = kind
        self.params = list(params)
        self.lr, self.eps, self.alpha, self.betas = lr, eps, alpha, betas
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        """Per parameter index, created at its first step (as torch.optim does)."""

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One step on every parameter that has a gradient."""
        active = [i for i, p in enumerate(self.params) if p.grad is not None]
        for i in active:
            if i not in self.state:
                p = self.params[i]
                self.state[i] = {"step": torch.zeros((), dtype=torch.float32)}
                for key in _STATE_KEYS[self.kind]:
                    self.state[i][key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        params = [self.params[i] for i in active]
        grads = [p.grad for p in params]
        steps = [self.state[i]["step"] for i in active]
        if self.kind == "rmsprop":
            squares = [self.state[i]["square_avg"] for i in active]
            rmsprop(params, grads, squares, [], [], steps, lr=self.lr, alpha=self.alpha,
                    eps=self.eps, weight_decay=0.0, momentum=0.0, centered=False)  # fmt: skip
        else:
            firsts = [self.state[i]["exp_avg"] for i in active]
            seconds = [self.state[i]["exp_avg_sq"] for i in active]
            adam(params, grads, firsts, seconds, [], steps, amsgrad=False, beta1=self.betas[0],
                 beta2=self.betas[1], lr=self.lr, weight_decay=0.0, eps=self.eps,
                 maximize=False)  # fmt: skip

    def _group(self) -> dict[str, Any]:
        """The hyperparameters as `torch.optim` writes them in a param group."""
        common = {"lr": self.lr, "eps": self.eps, "weight_decay": 0.0, "maximize": False,
                  "foreach": None, "capturable": False, "differentiable": False}  # fmt: skip
        if self.kind == "rmsprop":
            return {**common, "alpha": self.alpha, "momentum": 0.0, "centered": False}
        return {**common, "betas": self.betas, "amsgrad": False, "fused": None,
                "decoupled_weight_decay": False}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        group = {**self._group(), "params": list(range(len(self.params)))}
        state = {i: dict(s) for i, s in self.state.items()}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the per-parameter state of `state_dict()` here or of `torch.optim`'s
        RMSprop/Adam over the same parameters, onto the parameters' devices. The
        hyperparameters stay this optimizer's own (they come from the run's config)."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            sizes = [len(g["params"]) for g in groups]
            raise ValueError(
                f"optimizer state for parameter groups of sizes {sizes} does not fit this "
                f"model's {len(self.params)} parameters: was it saved for another model?"
            )
        keys = ("step", *_STATE_KEYS[self.kind])
        loaded: dict[int, dict[str, torch.Tensor]] = {}
        for position, index in enumerate(groups[0]["params"]):
            saved = state_dict["state"].get(index)
            if saved is None:
                continue  # that parameter had not stepped yet
            missing = [k for k in keys if k not in saved]
            if missing:
                raise ValueError(
                    f"optimizer state lacks {missing} for parameter {position}: it was saved "
                    f"by another optimizer than {self.kind!r} (learner.optimizer)"
                )
            p = self.params[position]
            for key in keys[1:]:
                if saved[key].shape != p.shape:
                    raise ValueError(
                        f"optimizer state {key!r} of parameter {position} has shape "
                        f"{tuple(saved[key].shape)}, the parameter {tuple(p.shape)}"
                    )
            step = torch.as_tensor(saved["step"], dtype=torch.float32).detach().cpu().clone()
            loaded[position] = {"step": step}
            for key in keys[1:]:
                loaded[position][key] = saved[key].detach().to(p.device, p.dtype).clone()
        self.state = loaded
