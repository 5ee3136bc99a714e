"""Any OpenAI-compatible chat model as a zero-shot baseline (the paper's GPT-4o row).

    OPENAI_API_KEY=... behaviorlm evaluate --data data/sim --model openai:gpt-4o --out runs/demo/gpt-4o
    behaviorlm evaluate --data data/sim --model openai:behaviorlm --base-url http://127.0.0.1:8000/v1 --out OUT

Each sample's prompt is the paper's (``prompts.render_sample``: system and user turn, the instruction format drawn
per sample as for every other model), sent with temperature 0. The answer text is mapped to a candidate: exact,
then normalised (case, whitespace and punctuation ignored), else it is "unmatched" and counts as wrong. Where the
endpoint returns log-probabilities for the first answer token (``--top-logprobs``), candidates are ranked by them:
an entry names a candidate when it matches it as an answer would, or is the start of exactly one candidate's
normalised name; the matched answer always comes first. Without them the ranking is the answer alone, so Hit@3
and Hit@5 equal Hit@1.

Requests are paced (``--requests-per-second``), retried with exponential backoff on 429, 5xx and connection
errors (a Retry-After header is obeyed), and counted against ``--max-requests``: a run that would need more
stops before sending anything, and one that runs out on retries stops with the answers so far kept. Answers are
cached on disk, keyed by a hash of the endpoint URL, model, messages and request parameters, so a rerun sends
nothing. The API key is read from an environment variable and written nowhere. A prompt the endpoint refuses
(HTTP 400: a content filter, a prompt over its context) counts as unmatched and the others are still asked; other
refusals (401, 403, 404, 422) are the setup's and stop the run, as does a 400 on every prompt.

Writes ``OUT/metrics.json`` and ``OUT/predictions.parquet`` in the schema of every other model (``unmatched``
``matched`` and ``refused`` counts per protocol, the requests sent under ``endpoint``), and ``OUT/endpoint.json`` (what was
asked, how); no ``model.json``, since nothing here can be loaded, served or exported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from behaviorlm.config import EvalConfig
from behaviorlm.data.types import PreparedData, write_json_atomic
from behaviorlm.errors import InputError
from behaviorlm.evaluation.metrics import compute_metrics
from behaviorlm.prompts import render_sample

PREFIX = "openai:"
UNMATCHED = "<unmatched>"
MAX_TOKENS = 64
"""Enough for any behavior name; a model that goes on talking is cut off (and its answer likely unmatched)."""
MAX_BACKOFF_S = 60.0
UNMATCHED_EXAMPLES = 5


@dataclass(frozen=True)
class EndpointSettings:
    model: str
    base_url: str | None = None
    """None: the client's default (``OPENAI_BASE_URL``, else OpenAI's API)."""
    api_key_env: str = "OPENAI_API_KEY"
    requests_per_second: float = 5.0
    max_requests: int | None = None
    max_retries: int = 5
    concurrency: int = 4
    top_logprobs: int = 5
    """Alternatives asked for the first answer token; 0 sends no ``logprobs`` (some endpoints refuse it)."""
    cache_dir: Path | None = None
    """None: ``$BEHAVIORLM_CACHE/chat-answers`` (default ``~/.cache/behaviorlm/chat-answers``)."""
    timeout_s: float = 60.0
    retry_base_s: float = 1.0

    def parameters(self) -> dict[str, Any]:
        extra = {"logprobs": True, "top_logprobs": self.top_logprobs} if self.top_logprobs else {}
        return {"temperature": 0, "max_tokens": MAX_TOKENS, **extra}

    def check(self) -> None:
        if not self.model:
            raise InputError("--model openai:NAME needs a model name after 'openai:'")
        if not self.requests_per_second > 0:
            raise InputError(f"--requests-per-second must be positive, got {self.requests_per_second}")
        for option, value, least in (("--max-requests", self.max_requests, 1), ("--max-retries", self.max_retries, 0),
                                     ("--concurrency", self.concurrency, 1), ("--top-logprobs", self.top_logprobs, 0)):
            if value is not None and value < least:
                raise InputError(f"{option} must be at least {least}, got {value}")
        if self.top_logprobs > 20:
            raise InputError(f"--top-logprobs must be at most 20 (the OpenAI API's limit), got {self.top_logprobs}")


@dataclass(frozen=True)
class Answer:
    text: str | None
    top_logprobs: list[tuple[str, float]] | None
    """The first answer token's alternatives (token, log-probability), as the endpoint returned them."""
    refused: str | None = None
    """The endpoint's reason when it refused this prompt (HTTP 400: a content filter, a prompt too long); the
    prediction then counts as unmatched. Never cached, so a rerun asks again."""


