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
"""

from __future__ import annotations

import os
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
        """Text pieces in order, each flagged True when it is an assistant answer (the trained/scored tokens)."""
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
            out.append((answer, True))
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
                out.append((("\n" if out and out[-1][1] else "") + message["content"], False))
            else:
                out.append((" " + message["content"] + eos, True))
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

    ``batch_size`` prompts are encoded together; ``max_block`` bounds prompts x candidate tokens in one pass, which
    bounds the logits held at once (more candidates run in several passes over the same cached prompts).
    """

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, batch_size: int = 8, max_block: int = 2048,
                 progress: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.format = ChatFormat(tokenizer)
        self.batch_size = max(1, batch_size)
        self.max_block = max(1, max_block)
        self.progress = progress
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
        """Indices in batches of similar length (longest first), so padding stays small."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return tqdm(batches, desc=desc, unit="batch", disable=not self.progress or len(batches) < 2, leave=False)

    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> np.ndarray:
        """(n_prompts, n_candidates) log-probabilities of each candidate's full answer (see module docstring)."""
        cand = [self.format.answer_ids(c) for c in candidates]
        encoded = [self.format.prompt_ids(p) for p in prompts]
        out = np.empty((len(prompts), len(candidates)), dtype=np.float64)
        was_training = self.model.training
        self.model.eval()
        try:
            shared = self._encode_shared_prefix(encoded)
            cut = shared.length if shared else 0
            for batch in self._batches([len(e) for e in encoded], "scoring"):
                out[batch] = self._score_batch([encoded[i][cut:] for i in batch], cand, shared)
        finally:
            self.model.train(was_training)
        return out

    def _encode_shared_prefix(self, encoded: list[list[int]]) -> SharedPrefix | None:
        """The cache of the longest token prefix common to all prompts, each keeping at least one token of its own
        (its last logit scores the candidates' first tokens). None when there is nothing worth sharing, or when the
        model's cache is not a plain one (sliding-window layers keep no full prefix)."""
        length = shared_prefix_length(encoded)
        if length == 0:
            return None
        cache = DynamicCache(config=self.model.config)
        self.model(input_ids=torch.tensor([encoded[0][:length]], device=self.device), cache=cache, use_cache=True,
                   logits_to_keep=1)
        if not all(type(layer) is DynamicLayer for layer in cache.layers):
            return None
        return SharedPrefix(length, [(layer.keys, layer.values) for layer in cache.layers])

    def _score_batch(self, prompts: list[list[int]], cand: list[list[int]],
                     shared: SharedPrefix | None = None) -> np.ndarray:
        """Scores of the candidates after each prompt (only the part after ``shared``, whose cache is given)."""
        device = self.device
        n_prompts = len(prompts)
        cut = shared.length if shared else 0
        cache = shared.expanded(n_prompts, self.model.config) if shared else DynamicCache(config=self.model.config)
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        width = int(lengths.max())
        ids = torch.full((n_prompts, width), self._pad_id(), dtype=torch.long, device=device)
        mask = torch.zeros((n_prompts, cut + width), dtype=torch.bool, device=device)
        mask[:, :cut] = True
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p, device=device)
            mask[i, cut: cut + len(p)] = True
        # Right padding: no padded query attends to nothing, and each prompt's last logit sits at length - 1.
        last = torch.zeros((n_prompts, width), dtype=torch.bool, device=device)
        last[torch.arange(n_prompts, device=device), lengths - 1] = True
        prefix = self.model(input_ids=ids, attention_mask=mask.long(), cache=cache, use_cache=True,
                            logits_to_keep=last)
        first = torch.log_softmax(prefix.logits.float(), dim=-1)  # (n_prompts, vocab): every candidate's 1st token
        scores = first[:, torch.tensor([c[0] for c in cand], device=device)].clone()
        budget = max(1, self.max_block // n_prompts)
        key = (tuple(map(tuple, cand)), budget)
        if key not in self._blocks:
            self._blocks = {key: candidate_blocks(cand, budget)}  # one candidate set at a time, as a rule
        for block in self._blocks[key]:
            scores.index_add_(1, block.edge_cand.to(device), self._block(prefix.cache, mask, cut + lengths, block))
        return scores.cpu().numpy()

    def _block(self, cache, prompt_mask: torch.Tensor, lengths: torch.Tensor, block: TrieBlock) -> torch.Tensor:
        """(n_prompts, edges) log-probs of the block's trie edges, the trie nodes run after the cached prompts."""
        device = prompt_mask.device
        n_prompts, width = prompt_mask.shape
        size = block.ids.numel()
        allowed = torch.cat([prompt_mask[:, None, :].expand(n_prompts, size, width),
                             block.allowed.to(device).expand(n_prompts, size, size)], dim=2)[:, None]
        attention = allowed
        if self._additive_mask:
            dtype = next(self.model.parameters()).dtype
            attention = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        out = self.model(input_ids=block.ids.to(device).expand(n_prompts, size), attention_mask=attention,
                         position_ids=lengths[:, None] + block.offset.to(device)[None, :], cache=cache,
                         use_cache=True)
        cache.crop(-size)  # back to the prompts alone for the next block
        logits = out.logits.float()  # (n_prompts, nodes, vocab): every node has a child to predict
        node, token = block.edge_node.to(device), block.edge_token.to(device)
        return logits[:, node, token] - torch.logsumexp(logits, dim=-1)[:, node]

    def rank(self, prompts: Sequence[Prompt], candidates: Sequence[str], k: int | None = None
             ) -> list[list[tuple[str, float]]]:
        """Per prompt, candidates sorted by probability (softmax over the candidate scores), the top ``k``."""
        scores = self.score(prompts, candidates)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[(candidates[j], float(probs[i, j])) for j in row] for i, row in enumerate(order)]

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
