"""The base model's picture of the behaviors (the paper's Figure 1b).

Each behavior name is embedded by the language model itself: one plain forward pass over the name's tokens
and the mean of the last hidden states. PCA reduces the vectors to 2-D. The paper's observation is that
tail behaviors sit near semantically related anchors, which is why tuning on anchors transfers to tails.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA
from tqdm import tqdm

from behaviorlm.data.types import Stats
from behaviorlm.errors import InputError


@torch.no_grad()
def embed_names(model, tokenizer, names: Sequence[str]) -> np.ndarray:
    """(len(names), hidden) array: mean last hidden state over each name's own tokens.

    Names are encoded alone, without special tokens, so the vector reflects the name rather than a BOS
    token or a template. One name per forward avoids padding, which would need a pad token and masking.
    """
    device = next(model.parameters()).device
    vectors = []
    for name in tqdm(names, desc="embedding behavior names", unit="name", disable=len(names) < 100):
        ids = tokenizer(name, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        if ids.shape[1] == 0:
            raise InputError(f"behavior name {name!r} has no tokens")
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        vectors.append(hidden[0].float().mean(dim=0).cpu().numpy())
    return np.stack(vectors)


def behavior_embedding_map(model, tokenizer, stats: Stats) -> dict:
    """{"points": [{behavior, x, y, anchor, share}], "explained_variance": [pc1, pc2], ...} for the report.

    ``model`` is any causal LM (or PEFT model) that returns hidden states; it is put in eval mode for the
    forward passes and restored afterwards.
    """
    behaviors = stats.behaviors
    if len(behaviors) < 2:
        raise InputError(f"an embedding map needs at least 2 behaviors, the data has {len(behaviors)}")
    was_training = model.training
    model.eval()
    try:
        vectors = embed_names(model, tokenizer, [b.name for b in behaviors])
    finally:
        model.train(was_training)
    pca = PCA(n_components=2, random_state=0)
    coords = pca.fit_transform(vectors)
    return {
        "points": [
            {"behavior": b.name, "x": float(x), "y": float(y), "anchor": b.anchor, "share": b.share, "group": b.group}
            for b, (x, y) in zip(behaviors, coords)
        ],
        "explained_variance": [float(v) for v in pca.explained_variance_ratio_],
        "embedding": "mean of the last hidden states over the behavior name's tokens",
        "dimensions": int(vectors.shape[1]),
    }