# --- answers to candidates ------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Case-folded, punctuation as spaces, whitespace collapsed: "**Eat  breakfast.**" -> "eat breakfast"."""
    spaced = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(spaced.casefold().split())


def match_answer(text: str | None, candidates: Sequence[str]) -> tuple[str | None, str]:
    """(candidate, how): how is "exact", "normalised" or "unmatched" (candidate None)."""
    if text is None:
        return None, "unmatched"
    if text in candidates:
        return text, "exact"
    wanted = normalise(text)
    for candidate in candidates:  # in candidate order, so two names that normalise alike resolve the same way
        if wanted and normalise(candidate) == wanted:
            return candidate, "normalised"
    return None, "unmatched"


def ranking(answer: str | None, top_logprobs: list[tuple[str, float]] | None,
            candidates: Sequence[str]) -> list[tuple[str, float | None]]:
    """Candidates ranked by the first token's probabilities, the matched answer first (see module docstring)."""
    best: dict[str, float] = {}
    for token, logprob in top_logprobs or []:
        candidate = match_answer(token, candidates)[0] or unique_prefix(token, candidates)
        if candidate is not None:
            best[candidate] = max(best.get(candidate, 0.0), math.exp(logprob))
    ranked = sorted(best.items(), key=lambda item: -item[1])
    if answer is not None:
        ranked = [(answer, best.get(answer))] + [item for item in ranked if item[0] != answer]
    return ranked


def unique_prefix(token: str, candidates: Sequence[str]) -> str | None:
    start = normalise(token)
    found = [c for c in candidates if start and normalise(c).startswith(start)]
    return found[0] if len(found) == 1 else None


# --- the client -----------------------------------------------------------------------------------------


