"""Predict the next behavior by ranking the candidate set under the language model.

Score of a candidate = log P(answer tokens + end-of-turn token | prompt): the sum of the log-probabilities of the
candidate's answer tokens *and* of the token that closes the assistant turn, i.e. the probability that the model
answers exactly this candidate and stops. No length normalization is applied: the end-of-turn term already stops a
short candidate that is only the prefix of a longer one ("Work" vs "Workout") from winning by default.
``rank`` turns the scores of one prompt into probabilities with a softmax over the candidate set.

Speed: each prompt is encoded once; the candidates' tokens are then run as one short sequence after its cached
key/values: a prefix tree (shared answer prefixes run once, the final end-of-turn tokens are only predicted, never
fed), each token attending to the prompt and to its own ancestors only (a tree attention mask with per-token position
ids). The prompt's cache is never copied per candidate, and the language-model head runs only where a token is
scored. The token prefix that all prompts of a call share (the chat template's system turn and the start of the
instruction) is encoded once per call and its cache reused by every batch. The same chat format
(``ChatFormat``) is used for training, so a tuned model is scored on exactly the tokens it was trained on.

Packed conversations (``score_segments``): a prompt is the special case of a sequence with one target at its end.
A packed conversation (``prompts.render_segment``) has many targets; it is encoded once, with the true behaviors as
history, and the candidate tree of every target runs after it in the same pass, each target's tree attending to the
tokens before its own answer only. A target's scores are exactly those of the conversation cut at that target.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from behaviorlm.prompts import Prompt

Message = dict[str, str]


@dataclass
class ChatFormat:
    """How a conversation becomes tokens, and which tokens are the assistant's answers.

    With a chat template the conversation is rendered by the template; the answer of an assistant turn is the text
    the template adds for it after the generation prompt, cut after the end-of-turn token (so the template's trailing
    newline is not learned or scored). Without a template: ``system\\nuser answer<eos>\\n...`` (``Prompt.plain_text``).
    Segments are tokenized one by one, so a prompt's tokens never depend on the answer that follows.
    """

    tokenizer: PreTrainedTokenizerBase
    _answers: dict[str, list[int]] = field(default_factory=dict, repr=False)

    @property
    def templated(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def _template(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation_prompt
        )

    def _answer_text(self, rendered_turn: str) -> str:
        eos = self.tokenizer.eos_token
        if eos and eos in rendered_turn:
            return rendered_turn[: rendered_turn.index(eos) + len(eos)]
        return rendered_turn

    def segments(self, messages: Sequence[Message], generation_prompt: bool = False) -> list[tuple[str, bool]]:
        """Text pieces in order, each flagged True when it is an assistant answer to train on or score (a target).

        An assistant turn with ``"target": False`` (history in a packed conversation) is a piece of its own, flagged
        False: its tokens are the same as if it were a target."""
        if not self.templated:
            return self._plain_segments(messages, generation_prompt)
        full = self._template(messages, generation_prompt)
        out: list[tuple[str, bool]] = []
        pos = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = self._template(messages[:i], True)
            answer = self._answer_text(self._template(messages[: i + 1], False)[len(prefix):])
            if not full.startswith(prefix) or full[len(prefix): len(prefix) + len(answer)] != answer:
                raise ValueError("the model's chat template does not render a conversation as prompt + answer turns")
            out.append((full[pos: len(prefix)], False))
            out.append((answer, message.get("target", True)))
            pos = len(prefix) + len(answer)
        if pos < len(full):
            out.append((full[pos:], False))
        return [s for s in out if s[0]]

    def _plain_segments(self, messages: Sequence[Message], generation_prompt: bool) -> list[tuple[str, bool]]:
        eos = self.tokenizer.eos_token or ""
        out: list[tuple[str, bool]] = []
        for message in messages:
            if message["role"] == "system":
                out.append((message["content"] + "\n", False))
            elif message["role"] == "user":
                after_answer = bool(out) and messages[len(out) - 1]["role"] == "assistant"
                out.append((("\n" if after_answer else "") + message["content"], False))
            else:
                out.append((" " + message["content"] + eos, message.get("target", True)))
        return out

    def encode(self, messages: Sequence[Message], generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
        """Token ids and, per token, whether it belongs to an assistant answer."""
        ids: list[int] = []
        answer: list[bool] = []
        for i, (text, is_answer) in enumerate(self.segments(messages, generation_prompt)):
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if i == 0:
                piece = self._with_bos(text, piece)
            ids += piece
            answer += [is_answer] * len(piece)
        return ids, answer

    def _with_bos(self, text: str, ids: list[int]) -> list[int]:
        """Add the BOS token where the tokenizer would (Llama-style) and the template has not already."""
        bos = self.tokenizer.bos_token
        if bos is None or text.startswith(bos):
            return ids
        default = self.tokenizer("x")["input_ids"]
        if default and default[0] == self.tokenizer.bos_token_id:
            return [self.tokenizer.bos_token_id] + ids
        return ids

    def encode_targets(self, messages: Sequence[Message]) -> Targets:
        """Token ids of a conversation and where each of its target answers starts."""
        ids, is_target = self.encode(messages)
        starts = [i for i, flag in enumerate(is_target) if flag and (i == 0 or not is_target[i - 1])]
        return Targets(ids, starts)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        return self.encode(prompt.messages(with_answer=False), generation_prompt=self.templated)[0]

    def answer_ids(self, answer: str) -> list[int]:
        """Tokens of an answer turn (answer text + end-of-turn), the same for every prompt."""
        if answer not in self._answers:
            probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                     {"role": "assistant", "content": answer}]
            ids, flags = self.encode(probe)
            self._answers[answer] = [t for t, f in zip(ids, flags) if f]
        return self._answers[answer]


class CandidateRanker:
    """Scores and ranks a fixed candidate set for many prompts (see module docstring).

    ``batch_size`` sequences (prompts or packed conversations) are encoded together, at most ``max_batch_tokens``
    padded tokens unless one sequence is longer; ``max_block`` bounds the candidate-tree tokens run in one pass over
    the cached sequences (all targets together), which bounds the logits held at once. ``tree_seconds`` adds up the
    wall time of the candidate-tree passes, the part of scoring the prompt format cannot shorten.
    """

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, batch_size: int = 8, max_block: int = 2048,
                 progress: bool = True, max_batch_tokens: int = 8192):
        self.model = model
        self.tokenizer = tokenizer
        self.format = ChatFormat(tokenizer)
        self.batch_size = max(1, batch_size)
        self.max_block = max(1, max_block)
        self.max_batch_tokens = max(1, max_batch_tokens)
        self.progress = progress
        self.tree_seconds = 0.0
        self._blocks: dict[tuple, list[TrieBlock]] = {}
        implementation = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
        if "flash" in implementation:
            raise ValueError(f"candidate ranking packs candidates with a custom attention mask, which "
                             f"{implementation} does not take; load the model with attn_implementation='sdpa'")
        self._additive_mask = implementation == "eager"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _batches(self, lengths: list[int], desc: str):
        """Indices in batches of similar length (longest first), so padding stays small: at most ``batch_size``
        sequences and, past the first, at most ``max_batch_tokens`` padded tokens (long packed segments)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < self.batch_size and \
                    (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= self.max_batch_tokens:
                batches[-1].append(i)
            else:
                batches.append([i])
        return tqdm(batches, desc=desc, unit="batch", disable=not self.progress or len(batches) < 2, leave=False)

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> np.ndarray:
        """(n_prompts, n_candidates) log-probabilities of each candidate's full answer (see module docstring)."""
        encoded = [Targets(ids, [len(ids)]) for ids in (self.format.prompt_ids(p) for p in prompts)]
        scores = self.score_encoded(encoded, candidates)
        return np.concatenate(scores) if scores else np.empty((0, len(candidates)))

    def score_segments(self, conversations: Sequence[Sequence[Message]], candidates: Sequence[str]
                       ) -> list[np.ndarray]:
        """Per conversation, (n_targets, n_candidates) scores at its target assistant turns (those without
        ``"target": False``), each given the conversation before that turn: one forward pass per conversation."""
        return self.score_encoded([self.format.encode_targets(m) for m in conversations], candidates)

    @torch.inference_mode()
    def score_encoded(self, encoded: Sequence[Targets], candidates: Sequence[str]) -> list[np.ndarray]:
        cand = [self.format.answer_ids(c) for c in candidates]
        out = [np.empty((len(e.starts), len(cand)), dtype=np.float64) for e in encoded]
        todo = [i for i, e in enumerate(encoded) if e.starts]
        if not todo:
            return out
        visible = [encoded[i].ids[: encoded[i].starts[-1]] for i in todo]  # nothing after the last target is needed
        was_training = self.model.training
        self.model.eval()
        try:
            shared = self._encode_shared_prefix(visible, min(encoded[i].starts[0] for i in todo) - 1)
            cut = shared.length if shared else 0
            for batch in self._batches([len(v) for v in visible], "scoring"):
                rows = [visible[b][cut:] for b in batch]
                starts = [[s - cut for s in encoded[todo[b]].starts] for b in batch]
                for b, scores in zip(batch, self._score_rows(rows, starts, cand, shared)):
                    out[todo[b]][:] = scores
        finally:
            self.model.train(was_training)
        return out

    def _encode_shared_prefix(self, encoded: list[list[int]], limit: int | None = None) -> SharedPrefix | None:
        """The cache of the longest token prefix common to all sequences, at most ``limit`` tokens (every target
        keeps the token whose logit scores the candidates' first tokens). None when there is nothing worth
        sharing, or when the model's cache is not a plain one (sliding-window layers keep no full prefix)."""
        length = shared_prefix_length(encoded)
        length = length if limit is None else min(length, limit)
        if length < 2:
            return None
        cache = DynamicCache(config=self.model.config)
        self.model(input_ids=torch.tensor([encoded[0][:length]], device=self.device), cache=cache, use_cache=True,
                   logits_to_keep=1)
        if not all(type(layer) is DynamicLayer for layer in cache.layers):
            return None
        return SharedPrefix(length, [(layer.keys, layer.values) for layer in cache.layers])

    def _score_rows(self, rows: list[list[int]], starts: list[list[int]], cand: list[list[int]],
                    shared: SharedPrefix | None = None) -> list[np.ndarray]:
        """Per row, the candidates' scores at each target start (token positions counted after ``shared``)."""
        device = self.device
        n_rows = len(rows)
        cut = shared.length if shared else 0
        cache = shared.expanded(n_rows, self.model.config) if shared else DynamicCache(config=self.model.config)
        width = max(len(r) for r in rows)
        ids = torch.full((n_rows, width), self._pad_id(), dtype=torch.long, device=device)
        mask = torch.zeros((n_rows, cut + width), dtype=torch.bool, device=device)
        mask[:, :cut] = True
        keep = torch.zeros((n_rows, width), dtype=torch.bool, device=device)
        for i, (row, row_starts) in enumerate(zip(rows, starts)):
            ids[i, : len(row)] = torch.tensor(row, device=device)
            mask[i, cut: cut + len(row)] = True
            keep[i, torch.tensor(row_starts, device=device) - 1] = True
        # Right padding: no padded query attends to nothing; the kept logits come out flat, row by row, in order.
        prefix = self.model(input_ids=ids, attention_mask=mask.long(), cache=cache, use_cache=True,
                            logits_to_keep=keep)
        first = torch.log_softmax(prefix.logits.float(), dim=-1)  # (targets, vocab): every candidate's 1st token
        scores = first[:, torch.tensor([c[0] for c in cand], device=device)].clone()

        counts = [len(s) for s in starts]
        n_targets = max(counts)
        at = torch.ones((n_rows, n_targets), dtype=torch.long)  # padding slots see token 0 only
        index = torch.full((n_rows, n_targets), -1, dtype=torch.long)  # row of `scores` of each target
        for i, row_starts in enumerate(starts):
            at[i, : counts[i]] = torch.tensor(row_starts) + cut
            index[i, : counts[i]] = torch.arange(counts[i]) + sum(counts[:i])
        at, index = at.to(device), index.to(device)
        budget = max(1, self.max_block // n_rows)
        key = (tuple(map(tuple, cand)), budget)
        if key not in self._blocks:
            self._blocks = {key: candidate_blocks(cand, budget)}  # one candidate set at a time, as a rule
        rows_cache = [(layer.keys, layer.values) for layer in prefix.cache.layers]
        started = time.perf_counter()
        for block in self._blocks[key]:
            size = block.ids.numel()
            # Every query of a pass attends to all keys of the pass, masked or not: few targets a pass keep the
            # other targets' trees (masked) below about half the visible row.
            per_pass = max(1, min(budget // size, (cut + width) // (2 * size)))
            for first_target in range(0, n_targets, per_pass):
                part = slice(first_target, first_target + per_pass)
                visible = int(at[:, part].max())  # keys after the last answer start of the pass are never seen
                cache = prefix_cache(rows_cache, visible, self.model.config)
                edges = self._block(cache, at[:, part], visible, block)  # (rows, targets, edges)
                valid = index[:, part] >= 0
                by_candidate = torch.zeros((int(valid.sum()), len(cand)), dtype=scores.dtype, device=device)
                by_candidate.index_add_(1, block.edge_cand.to(device), edges[valid])
                scores.index_add_(0, index[:, part][valid], by_candidate)
        self.tree_seconds += time.perf_counter() - started
        return [t.numpy() for t in torch.split(scores.cpu(), counts)]

    def _block(self, cache, at: torch.Tensor, width: int, block: TrieBlock) -> torch.Tensor:
        """(rows, targets, edges) log-probs of the block's trie edges, run after the cached rows: target j of a row
        sees the row's tokens before ``at[row, j]`` (where its answer starts) and its own trie ancestors."""
        device = at.device
        n_rows, n_targets = at.shape
        size = block.ids.numel()
        queries = n_targets * size
        sees_row = torch.arange(width, device=device)[None, None, :] < at[:, :, None]  # (rows, targets, width)
        sees_row = sees_row[:, :, None, :].expand(n_rows, n_targets, size, width).reshape(n_rows, queries, width)
        sees_trie = torch.block_diag(*[block.allowed.to(device)] * n_targets)
        allowed = torch.cat([sees_row, sees_trie.expand(n_rows, queries, queries)], dim=2)[:, None]
        attention = allowed
        if self._additive_mask:
            dtype = next(self.model.parameters()).dtype
            attention = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        positions = (at[:, :, None] + block.offset.to(device)[None, None, :]).reshape(n_rows, queries)
        out = self.model(input_ids=block.ids.to(device).repeat(n_targets).expand(n_rows, queries),
                         attention_mask=attention, position_ids=positions, cache=cache, use_cache=True)
        logits = out.logits.float().view(n_rows, n_targets, size, -1)  # every node has a child to predict
        node, token = block.edge_node.to(device), block.edge_token.to(device)
        return logits[:, :, node, token] - torch.logsumexp(logits, dim=-1)[:, :, node]

    def rank(self, prompts: Sequence[Prompt], candidates: Sequence[str], k: int | None = None
             ) -> list[list[tuple[str, float]]]:
        """Per prompt, candidates sorted by probability (softmax over the candidate scores), the top ``k``."""
        return ranked(self.score(prompts, candidates), candidates, k)

    def rank_segments(self, conversations: Sequence[Sequence[Message]], candidates: Sequence[str],
                      k: int | None = None) -> list[list[list[tuple[str, float]]]]:
        """Per conversation, per target turn, the ranked candidates (see ``score_segments`` and ``rank``)."""
        return [ranked(scores, candidates, k) for scores in self.score_segments(conversations, candidates)]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], candidates: Sequence[str], max_new_tokens: int | None = None
                 ) -> list[str | None]:
        """Greedy decoding, the text mapped to a candidate (``match_candidate``); None when nothing matches."""
        cand_lengths = [len(self.format.answer_ids(c)) for c in candidates]
        max_new_tokens = max_new_tokens or max(cand_lengths) + 2
        encoded = [self.format.prompt_ids(p) for p in prompts]
        eos = [t for t in {self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)}
               if t is not None]
        eos = sorted({e for t in eos for e in (t if isinstance(t, list) else [t])})
        out: list[str | None] = [None] * len(prompts)
        device = self.device
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in self._batches([len(e) for e in encoded], "generating"):
                width = max(len(encoded[i]) for i in batch)
                ids = torch.full((len(batch), width), self._pad_id(), dtype=torch.long, device=device)
                mask = torch.zeros_like(ids)
                for r, i in enumerate(batch):  # left padding: generation appends at the right end
                    ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i], device=device)
                    mask[r, width - len(encoded[i]):] = 1
                generated = self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                    temperature=None, top_p=None, top_k=None, eos_token_id=eos, pad_token_id=self._pad_id(),
                )
                texts = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
                for r, i in enumerate(batch):
                    out[i] = match_candidate(texts[r], candidates)
        finally:
            self.model.train(was_training)
        return out


