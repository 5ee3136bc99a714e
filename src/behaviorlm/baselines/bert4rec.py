"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained as a cloze task.

The sequence is the history followed by one slot for the next event, whose behavior is always
``[MASK]`` but whose hour, weekday and place are shown (the prompt of the language model shows them
too). Training also hides each history behavior with probability ``mask_prob`` (its context stays
visible) and predicts every hidden behavior; prediction reads the final ``[MASK]`` slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from behaviorlm.baselines.encoding import Encoded
from behaviorlm.baselines.neural import NeuralBaseline, SequenceEncoder, class_labels, classifier, recency


class BERT4RecNet(nn.Module):
    def __init__(self, vocab, dim: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.mask_id, self.n_classes = vocab.mask_id, vocab.n_classes
        self.encoder = SequenceEncoder(vocab, dim, layers, heads, dropout, max_positions=max_len + 1)
        self.head = classifier(dim, vocab.n_classes)

    def hidden(self, batch: Encoded, masked: torch.Tensor) -> torch.Tensor:
        width = batch.behavior.shape[1]
        padding = torch.arange(width)[None, :] >= batch.lengths[:, None]
        return self.encoder(
            batch.behavior.masked_fill(masked, self.mask_id), batch.hour, batch.weekday, batch.place,
            position=recency(batch.lengths, width), padding=padding,
        )


def last_slot(batch: Encoded) -> torch.Tensor:
    """True at each sample's next-event column."""
    return torch.arange(batch.behavior.shape[1])[None, :] == batch.lengths[:, None] - 1


class BERT4Rec(NeuralBaseline):
    name = "bert4rec"

    def __init__(self, candidates: list[str], *, mask_prob: float = 0.2, **kwargs):
        super().__init__(candidates, **kwargs)
        self.mask_prob = mask_prob

    def hparams(self) -> dict:
        return {**super().hparams(), "mask_prob": self.mask_prob}

    def build(self) -> nn.Module:
        return BERT4RecNet(self.vocab, self.hidden, self.layers, self.heads, self.dropout, self.max_len)

    def loss(self, model: BERT4RecNet, batch: Encoded, generator: torch.Generator) -> torch.Tensor:
        width = batch.behavior.shape[1]
        history = torch.arange(width)[None, :] < batch.lengths[:, None] - 1
        masked = last_slot(batch) | (history & (torch.rand(batch.behavior.shape, generator=generator) < self.mask_prob))
        labels = class_labels(batch.behavior, model.n_classes).masked_fill(~masked, -100)
        keep = labels >= 0
        return F.cross_entropy(model.head(model.hidden(batch, masked)[keep]), labels[keep])

    def logits(self, model: BERT4RecNet, batch: Encoded) -> torch.Tensor:
        hidden = model.hidden(batch, last_slot(batch))
        return model.head(hidden[torch.arange(len(batch)), batch.lengths - 1])
