"""Model loading: local folders, adapters, clear errors, the tiny test model."""

from __future__ import annotations

import pytest
import torch

from behaviorlm.errors import InputError
from behaviorlm.lm.loading import embedded_tokenizer_dir, for_inference, load_model, pick_dtype, tiny_model


def test_tiny_model_shape(tiny):
    model, tokenizer = tiny
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads) == (64, 2, 4, 2)
    assert config.tie_word_embeddings and config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.pad_token is not None and tokenizer.chat_template


def test_tiny_model_is_reproducible():
    a, _ = tiny_model(seed=3)
    b, _ = tiny_model(seed=3)
    assert torch.equal(a.model.layers[0].self_attn.q_proj.weight, b.model.layers[0].self_attn.q_proj.weight)


def test_local_folder_loads_in_float32_on_cpu(tiny, tiny_dir):
    model, tokenizer = load_model(str(tiny_dir), device="cpu")
    assert model.dtype == torch.float32 and model.device.type == "cpu" and not model.training
    assert tokenizer.pad_token_id is not None and tokenizer.padding_side == "right"
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tiny[0](ids).logits, atol=1e-5)


def test_unreachable_model_is_a_clear_input_error():
    with pytest.raises(InputError, match="not a local model folder.*hf download"):
        load_model("no-such-org/no-such-model-xyz", device="cpu")


def test_missing_adapter_is_an_input_error(tiny_dir, tmp_path):
    with pytest.raises(InputError, match="adapter_config.json"):
        load_model(str(tiny_dir), device="cpu", adapter=tmp_path)


def test_dtype_choice():
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bf16") == torch.bfloat16
    with pytest.raises(InputError, match="unknown dtype"):
        pick_dtype("float13")


def test_embedded_tokenizer_is_cached_by_gguf_hash():
    folder = embedded_tokenizer_dir()
    assert folder.name == "tokenizer" and folder.parent.name.startswith("smollm2-135m-")
    assert (folder / "tokenizer.json").is_file()


def test_int8_inference_quantizes_the_linear_layers_and_keeps_the_ranking():
    import numpy as np

    from behaviorlm.lm.ranking import CandidateRanker
    from behaviorlm.prompts import Prompt

    candidates = ["Work", "Workout", "Go home", "Eat dinner at a restaurant", "Sleep"]
    prompts = [Prompt("role and task", "history " * k, None) for k in (1, 7, 3, 12)]
    model, tokenizer = tiny_model(seed=0)
    exact = CandidateRanker(model, tokenizer, progress=False).score(prompts, candidates)
    quantized = for_inference(tiny_model(seed=0)[0], int8=True)
    assert type(quantized.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    assert type(quantized.model.layers[0].self_attn.q_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")
    approx = CandidateRanker(quantized, tokenizer, progress=False).score(prompts, candidates)
    spread = (exact.max(axis=1) - exact.min(axis=1)).min()
    assert 0 < np.abs(approx - exact).max() < 0.02 * spread  # int8 really changes the numbers, but little
    assert (approx.argmax(axis=1) == exact.argmax(axis=1)).all()
