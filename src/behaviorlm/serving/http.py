"""``behaviorlm serve``: an HTTP prediction server (FastAPI + uvicorn).

    behaviorlm serve --run runs/demo                      # http://127.0.0.1:8000/docs
    curl -s localhost:8000/predict -H 'content-type: application/json' \\
      -d '{"events": [{"time": "2024-05-06T08:10", "place": "home", "behavior": "Breakfast"}], "k": 3}'

Endpoints: ``POST /predict`` (one user), ``POST /predict/batch`` (many users), ``GET /health``,
``GET /behaviors``, the OpenAI chat API (``POST /v1/chat/completions``, ``GET /v1/models``; ``openai_api.py``)
and the OpenAPI docs at ``/docs`` and ``/openapi.json``.

The model is loaded once, before the server accepts connections. A CPU forward pass takes most of a second,
so requests are not run one by one: a single background task collects the requests that arrive while the
model is busy (plus a few milliseconds when it is idle) and ranks them in one batched call on one worker
thread. That bounds concurrency to one model call at a time, and the queue is bounded too: past
``max_pending`` queued prompts the server answers 503 instead of growing without limit.

Every request's work is bounded (``ServerSettings``, all shown by ``GET /health``):

- the body is at most ``max_body_bytes`` (413 beyond, checked on Content-Length and again as the body streams in);
- at most ``max_events`` events per user and ``max_batch`` users; only the last L events (the run's history
  length) reach the prompt;
- a place or behavior is at most 200 characters (the limit the data pipeline applies, ``data.events.TEXT_LIMIT``),
  and one prompt at most ``max_prompt_tokens`` tokens: by default its fixed part (instruction and candidate set)
  plus 40 tokens for each of the L history items and the next event's context, several times what ordinary
  places take (an item such as "(Monday, 8, office, Breakfast)" is about 12 tokens); over it, 422;
- a request not answered within ``request_timeout_s`` gets 503 while still queued (retry later) or 504 when its
  model call was already running; a request whose client disconnected is dropped before it reaches the model.

Every malformed request gets a 4xx with a message naming the field: unknown behaviors, unparseable times,
too many events, k out of range, unknown fields, invalid JSON, bodies over the size limit. Error bodies are
small whatever the request: one summary line of at most 500 characters and at most 10 field errors.
"""


import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from behaviorlm.data.events import TEXT_LIMIT
from behaviorlm.prompts import Prompt
from behaviorlm.serving.api import PredictionInputError, Predictor, format_loc, parse_time, set_threads
from behaviorlm.serving.batch import add_trust_options
from behaviorlm.serving.openai_api import add_openai_api

log = logging.getLogger("behaviorlm.serve")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKENS_PER_EVENT = 40
"""Default prompt budget per history item (see ``ServerSettings.max_prompt_tokens``)."""
MAX_ERROR_ITEMS = 10
MAX_ERROR_LINE = 500
MAX_ERROR_TEXT = 160


@dataclass
class ServerSettings:
    max_events: int = 200
    """Events per user in one request; more than the model's history length is allowed (the last are used)."""
    max_batch: int = 64
    """Users per /predict/batch request, and prompts per model call."""
    max_body_bytes: int = 512 * 1024
    """Largest request body (a full batch, 64 users with 20 events each, is about 110 KB)."""
    batch_window_ms: float = 5.0
    """How long an idle server waits for more requests before running a batch."""
    max_pending: int = 256
    """Queued prompts beyond which new requests get 503 (retry later)."""
    max_prompt_tokens: int | None = None
    """Tokens one prompt may take (``Predictor.prompt_tokens``); None = its fixed part (instruction and candidate
    set) plus ``TOKENS_PER_EVENT`` for each of the history items and the next event's context."""
    request_timeout_s: float = 30.0
    """Longest wait for the model: then 503 if the request is still queued, 504 if its model call is running."""
    served_model_name: str | None = None
    """The model id of the OpenAI API (``GET /v1/models``; chat requests must name it); None = the predictor's name."""


