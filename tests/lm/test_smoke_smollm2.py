"""The real embedded SmolLM2-135M-Instruct: loads from the package and ranks sensibly (slow: run with -m smoke)."""

from __future__ import annotations

import pytest

from behaviorlm.prompts import Prompt


@pytest.mark.smoke
def test_smollm2_loads_and_ranks_a_prompt():
    from behaviorlm.lm.loading import load_model
    from behaviorlm.lm.ranking import CandidateRanker

    model, tokenizer = load_model("smollm2-135m")
    assert model.config.num_hidden_layers == 30 and tokenizer.chat_template
    prompt = Prompt("You are a helpful assistant.", "What is the capital of France? Answer with one word.", None)
    ranked = CandidateRanker(model, tokenizer, progress=False).rank([prompt], ["London", "Paris", "Banana"])[0]
    assert ranked[0][0] == "Paris"
    assert sum(p for _, p in ranked) == pytest.approx(1.0)
