"""AlphaFuse (Hu et al., SIGIR 2025): ID embeddings learned in the null space of the language embeddings.

The behavior names' language embeddings are centered and decomposed (SVD). Their principal directions span
the *semantic* subspace; the directions after them, where the embeddings have (almost) no variance, are its
*null space*. The model works in ``hidden`` coordinates along these directions: the first ``hidden -
null_dim`` (fewer when the embeddings have a lower rank) hold each behavior's language coordinates, divided
by their standard deviation (the original's standardization) and frozen; the other ``null_dim`` hold a
trainable ID embedding (zero at the start, so training starts from the language view). A behavior's
embedding is the sum, so the ID part can never disturb the semantics. SASRec encodes the sequence and a
behavior's score is the dot product with its embedding, as in the original.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from behaviorlm.baselines.encoding import Vocab
from behaviorlm.baselines.language import LanguageSASRec
from behaviorlm.baselines.sasrec import SASRecNet
from behaviorlm.errors import InputError


def semantic_basis(language: np.ndarray, dim: int, null_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(coordinates, directions)``: the behaviors' standardized coordinates (n, s) on the first ``s`` principal
    directions, s = min(dim - null_dim, rank), and ``dim`` orthonormal directions (dim, language dims), the
    semantic ones first, then the null space's."""
    centered = language.astype(np.float64) - language.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centered, full_matrices=True)
    rank = int((singular > singular[0] * 1e-6).sum()) if singular.size and singular[0] > 0 else 0
    s = min(dim - null_dim, rank)
    std = singular[:s] / np.sqrt(max(1, len(language) - 1))
    return centered @ vt[:s].T / std, vt[:dim]


class NullSpaceEmbedding(nn.Module):
    """Behavior ids -> frozen semantic coordinates + trainable ID coordinates in the null space."""

    def __init__(self, vocab: Vocab, language: np.ndarray, dim: int, null_dim: int):
        super().__init__()
        coordinates, directions = semantic_basis(language, dim, null_dim)
        self.semantic_dims = coordinates.shape[1]
        table = torch.zeros(vocab.n_behavior_ids, dim)
        table[1:vocab.n_classes + 1, :self.semantic_dims] = torch.from_numpy(coordinates).float()
        self.register_buffer("semantic", table)
        self.register_buffer("directions", torch.from_numpy(directions).float())
        self.ids = nn.Parameter(torch.zeros(vocab.n_behavior_ids, dim - self.semantic_dims))

    @property
    def weight(self) -> torch.Tensor:
        """(n_behavior_ids, dim): every id's embedding."""
        return self.semantic + F.pad(self.ids, (self.semantic_dims, 0))

    def forward(self, behavior: torch.Tensor) -> torch.Tensor:
        return F.embedding(behavior, self.weight)

    def in_language_space(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(semantic part, ID part) of every id's embedding, as vectors of the language model's space."""
        return self.semantic @ self.directions, F.pad(self.ids, (self.semantic_dims, 0)) @ self.directions


class AlphaFuseNet(SASRecNet):
    """SASRec over null-space behavior embeddings, scored against those embeddings instead of a classifier."""

    def __init__(self, vocab: Vocab, language: np.ndarray, dim: int, layers: int, heads: int, dropout: float,
                 max_len: int, null_dim: int):
        super().__init__(vocab, dim, layers, heads, dropout, max_len)
        self.encoder.behavior = NullSpaceEmbedding(vocab, language, dim, null_dim)
        del self.head

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.encoder.behavior.weight[1:self.n_classes + 1].T


class AlphaFuse(LanguageSASRec):
    name = "alphafuse"

    def __init__(self, candidates: list[str], *, null_dim: int | None = None, **kwargs):
        super().__init__(candidates, **kwargs)
        self.null_dim = self.hidden // 2 if null_dim is None else null_dim
        if not 1 <= self.null_dim < self.hidden:
            raise InputError(f"null_dim must be between 1 and hidden - 1 = {self.hidden - 1}, got {self.null_dim}")
        self.semantic_dims: int | None = None

    def hparams(self) -> dict:
        return {**super().hparams(), "null_dim": self.null_dim, "semantic_dims": self.semantic_dims}

    def build(self) -> nn.Module:
        if self.hidden > self.language.shape[1]:
            raise InputError(f"alphafuse: hidden size {self.hidden} exceeds the language model's "
                             f"{self.language.shape[1]} dimensions")
        model = AlphaFuseNet(self.vocab, self.language, self.hidden, self.layers, self.heads, self.dropout,
                             self.max_len, self.null_dim)
        self.semantic_dims = model.encoder.behavior.semantic_dims
        return model
