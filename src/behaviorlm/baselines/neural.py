"""What the sequential baselines share: event embeddings, the transformer block, and the training loop.

Training follows RecBole's conventions: full softmax over every behavior (no sampled negatives,
which inflate scores), Adam, early stopping on validation accuracy with the best epoch's weights
restored. Everything random (initialisation, dropout, shuffling, masking) is drawn from the seed,
so a rerun with the same seed and thread count reproduces the same numbers.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from behaviorlm.baselines.encoding import PAD, Encoded, Vocab, encode
from behaviorlm.data.types import Sample
from behaviorlm.errors import InputError

HOURS, WEEKDAYS = 24, 7


def subsample(samples: list[Sample], fraction: float = 1.0, max_samples: int | None = None, seed: int = 0) -> list[Sample]:
    """A seeded subset of the training samples, kept in their original order.

    Used by the sample-efficiency experiment; every baseline trains on exactly this subset.
    """
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"train fraction must be in (0, 1], got {fraction}")
    keep = len(samples) if fraction >= 1.0 else max(1, round(fraction * len(samples)))
    if max_samples is not None:
        if max_samples < 1:
            raise InputError(f"max train samples must be at least 1, got {max_samples}")
        keep = min(keep, max_samples)
    if keep >= len(samples):
        return list(samples)
    index = np.sort(np.random.default_rng(seed).choice(len(samples), size=keep, replace=False))
    return [samples[i] for i in index]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore the caller's setting.

    These models are small: one thread is nearly as fast as several on an idle machine and many
    times faster on a busy one, where extra threads wait on each other.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ContextEmbedding(nn.Module):
    """Hour of day + weekday + place of an event (id 0 = padding in each table)."""

    def __init__(self, vocab: Vocab, dim: int):
        super().__init__()
        self.hour = nn.Embedding(HOURS + 1, dim, padding_idx=PAD)
        self.weekday = nn.Embedding(WEEKDAYS + 1, dim, padding_idx=PAD)
        self.place = nn.Embedding(vocab.n_place_ids, dim, padding_idx=PAD)

    def forward(self, hour: torch.Tensor, weekday: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
        return self.hour(hour) + self.weekday(weekday) + self.place(place)


class SequenceEncoder(nn.Module):
    """Behavior + context + position embeddings, then a pre-norm transformer encoder."""

    def __init__(self, vocab: Vocab, dim: int, layers: int, heads: int, dropout: float, max_positions: int):
        super().__init__()
        self.behavior = nn.Embedding(vocab.n_behavior_ids, dim, padding_idx=PAD)
        self.context = ContextEmbedding(vocab, dim)
        self.position = nn.Embedding(max_positions, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def forward(
        self,
        behavior: torch.Tensor,
        hour: torch.Tensor,
        weekday: torch.Tensor,
        place: torch.Tensor,
        position: torch.Tensor,
        extra: torch.Tensor | None = None,
        causal: bool = False,
        padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.inputs(self.behavior(behavior), hour, weekday, place, position, extra)
        return self.contextualize(x, causal, padding)

    def inputs(
        self,
        behavior: torch.Tensor,
        hour: torch.Tensor,
        weekday: torch.Tensor,
        place: torch.Tensor,
        position: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Behavior vectors (batch, width, dim) plus context and position embeddings: the transformer's input."""
        x = behavior + self.context(hour, weekday, place) + self.position(position)
        if extra is not None:
            x = x + extra
        return self.dropout(self.norm(x))

    def contextualize(self, x: torch.Tensor, causal: bool = False, padding: torch.Tensor | None = None) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=x.dtype) if causal else None
        return self.transformer(x, mask=mask, is_causal=causal, src_key_padding_mask=padding)


def classifier(dim: int, n_classes: int) -> nn.Module:
    """Hidden state -> one logit per candidate behavior (full softmax)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, n_classes))


def recency(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Position ids counted back from each sample's last real column (0 = the event being predicted).

    Counting from the end keeps the prediction slot at one position whatever the history length.
    """
    return (lengths[:, None] - 1 - torch.arange(width)[None, :]).clamp(min=0)