def ranked(scores: np.ndarray, candidates: Sequence[str], k: int | None = None) -> list[list[tuple[str, float]]]:
    """Per row of scores, candidates sorted by probability (softmax over the candidate set), the top ``k``."""
    if not len(scores):
        return []
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[(candidates[j], float(probs[i, j])) for j in row] for i, row in enumerate(order)]


def shared_prefix_length(encoded: Sequence[Sequence[int]]) -> int:
    """Tokens all prompts start with, each prompt keeping at least one of its own; 0 when under two are shared."""
    if len(encoded) < 2:
        return 0
    length = min(len(os.path.commonprefix(list(encoded))), min(len(e) for e in encoded) - 1)
    return length if length >= 2 else 0


def match_candidate(text: str, candidates: Sequence[str]) -> str | None:
    """Map generated text to a candidate: exact, then case-insensitive, then the longest candidate the text starts
    with (the model went on talking). None when nothing matches: the prediction counts as wrong."""
    text = text.strip().strip("\"'`").strip()
    trimmed = text.rstrip(".!")
    for guess in (text, trimmed):
        if guess in candidates:
            return guess
    lowered = {c.lower(): c for c in candidates}
    for guess in (text.lower(), trimmed.lower()):
        if guess in lowered:
            return lowered[guess]
    prefixes = [c for c in candidates if c and text.lower().startswith(c.lower())]
    return max(prefixes, key=len) if prefixes else None


