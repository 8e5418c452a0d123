"""Loading torch files from storage, which anyone with write access to it may have crafted."""

from __future__ import annotations

from typing import IO, Any

from packaging.version import Version

SAFE_TORCH = Version("2.10")
"""The oldest torch whose `torch.load(weights_only=True)` is trusted with a crafted file:
before 2.6 it could run code from one (CVE-2025-32434), and a later advisory reports memory
corruption in that loader before 2.10. pyproject.toml asks for it; this guards an
environment that has an older one anyway."""


class UnsafeTorch(RuntimeError):
    """The installed torch is older than `SAFE_TORCH`; the message says how to upgrade."""


def check_torch(version: str) -> None:
    if Version(version).release < SAFE_TORCH.release:
        raise UnsafeTorch(
            f"torch {version} is installed; loading checkpoints and models needs torch >= "
            f"{SAFE_TORCH} (older torch.load(weights_only=True) can run code from a crafted "
            f"file, CVE-2025-32434): pip install 'torch>={SAFE_TORCH}'"
        )


def load_weights(source: str | IO[bytes]) -> Any:
    """`torch.load(source, weights_only=True)` once the installed torch is known safe."""
    import torch  # here: most troupe processes never load a file

    check_torch(torch.__version__)
    return torch.load(source, weights_only=True)
