"""The OpenAI chat API on the prediction server: ``POST /v1/chat/completions``, ``GET /v1/models``.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    reply = client.chat.completions.create(model="behaviorlm", messages=[{"role": "user", "content": PROMPT}])
    reply.choices[0].message.content                 # "Commute"
    reply.choices[0].model_extra["behaviorlm"]       # {"top": [{"behavior": "Commute", "probability": 0.41}, ...]}

The last message must be the user's, and hold either

- a behavior prompt as ``behaviorlm.prompts`` renders it (the paper's three instruction formats or the packed
  format's first turn): its history, next-event context and candidate set are read back (``prompts.parse``) and
  rendered again in the served model's own format; a candidate set that lists only some of the model's behaviors
  restricts the answer to them (probabilities renormalised over them); or
- a JSON object in ``POST /predict``'s shape: ``{"events": [...], "next": {...}, "k": 5}``.

Other messages (a system prompt, earlier turns) are ignored: the model reads its own system turn. The answer is the
most probable behavior, so sampling parameters (temperature, top_p, seed, max_tokens, ...) are accepted and
ignored; ``n`` must be 1. ``logprobs: true`` returns the answer and ``top_logprobs`` alternatives as single
"tokens" that are whole behavior names, with their log-probabilities over the candidate set. ``stream: true``
sends the answer as one chunk. The same limits, queue and validation as ``/predict`` apply; errors have OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``, and status (a bad request is 400, not 422).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from behaviorlm.prompts import Prompt, parse
from behaviorlm.serving.api import PredictionInputError, Predictor, format_loc

MAX_MESSAGES = 64
MAX_TOP_LOGPROBS = 20  # OpenAI's bound
DEFAULT_TOP = 5
LOG_ZERO = -9999.0
"""The log-probability reported for a probability that underflowed to 0 (JSON has no -inf); OpenAI uses it too."""

Rank = Callable[[Request, list[Prompt], int], Awaitable[list[list[dict[str, Any]]]]]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """OpenAI's chat request; parameters not listed here are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    n: Annotated[int, Field(strict=True, ge=1)] = 1
    stream: bool = False
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(strict=True, ge=0, le=MAX_TOP_LOGPROBS)] | None = None


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def add_openai_api(app: FastAPI, predictor: Predictor, model_id: str, rank: Rank, checked_prompt: Callable,
                   predict_request: type[BaseModel]) -> None:
    """Add the routes, and the middleware that gives every error under /v1/ OpenAI's shape.

    ``rank(request, prompts, k)`` goes through the server's queue; ``checked_prompt(events, next, loc)`` builds a
    prompt within the server's limits; ``predict_request`` is ``/predict``'s body schema with its limits.
    """
    app.add_middleware(OpenAIErrors)
    created = int(time.time())
    card = {"id": model_id, "object": "model", "created": created, "owned_by": "behaviorlm"}
    known = [*predictor.candidates, *predictor.aliases]

    def not_found(name: str) -> JSONResponse:
        return openai_error(404, f"The model {name!r} does not exist; this server serves {model_id!r} "
                            "(GET /v1/models)", "model", "model_not_found")

    @app.get("/v1/models", summary="OpenAI API: the served model")
    async def models() -> dict:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name:path}", summary="OpenAI API: one model")
    async def model(name: str):
        return card if name == model_id else not_found(name)

    @app.post("/v1/chat/completions", summary="OpenAI API: the next behavior for a behavior prompt")
    async def chat(body: ChatRequest, request: Request):
        if body.model != model_id:
            return not_found(body.model)
        if body.n != 1:
            return openai_error(400, "n must be 1: the answer is the most probable behavior", "n")
        where = ("messages", len(body.messages) - 1)
        last = body.messages[-1]
        if last.role != "user":
            return openai_error(400, f"the last message must be the user's behavior prompt, not {last.role!r}",
                                format_loc((*where, "role")))
        text = message_text(last)
        where = (*where, "content")
        if text.lstrip().startswith("{"):
            item = parse_json_request(text, predict_request, where)
            events = [e.model_dump() for e in item.events]
            next_context = item.next.model_dump() if item.next is not None else None
            subset, k = None, item.k
        else:
            try:
                parsed = parse(text, known)
            except ValueError as exc:
                raise PredictionInputError(f"{exc}; or send a JSON object like POST /predict's body", where) from None
            events = [{"time": e.time, "place": e.place, "behavior": e.behavior} for e in parsed.history]
            next_context = {"time": parsed.next_time, "place": parsed.next_place}
            subset = [c for c in dict.fromkeys(parsed.candidates) if c in predictor.candidates]
            if len(subset) < len(parsed.candidates):
                unknown = [c for c in parsed.candidates if c not in predictor.candidates]
                raise PredictionInputError(f"the candidate set lists {unknown[0]!r}, which this model does not "
                                           "predict (GET /behaviors)", where)
            k = DEFAULT_TOP
        prompt, prompt_tokens = checked_prompt(events, next_context, where)
        ranking = (await rank(request, [prompt], len(predictor.candidates)))[0]
        if subset is not None and len(subset) < len(predictor.candidates):
            ranking = restricted(ranking, set(subset))
        answer = ranking[0]["behavior"]
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "logprobs": logprobs(ranking, body.top_logprobs or 0) if body.logprobs else None,
            "finish_reason": "stop",
            "behaviorlm": {"top": ranking[:min(k, len(ranking))]},
        }
        completion_tokens = len(predictor.tokenizer(answer, add_special_tokens=False)["input_ids"])
        reply = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        return streamed(reply) if body.stream else reply