def class_labels(behavior_ids: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Behavior ids -> class indices; padding and special ids become -100 (ignored by the loss)."""
    return torch.where((behavior_ids >= 1) & (behavior_ids <= n_classes), behavior_ids - 1, torch.full_like(behavior_ids, -100))


class NeuralBaseline(ABC):
    """``fit(train, valid)`` then ``predict_proba(samples)`` over the candidate list.

    Subclasses define the network and its training objective; this class owns the loop.
    """

    name = "neural"

    def __init__(
        self,
        candidates: list[str],
        *,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 128,
        epochs: int = 30,
        patience: int = 3,
        max_len: int | None = None,
        min_place_count: int = 1,
        seed: int = 0,
        train_fraction: float = 1.0,
        max_train_samples: int | None = None,
        progress: bool = True,
        threads: int | None = 1,
    ):
        if not candidates:
            raise InputError("no candidate behaviors")
        for key, value in (("epochs", epochs), ("patience", patience), ("batch_size", batch_size), ("hidden", hidden)):
            if value < 1:
                raise InputError(f"{key} must be at least 1, got {value}")
        if hidden % heads:
            raise InputError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.candidates = list(candidates)
        self.hidden, self.layers, self.heads, self.dropout = hidden, layers, heads, dropout
        self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size
        self.epochs, self.patience, self.max_len = epochs, patience, max_len
        self.min_place_count, self.seed = min_place_count, seed
        self.train_fraction, self.max_train_samples, self.progress = train_fraction, max_train_samples, progress
        self.threads = threads
        self.model: nn.Module | None = None
        self.vocab: Vocab | None = None
        self.history: list[dict] = []
        """One entry per epoch: loss, validation accuracy."""
        self.best_epoch: int | None = None
        self.train_samples = 0

    def hparams(self) -> dict:
        keys = ("hidden", "layers", "heads", "dropout", "lr", "weight_decay", "batch_size", "epochs", "patience",
                "max_len", "min_place_count", "seed", "train_fraction", "max_train_samples", "threads")
        return {k: getattr(self, k) for k in keys}

    @abstractmethod
    def build(self) -> nn.Module:
        """The network, for ``self.vocab`` and ``self.max_len``."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Encoded, generator: torch.Generator) -> torch.Tensor:
        """Training loss of one batch (``generator`` drives any random masking)."""

    @abstractmethod
    def logits(self, model: nn.Module, batch: Encoded) -> torch.Tensor:
        """(batch, n_classes) scores for each sample's target."""

    def prepare_training(self, train: list[Sample], data: Encoded) -> None:
        """Called once before the first epoch with the training samples and their encoding (row i = sample i)."""

    def start_epoch(self, model: nn.Module) -> None:
        """Called at the start of every epoch, before the model is put in training mode."""

    def fit(self, train: list[Sample], valid: list[Sample]) -> NeuralBaseline:
        with torch_threads(self.threads):
            return self._fit(train, valid)

    def _fit(self, train: list[Sample], valid: list[Sample]) -> NeuralBaseline:
        train = subsample(train, self.train_fraction, self.max_train_samples, self.seed)
        if not train:
            raise InputError("no training samples")
        self.train_samples = len(train)
        self.max_len = self.max_len if self.max_len is not None else max(1, max(len(s.history) for s in train))
        self.vocab = Vocab.build(self.candidates, train, self.min_place_count)
        torch.manual_seed(self.seed)
        model = self.build()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        data = encode(train, self.vocab, self.max_len)
        val = encode(valid, self.vocab, self.max_len) if valid else None
        self.prepare_training(train, data)
        best, best_state, waited = -math.inf, None, 0
        self.history = []
        epochs = tqdm(range(1, self.epochs + 1), desc=self.name, unit="epoch", disable=not self.progress)
        for epoch in epochs:
            self.start_epoch(model)
            model.train()
            order = torch.randperm(len(data), generator=generator)
            total, batches = 0.0, 0
            for start in range(0, len(order), self.batch_size):
                loss = self.loss(model, data.subset(order[start:start + self.batch_size]), generator)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                total, batches = total + loss.item(), batches + 1
            self.model = model
            # Without a validation split the last epoch is kept (score = epoch number).
            score = self._accuracy(val) if val is not None else float(epoch)
            self.history.append({"epoch": epoch, "loss": total / batches, "valid_accuracy": score if val is not None else None})
            epochs.set_postfix(loss=f"{total / batches:.3f}", valid_acc=f"{score:.3f}" if val is not None else "-")
            if score > best:
                best, best_state, waited, self.best_epoch = score, copy.deepcopy(model.state_dict()), 0, epoch
            else:
                waited += 1
                if waited >= self.patience:
                    break
        model.load_state_dict(best_state)
        self.model = model
        return self

    @torch.no_grad()
    def _scores(self, data: Encoded, batch_size: int = 512) -> torch.Tensor:
        self.model.eval()
        parts = [self.logits(self.model, data.subset(torch.arange(i, min(i + batch_size, len(data)))))
                 for i in range(0, len(data), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, len(self.candidates))

    def _accuracy(self, data: Encoded) -> float:
        keep = data.labels >= 0
        return float((self._scores(data).argmax(-1)[keep] == data.labels[keep]).float().mean()) if keep.any() else 0.0

    def predict_proba(self, samples: list[Sample]) -> np.ndarray:
        """(len(samples), n_candidates) probabilities, columns in candidate order."""
        if self.model is None:
            raise RuntimeError("fit() first")
        with torch_threads(self.threads):
            return F.softmax(self._scores(encode(samples, self.vocab, self.max_len)), dim=-1).numpy()