class RateLimiter:
    """Request starts at least 1/rate seconds apart, across threads."""

    def __init__(self, per_second: float, sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / per_second
        self.sleep = sleep
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        if start > now:
            self.sleep(start - now)


class AnswerCache:
    """One small JSON file per answer, ``ROOT/ab/abcdef....json``, written atomically."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Answer | None:
        try:
            raw = json.loads(self.path(key).read_text())
            top = raw["top_logprobs"]
            return Answer(raw["text"], [(str(t), float(lp)) for t, lp in top] if top is not None else None)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged: asked again

    def put(self, key: str, answer: Answer) -> None:
        write_json_atomic({"text": answer.text, "top_logprobs": answer.top_logprobs}, self.path(key))


class ChatEndpoint:
    """Asks an OpenAI-compatible chat endpoint, through the cache, within the rate, retry and request limits."""

    def __init__(self, settings: EndpointSettings, *, http_client: Any = None,
                 sleep: Callable[[float], None] = time.sleep):
        import openai

        from behaviorlm.data.chat import cache_root

        self.settings = settings
        # The client's own retries are off: ours back off, count against the budget and obey Retry-After.
        self.client = openai.OpenAI(api_key=os.environ.get(settings.api_key_env) or "unset",
                                    base_url=settings.base_url, max_retries=0, timeout=settings.timeout_s,
                                    http_client=http_client)
        self.base_url = str(self.client.base_url)
        self.cache = AnswerCache(settings.cache_dir or cache_root() / "chat-answers")
        self.limiter = RateLimiter(settings.requests_per_second, sleep)
        self.sleep = sleep
        self.lock = threading.Lock()
        self.sent = self.retries = self.cache_hits = 0

    def key(self, messages: list[dict[str, str]]) -> str:
        identity = {"base_url": self.base_url, "model": self.settings.model, "messages": messages,
                    "parameters": self.settings.parameters()}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def answers(self, conversations: list[list[dict[str, str]]]) -> list[Answer]:
        """The answer to each conversation, in order; identical conversations are asked once."""
        keys = [self.key(c) for c in conversations]
        unique = dict(zip(keys, conversations))
        found = {k: self.cache.get(k) for k in unique}
        missing = [k for k, answer in found.items() if answer is None]
        self.cache_hits += len(unique) - len(missing)
        budget = self.settings.max_requests
        if budget is not None and len(missing) > budget - self.sent:
            raise InputError(f"{len(missing)} prompts are not cached, more than --max-requests {budget} allows; "
                             "nothing was sent (raise --max-requests, or lower --limit / --per-behavior)")
        if missing:
            with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
                futures = {pool.submit(self.ask, unique[k]): k for k in missing}
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for future in pending:
                    future.cancel()
                for future in done:
                    if future.exception() is None:
                        found[futures[future]] = future.result()
                for future in futures:  # the first failure, once those still running have finished
                    if not future.cancelled() and future.exception() is not None:
                        raise future.exception()
        return [found[k] for k in keys]

    def ask(self, messages: list[dict[str, str]]) -> Answer:
        import openai

        for attempt in range(self.settings.max_retries + 1):
            self._spend()
            self.limiter.wait()
            try:
                completion = self.client.chat.completions.create(
                    model=self.settings.model, messages=messages, **self.settings.parameters())
            except openai.APIStatusError as exc:
                if exc.status_code == 400:  # this prompt, not the setup: the others are still asked
                    return Answer(None, None, refused=exc.message)
                if exc.status_code != 429 and exc.status_code < 500:
                    raise InputError(self._refusal(exc)) from None
                failure, delay = f"{exc.status_code} {exc.message}", retry_after(exc.response)
            except openai.APIConnectionError as exc:
                failure, delay = f"{type(exc).__name__}: {exc}", None
            else:
                answer = answer_of(completion)
                self.cache.put(self.key(messages), answer)
                return answer
            if attempt == self.settings.max_retries:
                raise InputError(f"{self.base_url} failed {attempt + 1} times in a row (last: {failure}); the answers "
                                 "received so far are cached")
            with self.lock:
                self.retries += 1
            self.sleep(delay if delay is not None else min(MAX_BACKOFF_S, self.settings.retry_base_s * 2 ** attempt))
        raise AssertionError("unreachable")

    def _spend(self) -> None:
        with self.lock:
            if self.settings.max_requests is not None and self.sent >= self.settings.max_requests:
                raise InputError(f"the request budget (--max-requests {self.settings.max_requests}) ran out on "
                                 "retries; the answers received so far are cached, so a rerun sends only the rest")
            self.sent += 1

    def _refusal(self, exc) -> str:
        hint = ""
        if exc.status_code in (401, 403):
            hint = f" (the API key is read from ${self.settings.api_key_env})"
        elif exc.status_code == 404:
            hint = f" (is {self.settings.model!r} a model that {self.base_url} serves?)"
        return f"{self.base_url} refused the request: {exc.status_code} {exc.message}{hint}"


def retry_after(response) -> float | None:
    """Seconds from a Retry-After header given in seconds (capped), else None."""
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def answer_of(completion) -> Answer:
    """The first choice's text and, when present, its first token's top log-probabilities."""
    if not completion.choices:
        return Answer(None, None)
    choice = completion.choices[0]
    content = choice.logprobs.content if choice.logprobs is not None else None
    top = None
    if content:
        first = content[0]
        top = [(t.token, float(t.logprob)) for t in first.top_logprobs or []] or [(first.token, float(first.logprob))]
    return Answer(choice.message.content, top)


# --- evaluation -----------------------------------------------------------------------------------------


def evaluate_endpoint(data: PreparedData, out_dir: str | Path, name: str, settings: EndpointSettings,
                      eval_cfg: EvalConfig | None = None, prompt_seed: int = 0, *, endpoint: ChatEndpoint | None = None,
                      ) -> dict:
    """Score the endpoint on both protocols' samples; write metrics.json, predictions.parquet, endpoint.json."""
    from behaviorlm.evaluation.evaluate import PROTOCOLS, TOP_K, write_predictions

    settings.check()
    eval_cfg = eval_cfg or EvalConfig()
    endpoint = endpoint or ChatEndpoint(settings)
    candidates, groups = data.candidates, data.stats.groups
    plan = {p: data.evaluation_samples(split, eval_cfg.limit, eval_cfg.per_behavior) for p, split in PROTOCOLS.items()}
    everything = [s for samples in plan.values() for s in samples]
    start = time.perf_counter()
    answers = endpoint.answers([render_sample(s, candidates, prompt_seed, with_answer=False).messages()
                                for s in everything])
    seconds = time.perf_counter() - start
    refused = [a.refused for a in answers if a.refused]
    if refused and len(refused) == len(answers):
        raise InputError(f"{endpoint.base_url} refused every prompt (first: {refused[0]}); check --model and the "
                         "endpoint options")
    metrics: dict = {"model": name}
    rows: list[dict] = []
    offset = 0
    for protocol, samples in plan.items():
        split = PROTOCOLS[protocol]
        mine = answers[offset:offset + len(samples)]
        offset += len(samples)
        matched = [match_answer(a.text, candidates) for a in mine]
        ranked = [ranking(c, a.top_logprobs, candidates)[:TOP_K] for (c, _), a in zip(matched, mine)]
        result = compute_metrics([s.label for s in samples], [c or UNMATCHED for c, _ in matched], groups,
                                 ranked=[[b for b, _ in r] for r in ranked], users=[s.user_id for s in samples],
                                 by_behavior=split == "balanced_test")
        result["unmatched"] = sum(how == "unmatched" for _, how in matched)
        result["refused"] = sum(a.refused is not None for a in mine)
        result["matched"] = {how: sum(h == how for _, h in matched) for how in ("exact", "normalised")}
        result["unmatched_examples"] = list(dict.fromkeys(
            (a.refused or a.text or "")[:100] for (_, how), a in zip(matched, mine)
            if how == "unmatched"))[:UNMATCHED_EXAMPLES]
        metrics[protocol] = result
        rows += [{"sample_id": s.sample_id, "user_id": s.user_id, "split": split, "label": s.label, "pred": c,
                  "top": [{"behavior": b, "probability": p} for b, p in r]}
                 for s, (c, _), r in zip(samples, matched, ranked)]
    metrics.update(seconds=seconds, samples_per_second=len(everything) / seconds if seconds else None, mode="chat",
                   limit=eval_cfg.limit, per_behavior=eval_cfg.per_behavior, candidates=len(candidates),
                   prompt_seed=prompt_seed, prompt_format="paper",
                   endpoint={"base_url": endpoint.base_url, "model": settings.model, "requests_sent": endpoint.sent,
                             "retries": endpoint.retries, "cache_hits": endpoint.cache_hits})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(rows, out_dir)
    info = {**asdict(settings), "base_url": endpoint.base_url, "parameters": settings.parameters(),
            "cache_dir": str(endpoint.cache.root), "prompt_seed": prompt_seed, "prompt_format": "paper"}
    write_json_atomic(info, out_dir / "endpoint.json")
    write_json_atomic(metrics, out_dir / "metrics.json")
    return metrics


def endpoint_model(name: str | None) -> str | None:
    """``NAME`` of ``--model openai:NAME``; None for any other model."""
    return name[len(PREFIX):] if name is not None and name.startswith(PREFIX) else None



# --- command line (options of `behaviorlm evaluate`) ----------------------------------------------------

ENDPOINT_OPTIONS = ("base_url", "api_key_env", "requests_per_second", "max_requests", "max_retries", "concurrency",
                    "top_logprobs", "cache")
NOT_FOR_ENDPOINTS = ("run", "events", "adapter", "format", "mode", "batch_size", "device", "int8", "trust_remote_code")


def add_endpoint_options(parser) -> None:
    group = parser.add_argument_group("an OpenAI-compatible chat model (--model openai:NAME)")
    defaults = EndpointSettings(model="")
    group.add_argument("--base-url", help="the endpoint, e.g. http://127.0.0.1:8000/v1 (`behaviorlm serve`); "
                       "default: $OPENAI_BASE_URL, else OpenAI's API")
    group.add_argument("--api-key-env", metavar="NAME", help=f"environment variable holding the API key "
                       f"(default {defaults.api_key_env}); the key is never written anywhere")
    group.add_argument("--requests-per-second", type=float, help=f"most requests started per second "
                       f"(default {defaults.requests_per_second:g})")
    group.add_argument("--max-requests", type=int, help="most requests to send, retries included; a run that needs "
                       "more than the cache holds stops before sending any (exit 2). Default: no limit")
    group.add_argument("--max-retries", type=int, help=f"retries of a request after 429, 5xx or a connection "
                       f"error, with exponential backoff from {defaults.retry_base_s:g} s (default "
                       f"{defaults.max_retries})")
    group.add_argument("--concurrency", type=int, help=f"requests in flight at once (default {defaults.concurrency})")
    group.add_argument("--top-logprobs", type=int, help=f"log-probabilities of the first answer token's N best "
                       f"alternatives, used to rank candidates; 0 asks for none (default {defaults.top_logprobs})")
    group.add_argument("--cache", help="folder of cached answers (default $BEHAVIORLM_CACHE/chat-answers, "
                       "i.e. ~/.cache/behaviorlm/chat-answers)")


def check_no_endpoint_options(args) -> None:
    """Endpoint options without ``--model openai:NAME`` are a mistake worth naming."""
    for option in ENDPOINT_OPTIONS:
        if getattr(args, option, None) is not None:
            raise InputError(f"--{option.replace('_', '-')} goes with --model openai:NAME (an OpenAI-compatible "
                             "chat model)")


def run(args) -> int:
    """``behaviorlm evaluate --model openai:NAME ...``."""
    from behaviorlm.errors import check_destination
    from behaviorlm.evaluation.evaluate import PROTOCOLS, evaluation_config, metrics_line

    for option in NOT_FOR_ENDPOINTS:
        if getattr(args, option, None):
            raise InputError(f"--{option.replace('_', '-')} does not apply to an endpoint model (--model openai:NAME)")
    if not args.data:
        raise InputError("--data DIR (a prepared dataset) is needed")
    check_destination(args.out, directory=True)
    config = evaluation_config(args)
    given = {name: getattr(args, option) for name, option in (
        ("base_url", "base_url"), ("api_key_env", "api_key_env"), ("requests_per_second", "requests_per_second"),
        ("max_requests", "max_requests"), ("max_retries", "max_retries"), ("concurrency", "concurrency"),
        ("top_logprobs", "top_logprobs"), ("cache_dir", "cache")) if getattr(args, option) is not None}
    if "cache_dir" in given:
        given["cache_dir"] = Path(given["cache_dir"])
    settings = EndpointSettings(model=endpoint_model(args.model) or "", **given)
    settings.check()
    data = PreparedData(args.data)
    out = Path(args.out)
    metrics = evaluate_endpoint(data, out, args.name or out.resolve().name, settings, config.eval,
                                prompt_seed=args.prompt_seed)
    for protocol in PROTOCOLS:
        m = metrics[protocol]
        print(f"{protocol:14s} {metrics_line(m)}  unmatched {m['unmatched']} (refused {m['refused']})")
    sent = metrics["endpoint"]
    print(f"{sent['requests_sent']} requests sent ({sent['retries']} retries), {sent['cache_hits']} answers from the "
          f"cache; wrote {out / 'metrics.json'}")
    return 0