def default_prompt_budget(predictor: Predictor) -> int:
    """The fixed part of a serving prompt plus ``TOKENS_PER_EVENT`` per history item and next-event context."""
    from datetime import datetime

    fixed = predictor.prompt_tokens(predictor.render([], datetime(2024, 1, 1), ""))
    return fixed + TOKENS_PER_EVENT * (predictor.history_len + 1)


# --- request and response schemas ---------------------------------------------------------------------


class Prediction(BaseModel):
    behavior: str
    probability: float = Field(description="softmax over the scores of all candidate behaviors")


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class BatchResponse(BaseModel):
    model: str
    results: list[list[Prediction]]


def request_models(predictor: Predictor, settings: ServerSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request schemas carrying this server's limits and vocabulary, so /docs shows them and pydantic checks them."""
    n_behaviors = len(predictor.candidates)
    time_field = Field(
        max_length=64,
        description="ISO 8601 local time, e.g. 2024-05-06T08:10:00 (an offset is ignored: the wall clock counts)",
        json_schema_extra={"format": "date-time"},
    )

    def check_time(value: str) -> str:
        parse_time(value)  # PredictionInputError is a ValueError: pydantic reports it at this field
        return value

    class EventIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        time: Annotated[str, time_field]
        place: Annotated[str, Field(max_length=TEXT_LIMIT)] = ""
        behavior: Annotated[str, Field(min_length=1, max_length=TEXT_LIMIT, description="one of GET /behaviors")]

        _time = field_validator("time")(check_time)

        @field_validator("behavior")
        @classmethod
        def known_behavior(cls, value: str) -> str:
            if not predictor.knows(value):
                raise ValueError(f"unknown behavior {value!r}; GET /behaviors lists the {n_behaviors} known ones")
            return value

    class NextIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        time: Annotated[str, time_field]
        place: Annotated[str | None, Field(max_length=TEXT_LIMIT, description="default: the last event's place")] = None

        _time = field_validator("time")(check_time)

    class PredictRequest(BaseModel):
        """One user's recent events (any order; the last ones by time are used)."""

        model_config = ConfigDict(extra="forbid")
        events: Annotated[list[EventIn], Field(min_length=1, max_length=settings.max_events)]
        next: NextIn | None = Field(
            default=None, description="time and place of the event to predict; default: the last event's"
        )
        k: Annotated[int, Field(strict=True, ge=1, le=n_behaviors)] = min(5, n_behaviors)

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        requests: Annotated[list[PredictRequest], Field(min_length=1, max_length=settings.max_batch)]

    return PredictRequest, BatchRequest


# --- micro-batching -------------------------------------------------------------------------------------


class Overloaded(Exception):
    pass


class ClientGone(Exception):
    """The client disconnected before its request reached the model; the request was dropped."""


class TimedOut(Exception):
    def __init__(self, running: bool, seconds: float):
        super().__init__(f"no answer within {seconds:g} s")
        self.running = running
        self.seconds = seconds


@dataclass
class Job:
    prompts: list[Prompt]
    k: int
    future: asyncio.Future = field(repr=False)
    running: bool = False
    """Taken into a model call (from then on it cannot be withdrawn)."""


class MicroBatcher:
    """Runs concurrent requests' prompts through the model together, one call at a time on one thread."""

    def __init__(self, predictor: Predictor, settings: ServerSettings):
        self.predictor = predictor
        self.settings = settings
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.pending = 0
        self.batches = 0
        self.dropped = 0
        """Requests withdrawn before their model call (client gone or timed out while queued)."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="behaviorlm-model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def rank(self, prompts: list[Prompt], k: int, *, gone: Callable[[], Awaitable[Any]] | None = None,
                   timeout: float | None = None) -> list[list[dict[str, Any]]]:
        """The top-k of each prompt. ``gone()`` returns when the client disconnects: a request still queued then
        is withdrawn (``ClientGone``); so is one that waited ``timeout`` seconds (``TimedOut``)."""
        if self.pending + len(prompts) > self.settings.max_pending:
            raise Overloaded()
        job = Job(prompts, k, asyncio.get_running_loop().create_future())
        self.pending += len(prompts)
        self.queue.put_nowait(job)
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            waiting = {job.future} if watcher is None else {job.future, watcher}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if job.future.done():
                return job.future.result()
            if not job.running:
                self.dropped += 1
            if watcher is not None and watcher.done():
                raise ClientGone()
            raise TimedOut(job.running, timeout or 0.0)
        finally:
            if watcher is not None:
                watcher.cancel()
            if not job.future.done():
                job.future.cancel()  # the batcher skips it if it has not started

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            # Requests that arrived while the model was busy are already queued; when idle, wait briefly.
            if self.queue.empty():
                await asyncio.sleep(self.settings.batch_window_ms / 1000)
            size = len(batch[0].prompts)
            while size < self.settings.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                size += len(batch[-1].prompts)
            live = [job for job in batch if not job.future.done()]  # withdrawn: client gone or timed out
            for job in live:
                job.running = True
            try:
                if live:
                    prompts = [p for job in live for p in job.prompts]
                    k = max(job.k for job in live)
                    ranked = await loop.run_in_executor(self.executor, self.predictor.rank, prompts, k)
                    self.batches += 1
                    start = 0
                    for job in live:
                        rows = ranked[start:start + len(job.prompts)]
                        start += len(job.prompts)
                        if not job.future.done():
                            job.future.set_result([row[:job.k] for row in rows])
            except Exception as exc:  # a model failure fails these requests, not the server
                log.exception("model call failed")
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
            finally:
                self.pending -= size


# --- body size limit ------------------------------------------------------------------------------------


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``, by Content-Length or as the body streams in.

    The body is read here (it is small by construction) and replayed to the app.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await error_response(400, "Content-Length is not a number")(scope, receive, send)
            if int(declared) > self.max_bytes:
                return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        response = error_response(413, f"request body is larger than {self.max_bytes} bytes")
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def validation_message(error: dict) -> str:
    """Pydantic's message, made to read well: no "Value error," prefix; JSON errors say what and where."""
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error")
        loc = error.get("loc") or ()
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return f"invalid JSON{where}" + (f": {reason}" if reason else "")
    return str(error.get("msg", "")).removeprefix("Value error, ")


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def field_errors(errors: list[dict], total: int | None = None) -> list[dict]:
    """At most ``MAX_ERROR_ITEMS`` entries, each part clipped, and one entry saying how many were left out: an
    error body stays a few KB whatever the request (a body of 100,000 unknown keys has 100,000 errors)."""
    total = len(errors) if total is None else total
    out = [{"loc": [p if isinstance(p, int) else clip(str(p), 64) for p in e.get("loc", ())][:12],
            "msg": clip(str(e.get("msg", ""))), "type": clip(str(e.get("type", "")), 40)}
           for e in errors[:MAX_ERROR_ITEMS]]
    if total > len(out):
        out.append({"loc": [], "msg": f"{total - len(out)} more errors not shown", "type": "truncated"})
    return out


def error_response(status: int, message: str, detail: Any = None, headers: dict | None = None,
                   total: int | None = None) -> JSONResponse:
    """Every error has the same shape: ``{"error": one readable line, "detail": message or field list}``.

    ``total``: how many field errors there were, when ``detail`` lists only the first ones.
    """
    message = clip(message, MAX_ERROR_LINE)
    if isinstance(detail, list):
        detail = field_errors(detail, total)
    elif detail is not None:
        detail = clip(str(detail), MAX_ERROR_LINE)
    return JSONResponse({"error": message, "detail": detail if detail is not None else message}, status, headers)


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the request body has been read, so the next message says so)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # not expected after the body; never spin