@dataclass(frozen=True)
class Targets:
    """A token sequence and the positions where the answers to score start (a prompt: one, at its end)."""

    ids: list[int]
    starts: list[int]


@dataclass(frozen=True)
class SharedPrefix:
    """The key/value cache of a token prefix common to every prompt of a call, one entry per layer."""

    length: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    def expanded(self, n_prompts: int, config) -> DynamicCache:
        """A cache holding the prefix for ``n_prompts`` rows (a copy per batch: tens of tokens, a few MB)."""
        cache = DynamicCache(config=config)
        for index, (keys, values) in enumerate(self.layers):
            cache.update(keys.expand(n_prompts, -1, -1, -1), values.expand(n_prompts, -1, -1, -1), index)
        return cache


def prefix_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], length: int, config) -> DynamicCache:
    """A new cache holding the first ``length`` positions of ``layers`` (keys and values of each layer)."""
    cache = DynamicCache(config=config)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys[:, :, :length], values[:, :, :length], index)
    return cache


@dataclass(frozen=True)
class TrieBlock:
    """Candidates sharing answer prefixes, as trie nodes to run after a prompt.

    A node is a proper prefix of some candidate's tokens; it is fed its last token at position ``offset`` after the
    prompt and attends to its ancestors only (``allowed``), so shared prefixes ("Watching video" / "Watching video
    clip") run once and no candidate sees another. An edge (node, token, candidate) is one scored token.
    """

    ids: torch.Tensor
    offset: torch.Tensor
    allowed: torch.Tensor
    edge_node: torch.Tensor
    edge_token: torch.Tensor
    edge_cand: torch.Tensor


