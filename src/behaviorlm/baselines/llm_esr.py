"""LLM-ESR (Liu et al., NeurIPS 2024): a language view and an ID view of every behavior, one sequence encoder.

- **Language view**: the base model's embedding of each behavior name, frozen, mapped to the model's width by
  a trainable adapter (two linear layers, as in the original).
- **ID view**: a trainable embedding per behavior, initialised from the principal components of the language
  embeddings (the original's PCA initialisation).
- Both views go through SASRec's inputs (context, position) and one shared transformer; before it, each view
  attends to the other (the original's cross-attention, here causal so no position sees a later event, and
  added to the view rather than replacing it, which kept each position's own behavior and trained several
  times faster on a test sequence). The two outputs are concatenated, and a behavior's score is the dot
  product with its concatenated embeddings.
- **Retrieval-augmented self-distillation**: users are represented by the mean language embedding of the
  behaviors they did; each training sample's representation is pulled (MSE, weight ``alpha``) towards the mean
  representation of its user's ``neighbours`` most similar users, which carries what similar users' longer
  logs taught the model to users whose own log says little. The teacher's representations are computed once
  per epoch with the current model (the original recomputes them every batch), from each user's latest window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from behaviorlm.baselines.encoding import PAD, Encoded, Vocab
from behaviorlm.baselines.language import LanguageSASRec
from behaviorlm.baselines.neural import ContextEmbedding, SequenceEncoder
from behaviorlm.baselines.sasrec import causal_inputs, last_hidden, next_event_loss
from behaviorlm.data.types import Sample
from behaviorlm.errors import InputError


def principal_components(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """(n, dim): the rows' coordinates on their first principal directions (zero beyond the rank), scaled to
    mean square 1 so they start at the scale of a default embedding."""
    centered = vectors - vectors.mean(dim=0, keepdim=True)
    _, _, vt = torch.linalg.svd(centered, full_matrices=False)
    k = min(dim, vt.shape[0])
    coords = F.pad(centered @ vt[:k].T, (0, dim - k))
    scale = coords[:, :k].pow(2).mean().sqrt()
    return coords / scale if scale > 0 else coords


class CrossView(nn.Module):
    """One view's positions attend to the other view's positions up to their own."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, query: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(query.shape[1], dtype=query.dtype)
        return self.attention(query, other, other, attn_mask=mask, need_weights=False)[0]


