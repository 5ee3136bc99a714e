"""SASRec (Kang & McAuley, 2018): causal self-attention over the behavior history.

Input position ``t`` carries event ``t``'s behavior and context and, added to it, the context (hour,
weekday, place) of event ``t + 1`` — the event it predicts. The language model's prompt shows the
next event's context too, so this is the same information; putting it in the input (rather than
only on the output) lets attention relate it to the history. A ``[BOS]`` slot in front predicts the
first history event, so every history event is also a training target, as in the original model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from behaviorlm.baselines.encoding import Encoded
from behaviorlm.baselines.neural import ContextEmbedding, NeuralBaseline, SequenceEncoder, class_labels, classifier, recency


class SASRecNet(nn.Module):
    def __init__(self, vocab, dim: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.bos_id, self.n_classes = vocab.bos_id, vocab.n_classes
        self.encoder = SequenceEncoder(vocab, dim, layers, heads, dropout, max_positions=max_len + 1)
        self.next_context = ContextEmbedding(vocab, dim)
        self.head = classifier(dim, vocab.n_classes)

    def hidden(self, batch: Encoded) -> torch.Tensor:
        """(batch, width, dim); position ``t`` predicts column ``t`` of the encoded row."""
        width = batch.behavior.shape[1]
        real = torch.arange(width)[None, :] < batch.lengths[:, None]
        last = real & (torch.arange(width)[None, :] == batch.lengths[:, None] - 1)
        # The target's behavior must never be an input; causal attention already hides it, this makes it explicit.
        behavior = batch.behavior.masked_fill(last, 0)

        def shift(x: torch.Tensor, first: int = 0) -> torch.Tensor:
            return F.pad(x[:, :-1], (1, 0), value=first)

        return self.encoder(
            shift(behavior, self.bos_id), shift(batch.hour), shift(batch.weekday), shift(batch.place),
            position=recency(batch.lengths, width),
            extra=self.next_context(batch.hour, batch.weekday, batch.place) * real[..., None],
            causal=True,
        )


class SASRec(NeuralBaseline):
    name = "sasrec"

    def build(self) -> nn.Module:
        return SASRecNet(self.vocab, self.hidden, self.layers, self.heads, self.dropout, self.max_len)

    def loss(self, model: SASRecNet, batch: Encoded, generator: torch.Generator) -> torch.Tensor:
        """Cross-entropy of every next event in the window (history events and the target)."""
        width = batch.behavior.shape[1]
        labels = class_labels(batch.behavior, model.n_classes)
        labels = labels.masked_fill(torch.arange(width)[None, :] >= batch.lengths[:, None], -100)
        keep = labels >= 0
        return F.cross_entropy(model.head(model.hidden(batch)[keep]), labels[keep])

    def logits(self, model: SASRecNet, batch: Encoded) -> torch.Tensor:
        hidden = model.hidden(batch)
        return model.head(hidden[torch.arange(len(batch)), batch.lengths - 1])
