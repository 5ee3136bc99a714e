"""LLaRA-style hybrid behavior tokens (Liao et al., SIGIR 2024, "LLaRA: Large Language-Recommendation Assistant").

In the llara variant's prompts every history behavior's name is followed by a placeholder token of its own
(``prompts.behavior_token``). The placeholders are added to the tokenizer, not to the model's vocabulary: a forward
pre-hook on the input-embedding layer swaps their ids for a valid one, and a forward hook overwrites their rows with
``projector(sasrec_embedding[behavior])``. Training (``lm.tuning``) and ranking (``lm.ranking``, its shared-prefix
cache and packed scoring included) call the model as always.

The frozen SASRec table and LLaRA's projector (Linear, GELU, Linear) form one module, ``HybridTokens``, attached to
the language model as ``hybrid_tokens``. PEFT trains it with LoRA and saves it in every adapter file it writes
(``modules_to_save``: checkpoints, the best one, the final adapter). ``hybrid.json`` beside the final adapter names
the behaviors in token order and the table's shape; ``restore_hybrid`` (called by ``loading.attach_adapter``)
rebuilds the module before PEFT loads the trained weights into it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, set_seed

from behaviorlm.config import LoraConfig
from behaviorlm.data.types import write_json_atomic
from behaviorlm.errors import InputError
from behaviorlm.prompts import behavior_token

MODULE = "hybrid_tokens"
"""The attribute of the language model that holds ``HybridTokens`` (and PEFT's ``modules_to_save`` entry)."""
HYBRID_FILE = "hybrid.json"


class HybridTokens(nn.Module):
    """Behavior embeddings of a trained SASRec (frozen) and the projector into the language model's input space."""

    def __init__(self, items: torch.Tensor, hidden_size: int):
        super().__init__()
        self.register_buffer("items", items.detach().float().clone())
        dim = items.shape[1]
        self.projector = nn.Sequential(nn.Linear(dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, behavior: torch.Tensor) -> torch.Tensor:
        """(n,) behavior indices -> (n, hidden_size) input embeddings."""
        return self.projector(self.items[behavior])


class _TokenSwap:
    """The two hooks on the input-embedding layer: ``before`` hides the placeholders (ids past the model's
    vocabulary) and remembers where they were, ``after`` writes their projected embeddings there."""

    def __init__(self, owner: nn.Module, token_ids: Sequence[int]):
        self.owner = owner
        ids = torch.tensor(list(token_ids))
        self.sorted_ids, self.behavior_of = ids.sort()  # behavior_of[k]: the behavior of the k-th smallest id
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def before(self, module: nn.Module, args: tuple):
        self.pending = None
        if not args or not torch.is_tensor(args[0]):
            return None
        ids = args[0]
        sorted_ids = self.sorted_ids.to(ids.device)
        mask = torch.isin(ids, sorted_ids)
        if not mask.any():
            return None
        behavior = self.behavior_of.to(ids.device)[torch.searchsorted(sorted_ids, ids[mask])]
        self.pending = (mask, behavior)
        return (ids.masked_fill(mask, 0), *args[1:])

    def after(self, module: nn.Module, args: tuple, output: torch.Tensor):
        if self.pending is None:
            return None
        mask, behavior = self.pending
        self.pending = None
        # Looked up at every call: PEFT replaces the module by its trainable copy, a merge puts the copy back.
        vectors = getattr(self.owner, MODULE)(behavior).to(output.dtype)
        return output.masked_scatter(mask.unsqueeze(-1), vectors)


def attach_hybrid(model: nn.Module, tokenizer: PreTrainedTokenizerBase, behaviors: Sequence[str],
                  items: torch.Tensor, seed: int = 0) -> nn.Module:
    """Give ``model`` (a causal LM without an adapter yet) and ``tokenizer`` the hybrid token of every behavior:
    ``items[i]`` is the SASRec embedding of ``behaviors[i]`` (the candidate order the prompts index). The
    projector's initial weights are drawn from ``seed``. Returns ``model``, changed in place."""
    if hasattr(model, "peft_config"):
        raise ValueError("attach the hybrid tokens before the adapter: PEFT must find them to train and save them")
    if hasattr(model, MODULE):
        raise ValueError("the model already carries hybrid tokens")
    if items.ndim != 2 or items.shape[0] != len(behaviors):
        raise ValueError(f"expected one embedding per behavior ({len(behaviors)}), got a table of shape "
                         f"{tuple(items.shape)}")
    tokens = [behavior_token(i) for i in range(len(behaviors))]
    tokenizer.add_tokens(tokens, special_tokens=True)
    embeddings = model.get_input_embeddings()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = HybridTokens(items, embeddings.embedding_dim)
    model.add_module(MODULE, module.to(embeddings.weight.device))
    swap = _TokenSwap(model, tokenizer.convert_tokens_to_ids(tokens))
    embeddings.register_forward_pre_hook(swap.before)
    embeddings.register_forward_hook(swap.after)
    return model


def hybrid_lora(model: nn.Module, lora: LoraConfig, seed: int):
    """LoRA exactly as ``lm.tuning`` injects it (same layers, same seeded initialisation), with the hybrid module
    trained and saved alongside (``modules_to_save``)."""
    from peft import get_peft_model

    from behaviorlm.lm.loading import peft_quietly
    from behaviorlm.lm.tuning import peft_lora_config

    if "embed_tokens" in lora.target_modules:
        raise InputError("llara: lora.target_modules must not include embed_tokens (the hybrid tokens replace rows "
                         "of the input embeddings, which a LoRA embedding layer would look up past the vocabulary)")
    config = peft_lora_config(model, lora, modules_to_save=[MODULE])
    set_seed(seed)
    with peft_quietly():
        return get_peft_model(model, config)


def write_hybrid_file(adapter_dir: str | Path, behaviors: Sequence[str], item_dim: int, info: dict | None = None
                      ) -> None:
    """``hybrid.json`` beside an adapter: what ``restore_hybrid`` needs (and, in ``info``, where the table came from)."""
    write_json_atomic({"behaviors": list(behaviors), "item_dim": int(item_dim), "token": behavior_token(0),
                       **(info or {})}, Path(adapter_dir) / HYBRID_FILE)


def is_hybrid(adapter_dir: str | Path) -> bool:
    return (Path(adapter_dir) / HYBRID_FILE).is_file()


def restore_hybrid(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, adapter_dir: str | Path) -> None:
    """Before a llara adapter is attached: its hybrid tokens on ``tokenizer`` and an empty ``HybridTokens`` on
    ``model``, which the adapter's weights then fill. Does nothing for other adapters."""
    path = Path(adapter_dir) / HYBRID_FILE
    if not path.is_file():
        return
    if tokenizer is None:
        raise ValueError(f"{adapter_dir} is a llara adapter: loading it needs the tokenizer, which gets its tokens")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        behaviors, item_dim = list(raw["behaviors"]), int(raw["item_dim"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a readable llara description ({type(exc).__name__}: {exc}); tune the model again",
                         file=str(path)) from None
    attach_hybrid(model, tokenizer, behaviors, torch.zeros(len(behaviors), item_dim))
