"""What kind of machine this is, asked before torch is imported (the CLI sets process-wide options first)."""

from __future__ import annotations

import os
from pathlib import Path


def gpu_host() -> bool:
    """Whether an NVIDIA GPU is visible to this process (the driver lists one and ``CUDA_VISIBLE_DEVICES`` does not
    hide them all). On such a host the CPU thread settings tuned for shared CPU machines are left alone."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/proc/driver/nvidia/gpus").glob("*"))