def candidate_blocks(cand: list[list[int]], max_nodes: int) -> list[TrieBlock]:
    """The candidates' trie split into blocks of about ``max_nodes`` nodes (whole first-token subtrees)."""
    subtrees: dict[int, list[int]] = {}
    for j, c in enumerate(cand):
        if len(c) > 1:
            subtrees.setdefault(c[0], []).append(j)
    groups: list[list[int]] = []
    used = max_nodes
    for members in subtrees.values():
        nodes = len({tuple(cand[j][:k]) for j in members for k in range(1, len(cand[j]))})
        if used + nodes > max_nodes:
            groups.append([])
            used = 0
        groups[-1] += members
        used += nodes
    return [_trie_block(cand, members) for members in groups]


def _trie_block(cand: list[list[int]], members: list[int]) -> TrieBlock:
    index: dict[tuple[int, ...], int] = {}
    for j in members:
        for k in range(1, len(cand[j])):
            index.setdefault(tuple(cand[j][:k]), len(index))
    nodes = list(index)
    allowed = torch.zeros((len(nodes), len(nodes)), dtype=torch.bool)
    for i, prefix in enumerate(nodes):
        allowed[i, [index[prefix[:k]] for k in range(1, len(prefix) + 1)]] = True
    edges = [(index[tuple(cand[j][:k])], cand[j][k], j) for j in members for k in range(1, len(cand[j]))]
    node, token, owner = zip(*edges)
    return TrieBlock(torch.tensor([n[-1] for n in nodes]), torch.tensor([len(n) - 1 for n in nodes]), allowed,
                     torch.tensor(node), torch.tensor(token), torch.tensor(owner))