def message_text(message: ChatMessage) -> str:
    """A message's text: the string, or the text parts of a content list joined."""
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def parse_json_request(text: str, schema: type[BaseModel], where: tuple) -> Any:
    """``/predict``'s body inside a message, with its limits; errors point into the message."""
    try:
        return schema.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(p for p in error.get("loc", ()) if p != "__root__")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            message = "the message starts with '{' but is not valid JSON"
        raise PredictionInputError(message, (*where, *loc)) from None


def restricted(ranking: list[dict[str, Any]], allowed: set[str]) -> list[dict[str, Any]]:
    """The ranking over ``allowed`` only, probabilities renormalised: the softmax over that subset's scores."""
    kept = [r for r in ranking if r["behavior"] in allowed]
    total = sum(r["probability"] for r in kept) or 1.0
    return [{"behavior": r["behavior"], "probability": r["probability"] / total} for r in kept]


def logprobs(ranking: list[dict[str, Any]], top: int) -> dict:
    """OpenAI's logprobs with one "token": the answer, a whole behavior name, and ``top`` alternatives."""
    def entry(row: dict[str, Any]) -> dict[str, Any]:
        p = row["probability"]
        return {"token": row["behavior"], "logprob": math.log(p) if p > 0 else LOG_ZERO,
                "bytes": list(row["behavior"].encode("utf-8"))}

    return {"content": [{**entry(ranking[0]), "top_logprobs": [entry(r) for r in ranking[:top]]}], "refusal": None}


def streamed(reply: dict) -> StreamingResponse:
    """The reply as server-sent events: one chunk with the whole answer, one that finishes, then [DONE]."""
    choice = reply["choices"][0]
    head = {k: reply[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": choice["message"], "logprobs": choice["logprobs"],
                              "finish_reason": None, "behaviorlm": choice["behaviorlm"]}]},
        {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
    ]
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return StreamingResponse(iter(lines), media_type="text/event-stream")


# --- errors in OpenAI's shape ---------------------------------------------------------------------------


class OpenAIErrors:
    """ASGI middleware: under /v1/, an error response in the server's shape (``{"error": line, "detail": ...}``,
    from the size limit, validation, the queue or a timeout) is rewritten into OpenAI's, keeping its status except
    422, which OpenAI's API answers with 400. The routes' own OpenAI-shaped errors pass unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def rewrite(message):
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, body = openai_shape(start["status"], b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def openai_shape(status: int, body: bytes) -> tuple[int, bytes]:
    try:
        content = json.loads(body)
    except ValueError:
        content = {"error": body.decode("utf-8", "replace") or "error"}
    error = content.get("error") if isinstance(content, dict) else None
    if isinstance(error, dict):  # already OpenAI's shape
        return status, body
    detail = content.get("detail") if isinstance(content, dict) else None
    param = None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = list(detail[0].get("loc") or [])
        loc = loc[1:] if loc[:1] == ["body"] else loc
        param = format_loc(loc) if loc and isinstance(loc[0], str) else None  # not for a position in the JSON text
    status = 400 if status == 422 else status
    # The OpenAI request is the body itself, so field paths are named without the "body." the server prefixes.
    message = str(error if error is not None else detail or "error").removeprefix("body.").replace("; body.", "; ")
    return status, openai_error(status, message, param).body
