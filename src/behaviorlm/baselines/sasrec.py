"""SASRec (Kang & McAuley, 2018): causal self-attention over the behavior history.

Input position ``t`` carries event ``t``'s behavior and context and, added to it, the context (hour,
weekday, place) of event ``t + 1`` — the event it predicts. The language model's prompt shows the
next event's context too, so this is the same information; putting it in the input (rather than
only on the output) lets attention relate it to the history. A ``[BOS]`` slot in front predicts the
first history event, so every history event is also a training target, as in the original model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from behaviorlm.baselines.encoding import Encoded
from behaviorlm.baselines.neural import ContextEmbedding, NeuralBaseline, SequenceEncoder, class_labels, classifier, recency


@dataclass
class CausalInputs:
    """One encoded batch as SASRec reads it: column ``t`` shows event ``t - 1`` (``[BOS]`` first) and predicts
    event ``t``; ``next_context`` is the context of the predicted event, zero on padding."""

    behavior: torch.Tensor
    hour: torch.Tensor
    weekday: torch.Tensor
    place: torch.Tensor
    position: torch.Tensor
    next_context: torch.Tensor


def causal_inputs(batch: Encoded, bos_id: int, next_context: ContextEmbedding) -> CausalInputs:
    width = batch.behavior.shape[1]
    real = torch.arange(width)[None, :] < batch.lengths[:, None]
    last = real & (torch.arange(width)[None, :] == batch.lengths[:, None] - 1)
    # The target's behavior must never be an input; causal attention already hides it, this makes it explicit.
    behavior = batch.behavior.masked_fill(last, 0)

    def shift(x: torch.Tensor, first: int = 0) -> torch.Tensor:
        return F.pad(x[:, :-1], (1, 0), value=first)

    return CausalInputs(shift(behavior, bos_id), shift(batch.hour), shift(batch.weekday), shift(batch.place),
                        recency(batch.lengths, width),
                        next_context(batch.hour, batch.weekday, batch.place) * real[..., None])


class SASRecNet(nn.Module):
    def __init__(self, vocab, dim: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.bos_id, self.n_classes = vocab.bos_id, vocab.n_classes
        self.encoder = SequenceEncoder(vocab, dim, layers, heads, dropout, max_positions=max_len + 1)
        self.next_context = ContextEmbedding(vocab, dim)
        self.head = classifier(dim, vocab.n_classes)

    def hidden(self, batch: Encoded) -> torch.Tensor:
        """(batch, width, dim); position ``t`` predicts column ``t`` of the encoded row."""
        x = causal_inputs(batch, self.bos_id, self.next_context)
        return self.encoder(x.behavior, x.hour, x.weekday, x.place, position=x.position, extra=x.next_context,
                            causal=True)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states -> one logit per candidate behavior."""
        return self.head(hidden)


def next_event_loss(model: SASRecNet, batch: Encoded, hidden: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every next event in the window (history events and the target)."""
    width = batch.behavior.shape[1]
    labels = class_labels(batch.behavior, model.n_classes)
    labels = labels.masked_fill(torch.arange(width)[None, :] >= batch.lengths[:, None], -100)
    keep = labels >= 0
    return F.cross_entropy(model.scores(hidden[keep]), labels[keep])


def last_hidden(batch: Encoded, hidden: torch.Tensor) -> torch.Tensor:
    """(batch, dim): the hidden state that predicts each sample's target."""
    return hidden[torch.arange(len(batch)), batch.lengths - 1]


class SASRec(NeuralBaseline):
    name = "sasrec"

    def build(self) -> nn.Module:
        return SASRecNet(self.vocab, self.hidden, self.layers, self.heads, self.dropout, self.max_len)

    def loss(self, model: SASRecNet, batch: Encoded, generator: torch.Generator) -> torch.Tensor:
        return next_event_loss(model, batch, model.hidden(batch))

    def logits(self, model: SASRecNet, batch: Encoded) -> torch.Tensor:
        return model.scores(last_hidden(batch, model.hidden(batch)))
