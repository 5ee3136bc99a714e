"""The process group a launcher starts (``accelerate launch``, ``torchrun``), through Hugging Face Accelerate.

A launcher sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in every process it starts; without one this is a
single process of rank 0 and nothing here initializes anything. With one, ``state()`` sets up Accelerate's
``PartialState`` (the process group Trainer then shares: gloo on CPUs, NCCL on GPUs) with a long timeout, because
ranks other than 0 wait at a collective while rank 0 alone prepares, selects and evaluates, which can take hours.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

WAIT = timedelta(hours=72)
"""How long a rank waits at a collective for the others (torch's default, 30 minutes, is shorter than an evaluation
of an 8B model on a full test set)."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run folder: rank 0, or the only process."""
    return rank() == 0


def state():
    """Accelerate's process state, initialized on first use (with the ``WAIT`` timeout when launched)."""
    import torch
    from accelerate import PartialState

    if world_size() == 1:
        return PartialState()
    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)  # without cpu=True, no group on CPUs


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if world_size() == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    state()
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def barrier() -> None:
    """Every rank waits here until all have arrived."""
    if world_size() > 1:
        state().wait_for_everyone()