# --- the app --------------------------------------------------------------------------------------------


def create_app(predictor: Predictor, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app around a loaded predictor (tests build it with a tiny model)."""
    settings = settings or ServerSettings()
    PredictRequest, BatchRequest = request_models(predictor, settings)
    batcher = MicroBatcher(predictor, settings)
    budget = settings.max_prompt_tokens or default_prompt_budget(predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="BehaviorLM prediction server",
        description="Predict a user's next daily behavior from their recent events (top-k with probabilities).",
        version="1",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError):
        raw = exc.errors()
        errors = [  # only those shown are converted: there may be 100,000
            {"loc": [p if isinstance(p, int) else clip(str(p), 64) for p in e.get("loc", ())],
             "msg": clip(validation_message(e)),
             "type": str(e.get("type", ""))}
            for e in raw[:MAX_ERROR_ITEMS]
        ]
        summary = "; ".join(f"{format_loc(e['loc'])}: {e['msg']}" for e in errors[:3])
        if len(raw) > 3:
            summary += f"; and {len(raw) - 3} more"
        return error_response(422, summary or "invalid request", errors, total=len(raw))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if exc.status_code == 400 and request.method == "POST":  # FastAPI's "error parsing the body"
            message = f"{message}: send a UTF-8 JSON object with content-type application/json"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(PredictionInputError)
    async def on_bad_input(request: Request, exc: PredictionInputError):
        return error_response(422, str(exc), [{"loc": list(exc.loc), "msg": exc.reason, "type": "value_error"}])

    @app.exception_handler(Overloaded)
    async def on_overload(request: Request, exc: Overloaded):
        return error_response(503, "server busy: too many queued predictions; retry shortly", headers={"retry-after": "1"})

    @app.exception_handler(TimedOut)
    async def on_timeout(request: Request, exc: TimedOut):
        if exc.running:
            return error_response(504, f"the model did not answer within {exc.seconds:g} s")
        return error_response(503, f"server busy: not started within {exc.seconds:g} s; retry shortly",
                              headers={"retry-after": "1"})

    @app.exception_handler(ClientGone)
    async def on_gone(request: Request, exc: ClientGone):
        return error_response(499, "client closed the request; it was dropped")  # nobody reads it

    def checked_prompt(events: list, next_context: dict | None, loc: tuple) -> tuple[Prompt, int]:
        """The prompt for one user, and its tokens, within this server's limits."""
        if len(events) > settings.max_events:
            raise PredictionInputError(f"{len(events)} events; this server takes at most {settings.max_events}", loc)
        prompt = predictor.prompt_for(events, next_context, loc=loc)
        tokens = predictor.prompt_tokens(prompt)
        if tokens > budget:
            raise PredictionInputError(
                f"the prompt would take {tokens} tokens, over this server's budget of {budget} per prompt "
                "(GET /health, limits); use shorter places", loc)
        return prompt, tokens

    def bounded_prompt(item, loc: tuple) -> Prompt:
        events = [e.model_dump() for e in item.events]
        return checked_prompt(events, item.next.model_dump() if item.next is not None else None, loc)[0]

    async def rank(request: Request, prompts: list[Prompt], k: int) -> list[list[dict[str, Any]]]:
        return await batcher.rank(prompts, k, gone=lambda: client_gone(request), timeout=settings.request_timeout_s)

    @app.post("/predict", response_model=PredictResponse, summary="Top-k next behaviors for one user")
    async def predict(body: PredictRequest, request: Request) -> dict:
        rows = await rank(request, [bounded_prompt(body, ("body",))], body.k)
        return {"model": predictor.name, "predictions": rows[0]}

    @app.post("/predict/batch", response_model=BatchResponse, summary="Top-k next behaviors for many users")
    async def predict_batch(body: BatchRequest, request: Request) -> dict:
        prompts = [bounded_prompt(item, ("body", "requests", i)) for i, item in enumerate(body.requests)]
        rows = await rank(request, prompts, max(item.k for item in body.requests))
        return {"model": predictor.name, "results": [row[:item.k] for row, item in zip(rows, body.requests)]}

    @app.get("/health", summary="Liveness and what is being served")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": predictor.name,
            "behaviors": len(predictor.candidates),
            "history_len": predictor.history_len,
            "pending": batcher.pending,
            "batches": batcher.batches,
            "dropped": batcher.dropped,
            "limits": {"max_events": settings.max_events, "max_batch": settings.max_batch,
                       "max_body_bytes": settings.max_body_bytes, "max_text_chars": TEXT_LIMIT,
                       "max_prompt_tokens": budget, "request_timeout_s": settings.request_timeout_s},
        }

    @app.get("/behaviors", summary="The behaviors the model can predict (valid event behaviors)")
    async def behaviors() -> dict:
        return {"behaviors": predictor.behavior_info()}

    add_openai_api(app, predictor, settings.served_model_name or predictor.name, rank, checked_prompt, PredictRequest)
    return app