class DualViewNet(nn.Module):
    def __init__(self, vocab: Vocab, language: torch.Tensor, dim: int, layers: int, heads: int, dropout: float,
                 max_len: int, cross_attention: bool):
        super().__init__()
        self.bos_id, self.n_classes = vocab.bos_id, vocab.n_classes
        self.encoder = SequenceEncoder(vocab, dim, layers, heads, dropout, max_positions=max_len + 1)
        self.next_context = ContextEmbedding(vocab, dim)
        table = torch.zeros(vocab.n_behavior_ids, language.shape[1])
        table[1:vocab.n_classes + 1] = language  # special ids (padding, [BOS], unknown) have no name: zero
        self.language = nn.Embedding.from_pretrained(table, freeze=True, padding_idx=PAD)
        middle = max(1, language.shape[1] // 2)
        self.adapter = nn.Sequential(nn.Linear(language.shape[1], middle), nn.Linear(middle, dim))
        with torch.no_grad():  # the ID view is the encoder's own behavior table
            self.encoder.behavior.weight[1:vocab.n_classes + 1] = principal_components(language, dim)
        self.cross = nn.ModuleList([CrossView(dim, heads, dropout) for _ in range(2)]) if cross_attention else None

    def hidden(self, batch: Encoded) -> torch.Tensor:
        """(batch, width, 2 * dim): ID view then language view; position ``t`` predicts column ``t``."""
        x = causal_inputs(batch, self.bos_id, self.next_context)
        ids, words = (self.encoder.inputs(v, x.hour, x.weekday, x.place, x.position, x.next_context)
                      for v in (self.encoder.behavior(x.behavior), self.adapter(self.language(x.behavior))))
        if self.cross is not None:
            ids, words = ids + self.cross[0](words, ids), words + self.cross[1](ids, words)
        return torch.cat([self.encoder.contextualize(v, causal=True) for v in (ids, words)], dim=-1)

    def behaviors(self) -> torch.Tensor:
        """(n_classes, 2 * dim): every candidate's ID and adapted language embedding."""
        index = torch.arange(1, self.n_classes + 1)
        return torch.cat([self.encoder.behavior(index), self.adapter(self.language(index))], -1)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.behaviors().T


class LLMESR(LanguageSASRec):
    name = "llm-esr"

    def __init__(self, candidates: list[str], *, alpha: float = 0.1, neighbours: int = 10,
                 cross_attention: bool = True, **kwargs):
        super().__init__(candidates, **kwargs)
        if alpha < 0:
            raise InputError(f"alpha must be at least 0, got {alpha}")
        if neighbours < 0:
            raise InputError(f"neighbours must be at least 0, got {neighbours}")
        self.alpha, self.neighbours, self.cross_attention = alpha, neighbours, cross_attention
        self._user_of_row: torch.Tensor | None = None
        self._neighbours: torch.Tensor | None = None
        self._latest: Encoded | None = None
        self._teacher: torch.Tensor | None = None

    def hparams(self) -> dict:
        return {**super().hparams(), "alpha": self.alpha, "neighbours": self.neighbours,
                "cross_attention": self.cross_attention}

    def build(self) -> nn.Module:
        return DualViewNet(self.vocab, self.language_tensor(), self.hidden, self.layers, self.heads, self.dropout,
                           self.max_len, self.cross_attention)

    def prepare_training(self, train: list[Sample], data: Encoded) -> None:
        """Each training user's most similar users (cosine of their mean language embedding) and latest window."""
        users = sorted({s.user_id for s in train})
        index = {u: i for i, u in enumerate(users)}
        self._user_of_row = torch.tensor([index[s.user_id] for s in train])
        k = min(self.neighbours, len(users) - 1)
        self._teacher = self._neighbours = None
        if self.alpha == 0 or k < 1:
            return
        language, rows = self.language_tensor(), self.vocab.behavior_ids()
        profiles = torch.zeros(len(users), language.shape[1])
        counts = torch.zeros(len(users))
        latest: dict[int, int] = {}
        for row, sample in enumerate(train):
            u = index[sample.user_id]
            if sample.target.behavior in rows:
                profiles[u] += language[rows[sample.target.behavior] - 1]
                counts[u] += 1
            if u not in latest or sample.target.time >= train[latest[u]].target.time:
                latest[u] = row
        profiles = F.normalize(profiles / counts.clamp(min=1)[:, None], dim=1)
        similarity = (profiles @ profiles.T).fill_diagonal_(-torch.inf)
        self._neighbours = similarity.topk(k, dim=1).indices
        self._latest = data.subset(torch.tensor([latest[u] for u in range(len(users))]))

    @torch.no_grad()
    def start_epoch(self, model: DualViewNet) -> None:
        if self._neighbours is None:
            return
        model.eval()
        users = torch.cat([last_hidden(part, model.hidden(part)) for part in
                           (self._latest.subset(torch.arange(i, min(i + 512, len(self._latest))))
                            for i in range(0, len(self._latest), 512))])
        self._teacher = users[self._neighbours].mean(dim=1)

    def loss(self, model: DualViewNet, batch: Encoded, generator: torch.Generator) -> torch.Tensor:
        hidden = model.hidden(batch)
        loss = next_event_loss(model, batch, hidden)
        if self._teacher is None:
            return loss
        teacher = self._teacher[self._user_of_row[batch.rows]]
        return loss + self.alpha * F.mse_loss(last_hidden(batch, hidden), teacher)

