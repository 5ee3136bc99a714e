"""Behavior-name embeddings from the base language model, for the LLM-enhanced recommenders.

Each behavior name is embedded as the embedding map embeds it (``embed_names``: one forward pass over the
name's tokens, mean of the last hidden states). The vectors depend only on the model and the candidate list,
so they are computed once and cached as ``<cache>/<key>.npy``, the key a hash of the model's identity (its
folder's files, or its name), dtype, device type and the names in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from behaviorlm.baselines.sasrec import SASRec
from behaviorlm.data.types import Sample
from behaviorlm.errors import InputError
from behaviorlm.evaluation.embedding_map import embed_names
from behaviorlm.files import atomic_path
from behaviorlm.lm import loading
from behaviorlm.lm.loading import EMBEDDED

log = logging.getLogger(__name__)


def model_identity(name: str) -> list:
    """What the embeddings of ``name`` depend on: a folder's path and its files' sizes and times, else the name."""
    path = Path(loading.resolve(name))
    if not path.is_dir():
        return [name]
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
    return [str(path.resolve()), files]


def default_cache() -> Path:
    return loading.cache_root() / "embeddings"


def behavior_embeddings(
    model: str,
    names: list[str],
    cache: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> np.ndarray:
    """(len(names), hidden) float32 array, row i the embedding of ``names[i]``; read from the cache when there."""
    if not names:
        raise InputError("no behavior names to embed")
    target = loading.pick_device(device)
    resolved_dtype = loading.pick_dtype(dtype, target)
    key = json.dumps([model_identity(model), str(resolved_dtype), target.type, list(names)])
    path = Path(cache or default_cache()) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if path.is_file():
        try:
            vectors = np.load(path)
            if vectors.ndim == 2 and len(vectors) == len(names):
                return vectors
        except (OSError, ValueError):
            pass
        log.warning("%s: unreadable cached embeddings; computing them again", path)
    log.info("embedding %d behavior names with %s (cached in %s)", len(names), model, path.parent)
    lm, tokenizer = loading.load_model(model, device, dtype, trust_remote_code=trust_remote_code)
    lm.eval()
    vectors = embed_names(lm, tokenizer, names).astype(np.float32)
    del lm
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, vectors)
    return vectors


def standardized(vectors: np.ndarray) -> np.ndarray:
    """Centered on the behaviors' mean and scaled to unit average variance per dimension.

    Mean-pooled hidden states share a large common component and a model-specific scale; removing both makes
    the recommenders' initial scales the same whatever the language model.
    """
    centered = vectors - vectors.mean(axis=0, keepdims=True)
    scale = float(np.sqrt((centered ** 2).mean()))
    return centered / scale if scale > 0 else centered


class LanguageSASRec(SASRec):
    """SASRec whose behavior embeddings draw on the base language model's embeddings of the behavior names."""

    def __init__(
        self,
        candidates: list[str],
        *,
        language_model: str = EMBEDDED,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        embedding_cache: str | Path | None = None,
        **kwargs,
    ):
        super().__init__(candidates, **kwargs)
        self.language_model, self.device, self.dtype = language_model, device, dtype
        self.trust_remote_code, self.embedding_cache = trust_remote_code, embedding_cache
        self.language: np.ndarray | None = None
        """(n_candidates, language dims): the names' embeddings, candidate order."""

    def hparams(self) -> dict:
        dims = None if self.language is None else int(self.language.shape[1])
        return {**super().hparams(), "language_model": self.language_model, "language_dims": dims}

    def fit(self, train: list[Sample], valid: list[Sample]) -> LanguageSASRec:
        # Before the model is seeded: loading a language model may draw from torch's generator, a cache hit does not.
        self.language = behavior_embeddings(self.language_model, self.candidates, self.embedding_cache, self.device,
                                            self.dtype, self.trust_remote_code)
        return super().fit(train, valid)

    def language_tensor(self) -> torch.Tensor:
        return torch.from_numpy(standardized(self.language)).float()
