"""Every stage starts from random state derived from the run seed and its own fingerprint.

A stage must not depend on what earlier stages of the same process drew from the global generators: a run resumed
after an interruption skips the finished stages, so those generators would reach the next stage in another state.
Each stage's own seeds (LoRA initialisation, data order, prompt formats, selection) come from its configuration,
which the fingerprint covers; this reseeds whatever a library draws from the global generators besides.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def stage_seed(run_seed: int, fingerprint: str) -> int:
    return int(hashlib.sha256(f"{run_seed}:{fingerprint}".encode()).hexdigest()[:8], 16)


def seed_stage(run_seed: int, fingerprint: str) -> None:
    """Seed Python's, NumPy's and torch's global generators (every device) for one stage."""
    import torch

    seed = stage_seed(run_seed, fingerprint)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