# --- CLI ------------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder (serves its tuned model) or prepared dataset folder (base model, zero-shot)")
    parser.add_argument("--model", default=None, help="run folder: which RUN/<model> to serve (default behaviorlm, else a tuned one); dataset folder: base model name or path (default smollm2-135m)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; the server has no authentication, so keep loopback unless behind a proxy")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--max-events", type=int, default=ServerSettings.max_events, help="most events accepted per user in a request")
    parser.add_argument("--max-batch", type=int, default=ServerSettings.max_batch, help="most users per /predict/batch request and prompts per model call")
    parser.add_argument("--max-body-kb", type=int, default=ServerSettings.max_body_bytes // 1024, help="largest request body accepted (KiB); larger gets 413")
    parser.add_argument("--batch-window-ms", type=float, default=ServerSettings.batch_window_ms, help="how long an idle server waits to batch concurrent requests")
    parser.add_argument("--max-pending", type=int, default=ServerSettings.max_pending, help="queued prompts beyond which requests get 503")
    parser.add_argument("--max-prompt-tokens", type=int, default=None, help=f"most tokens one prompt may take; more gets 422 (default: the prompt's instruction and candidate set plus {TOKENS_PER_EVENT} per history event)")
    parser.add_argument("--timeout-s", type=float, default=ServerSettings.request_timeout_s, help="longest wait for the model per request: then 503 if still queued, 504 if its model call is running")
    parser.add_argument("--served-model-name", default=None, help="model id of the OpenAI chat API (/v1/models; a chat request's model must name it); default: the served model's name, e.g. behaviorlm")
    parser.add_argument("--int8", action="store_true", help="CPU only: dynamic int8 linear layers, faster; predictions may differ slightly (`behaviorlm bench` measures both)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default on CPU: all cores but one, which is left to the HTTP event loop)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level")
    add_trust_options(parser)


def serving_threads(device: str) -> int | None:
    """On CPU, all cores but one: the model's threads wait for each other at every operation, so one of
    them losing its core to the event loop (parsing requests) stalls the whole forward pass; measured on
    2 busy cores, 2 threads ran the tiny test model 20x slower than 1. None (torch's default) on GPUs."""
    import os

    from behaviorlm.lm.loading import pick_device

    if pick_device(device).type != "cpu":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from behaviorlm.errors import InputError

    for name in ("max_events", "max_batch", "max_body_kb", "max_pending", "threads", "max_prompt_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.served_model_name is not None and not args.served_model_name.strip():
        raise InputError("--served-model-name must not be empty")
    if not args.timeout_s > 0:
        raise InputError(f"--timeout-s must be positive, got {args.timeout_s}")
    if args.host not in LOOPBACK_HOSTS:
        log.warning("binding %s: the server has no authentication; anyone who can reach it can query the model", args.host)
    settings = ServerSettings(
        max_events=args.max_events,
        max_batch=args.max_batch,
        max_body_bytes=args.max_body_kb * 1024,
        batch_window_ms=args.batch_window_ms,
        max_pending=args.max_pending,
        max_prompt_tokens=args.max_prompt_tokens,
        request_timeout_s=args.timeout_s,
        served_model_name=args.served_model_name,
    )
    set_threads(args.threads or serving_threads(args.device))
    predictor = Predictor.from_run(args.run, args.model, args.device, int8=args.int8,
                                   trust_remote_code=args.trust_remote_code, base_model=args.base_model,
                                   adapter=args.adapter)
    print(f"serving {predictor.name} ({len(predictor.candidates)} behaviors) on http://{args.host}:{args.port}  (docs: /docs; "
          f"OpenAI API: /v1, model {settings.served_model_name or predictor.name!r})", flush=True)
    uvicorn.run(create_app(predictor, settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0

