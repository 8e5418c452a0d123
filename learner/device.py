"""Which torch device the learner trains on."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when this process sees a GPU, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"learner.device={name!r} but this process sees no CUDA device; "
            "use 'auto' or 'cpu', or run the learner on a GPU node"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RuntimeError(
            f"learner.device={name!r} but this process sees {torch.cuda.device_count()} CUDA "
            "device(s): use 'cuda'"
        )
    return device
