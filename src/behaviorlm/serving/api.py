"""The Python prediction API: load a trained run once, then predict a user's next behavior.

    from behaviorlm.serving.api import Predictor
    predictor = Predictor.from_run("runs/demo")            # or a prepared dataset folder (zero-shot)
    predictor.predict([{"time": "2024-05-06T08:10", "place": "home", "behavior": "Breakfast"}, ...], k=5)
    # -> [{"behavior": "Commute", "probability": 0.41}, ...]

Prompts use instruction format 0 so that a request always gets the same answer. The candidate set is the
behavior vocabulary in the same (sorted) order that training and evaluation show the model.

When the next event's context is not given, the prediction is for the moment of the last event, at its place:
"what comes next, here and now". Callers who know when they want the prediction (e.g. a notification planned
for 9:00) should pass ``next_context={"time": ..., "place": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from behaviorlm.data.types import Event, PreparedData, Stats
from behaviorlm.errors import InputError
from behaviorlm.prompts import Prompt, render, render_packed

DEFAULT_BASE_MODEL = "smollm2-135m"
DEFAULT_HISTORY_LEN = 20
SERVING_FORMAT_ID = 0

EventLike = Mapping[str, Any] | Event
ContextLike = Mapping[str, Any] | None


class PredictionInputError(InputError, ValueError):
    """A request the caller can fix (unknown behavior, unparseable time, k out of range, ...).

    ``loc`` says where, e.g. ``("events", 3, "behavior")``, so the HTTP layer can point at the field.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()):
        self.loc = loc
        self.reason = message
        super().__init__(f"{format_loc(loc)}: {message}" if loc else message)


def format_loc(loc: Sequence[str | int]) -> str:
    """("events", 3, "time") -> "events[3].time"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_time(value: Any, loc: tuple[str | int, ...] = ()) -> datetime:
    """ISO 8601 text or a datetime -> naive wall-clock datetime.

    The prompt speaks of weekday and hour as the user lived them, so a timezone offset is dropped, not
    converted: "2024-05-06T08:10+09:00" is 8 o'clock. Numbers are refused because a Unix time has no wall clock.
    """
    if isinstance(value, datetime) and value == value:  # includes pandas.Timestamp; NaT != NaT
        if hasattr(value, "to_pydatetime"):
            value = value.to_pydatetime()
        return value.replace(tzinfo=None)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip()).replace(tzinfo=None)
        except ValueError:
            pass
    raise PredictionInputError(f"cannot parse {value!r} as an ISO 8601 time such as '2024-05-06T08:10:00'", loc)


def set_threads(threads: int | None) -> None:
    """CPU threads for the model; None keeps torch's default (all cores). The setting is process-wide."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@dataclass(frozen=True)
class ModelSource:
    """What to load: the base model, an optional adapter, and the settings that go with them."""

    label: str
    base_model: str
    adapter: Path | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    prompt_format: str = "paper"
    """The prompt format the model was tuned (and evaluated) in: ``paper`` or ``packed``."""
    behavior_tokens: bool = False
    """The adapter is a llara one: history behaviors carry their hybrid tokens (``lm.hybrid``)."""


class Predictor:
    """Ranks the behavior vocabulary for one user's recent events; the model is loaded once.

    Not thread-safe: a server must serialize calls (``serving.http`` does, with batching).
    """

    def __init__(
        self,
        model,
        tokenizer,
        behaviors: Sequence[str] | Stats,
        history_len: int = DEFAULT_HISTORY_LEN,
        *,
        batch_size: int = 8,
        name: str = "model",
        progress: bool = False,
        prompt_format: str = "paper",
        behavior_tokens: bool = False,
    ):
        from behaviorlm.lm.ranking import CandidateRanker  # torch import only when a model is used

        self.stats = behaviors if isinstance(behaviors, Stats) else None
        names = self.stats.names if self.stats is not None else list(behaviors)
        if not names:
            raise ValueError("a predictor needs at least one behavior")
        self.candidates: list[str] = sorted(set(names))
        # Behaviors folded into "Other <group>" classes when the dataset was prepared are accepted under
        # their original names and mapped to the class the model learned.
        fold_map = (self.stats.settings.get("vocabulary") or {}).get("fold_map") if self.stats is not None else None
        self.aliases: dict[str, str] = {k: v for k, v in (fold_map or {}).items() if v in self.candidates}
        self._known = frozenset(self.candidates) | frozenset(self.aliases)
        self.history_len = history_len
        self.prompt_format = prompt_format
        self.behavior_tokens = behavior_tokens
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.ranker = CandidateRanker(model, tokenizer, batch_size=batch_size, progress=progress)

    @property
    def behaviors(self) -> list[str]:
        return list(self.candidates)

    def knows(self, behavior: str) -> bool:
        """Whether ``behavior`` is accepted in a history (a candidate or a name folded into one)."""
        return behavior in self._known

    def behavior_info(self) -> list[dict[str, Any]]:
        """Name, frequency group and share of each behavior (share/group unknown without dataset stats)."""
        if self.stats is None:
            return [{"name": n, "group": None, "share": None} for n in self.candidates]
        by_name = self.stats.by_name
        return [{"name": n, "group": by_name[n].group, "share": by_name[n].share} for n in self.candidates]

    # --- loading -------------------------------------------------------------------------------------

    @classmethod
    def from_run(cls, path: str | Path, model_name: str | None = None, device: str = "auto",
                 batch_size: int | None = None, int8: bool = False, *, trust_remote_code: bool = False,
                 base_model: str | None = None, adapter: str | Path | None = None) -> Predictor:
        """Load a run folder or a prepared dataset folder.

        Run folder (``RUN/config.yaml``, ``RUN/data/stats.json``, ``RUN/<model>/model.json``): ``model_name``
        picks ``RUN/<model>``; by default "behaviorlm" if it exists, else a tuned model (one with an adapter),
        else the zero-shot base model. Prepared dataset folder (``stats.json`` inside): the base model
        ``model_name`` (default the embedded SmolLM2) predicts zero-shot. A LoRA adapter is merged into the
        weights once loaded, since serving never trains; ``int8`` quantizes the linear layers (CPU only,
        ``lm.loading.for_inference``).

        A run folder is not trusted (see :func:`resolve_run`): the model's own code runs only with
        ``trust_remote_code`` (the command line's ``--trust-remote-code``), and the paths it names must lie
        inside it; ``base_model`` and ``adapter`` (the command line's) replace the ones it names.
        """
        from behaviorlm.lm.loading import for_inference, load_model

        stats, history_len, source, default_batch = resolve_run(
            Path(path), model_name, trust_remote_code=trust_remote_code, base_model=base_model, adapter=adapter)
        model, tokenizer = load_model(
            source.base_model,
            device=device,
            dtype=source.dtype,
            adapter=str(source.adapter) if source.adapter else None,
            trust_remote_code=source.trust_remote_code,
        )
        model = for_inference(model, int8=int8)
        return cls(model, tokenizer, stats, history_len, batch_size=batch_size or default_batch, name=source.label,
                   prompt_format=source.prompt_format, behavior_tokens=source.behavior_tokens)

    # --- prediction ----------------------------------------------------------------------------------

    def to_events(self, events: Iterable[EventLike], loc: tuple[str | int, ...] = ("events",)) -> list[Event]:
        """Validate and convert events; sorted by time (stable), so callers need not sort."""
        out = []
        for i, raw in enumerate(events):
            where = (*loc, i)
            if isinstance(raw, Event):
                event = Event(parse_time(raw.time, (*where, "time")), raw.place or "", raw.behavior)
            elif isinstance(raw, Mapping):
                time = raw.get("time", raw.get("timestamp"))
                if time is None:
                    raise PredictionInputError("missing 'time'", where)
                place = raw.get("place", raw.get("location")) or ""
                if not isinstance(place, str):
                    raise PredictionInputError(f"place must be text, got {place!r}", (*where, "place"))
                behavior = raw.get("behavior")
                if not isinstance(behavior, str):
                    raise PredictionInputError("missing 'behavior' (text)", where)
                event = Event(parse_time(time, (*where, "time")), place, behavior)
            else:
                raise PredictionInputError(f"an event must be a mapping or Event, got {type(raw).__name__}", where)
            if event.behavior not in self._known:
                raise PredictionInputError(
                    f"unknown behavior {event.behavior!r}; the model knows {len(self.candidates)} behaviors "
                    "(Predictor.behaviors, or GET /behaviors on the server)",
                    (*where, "behavior"),
                )
            if event.behavior in self.aliases:
                event = Event(event.time, event.place, self.aliases[event.behavior])
            out.append(event)
        out.sort(key=lambda e: e.time)
        return out

    def prompt_for(self, events: Iterable[EventLike], next_context: ContextLike = None, loc: tuple[str | int, ...] = ()) -> Prompt:
        """The prompt for one user: the last ``history_len`` events and the next event's time and place."""
        history = self.to_events(events, (*loc, "events"))[-self.history_len:]
        if not history:
            raise PredictionInputError("at least one event is needed", (*loc, "events"))
        last = history[-1]
        if next_context is None:
            next_time, next_place = last.time, last.place
        else:
            if not isinstance(next_context, Mapping) or next_context.get("time") is None:
                raise PredictionInputError("must be a mapping with a 'time'", (*loc, "next"))
            next_time = parse_time(next_context["time"], (*loc, "next", "time"))
            next_place = next_context.get("place")
            if next_place is None:
                next_place = last.place  # the user is most likely still where they were
            elif not isinstance(next_place, str):
                raise PredictionInputError(f"place must be text, got {next_place!r}", (*loc, "next", "place"))
            if next_time < last.time:
                raise PredictionInputError(
                    f"{next_time.isoformat()} is before the last event ({last.time.isoformat()})", (*loc, "next", "time")
                )
        return self.render(history, next_time, next_place)

    def render(self, history: Sequence[Event], next_time: datetime, next_place: str) -> Prompt:
        """The prompt in the model's format (``prompts.render_packed``, else the paper's first instruction)."""
        if self.prompt_format == "packed":
            return render_packed(history, next_time, next_place, self.candidates, self.behavior_tokens)
        return render(history, next_time, next_place, self.candidates, format_id=SERVING_FORMAT_ID,
                      behavior_tokens=self.behavior_tokens)

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of a prompt's text (system and user turns, without the chat template's few markers)."""
        return len(self.tokenizer(f"{prompt.system}\n{prompt.user}", add_special_tokens=False)["input_ids"])

    def check_k(self, k: int, loc: tuple[str | int, ...] = ("k",)) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.candidates):
            raise PredictionInputError(f"k must be an integer from 1 to {len(self.candidates)}, got {k!r}", loc)
        return k

    def rank(self, prompts: list[Prompt], k: int) -> list[list[dict[str, Any]]]:
        """One ranker call for many prompts: the top-k behaviors of each, most probable first."""
        if not prompts:
            return []
        ranked = self.ranker.rank(prompts, self.candidates, k=k)
        return [[{"behavior": b, "probability": float(p)} for b, p in row[:k]] for row in ranked]

    def predict(self, events: Iterable[EventLike], next_context: ContextLike = None, k: int = 5) -> list[dict[str, Any]]:
        """Top-k ``{"behavior", "probability"}`` for one user's events (probabilities over all candidates)."""
        self.check_k(k)
        return self.rank([self.prompt_for(events, next_context)], k)[0]

    def predict_batch(self, requests: Sequence[tuple[Iterable[EventLike], ContextLike]], k: int = 5) -> list[list[dict[str, Any]]]:
        """``predict`` for many users in one batched model call; results in request order."""
        self.check_k(k)
        prompts = [self.prompt_for(events, ctx, loc=("requests", i)) for i, (events, ctx) in enumerate(requests)]
        return self.rank(prompts, k)


def resolve_run(root: Path, model_name: str | None, *, trust_remote_code: bool = False, base_model: str | None = None,
                adapter: str | Path | None = None) -> tuple[Stats, int, ModelSource, int]:
    """(behavior stats, history length, model to load, batch size) for a run or prepared dataset folder.

    What a run folder says is not trusted: its ``model.trust_remote_code`` is refused unless ``trust_remote_code``
    (the command line) allows it, and an adapter or base-model folder it names must lie inside it (a copied or
    downloaded run cannot point the loader at files elsewhere on the machine). ``base_model`` and ``adapter``
    come from the command line and replace the run's own, unchecked.
    """
    from behaviorlm.config import RunConfig, allowed_remote_code, load_config

    if (root / "stats.json").is_file():
        stats = PreparedData(root).stats
        base = base_model or model_name or DEFAULT_BASE_MODEL
        history_len = int(stats.settings.get("history_len", DEFAULT_HISTORY_LEN))
        given = Path(adapter) if adapter else None
        source = ModelSource(f"{base} (zero-shot)", base, given, trust_remote_code=trust_remote_code,
                             behavior_tokens=hybrid(given))
        return stats, history_len, source, 8
    if not (root / "data" / "stats.json").is_file():
        raise InputError(
            "not a run folder (no data/stats.json) nor a prepared dataset (no stats.json); "
            "run `behaviorlm run` or `behaviorlm prepare` first",
            file=str(root),
        )
    config_path = root / "config.yaml"
    config = load_config(config_path) if config_path.is_file() else RunConfig()
    settings = dict(dtype=config.model.dtype,
                    trust_remote_code=allowed_remote_code(config.model, trust_remote_code, config_path),
                    prompt_format=config.prompt.format)
    stats = PreparedData(root / "data").stats
    model_dir = choose_model(root, model_name)
    if model_dir is None:
        base = base_model or inside_run(root, config.model.name, "model.name", config_path, "--base-model")
        label = f"{base} (zero-shot)"
        run_adapter = None
    else:
        info_path = model_dir / "model.json"
        info = read_model_json(model_dir)
        base = base_model or inside_run(root, str(info["base_model"]), "base_model", info_path, "--base-model")
        label = model_dir.name
        run_adapter = None
        settings["prompt_format"] = (info.get("prompt") or {}).get("format", settings["prompt_format"])
        if info.get("adapter") and adapter is None:
            run_adapter = Path(inside_run(root, str(info["adapter"]), "adapter", info_path, "--adapter",
                                          always_path=True))
            if not run_adapter.exists():
                raise InputError(f"adapter {info['adapter']!r} is missing", file=str(info_path))
    final_adapter = Path(adapter) if adapter else run_adapter
    source = ModelSource(label, base, final_adapter, **settings, behavior_tokens=hybrid(final_adapter))
    return stats, config.data.history_len, source, config.eval.batch_size


def hybrid(adapter: Path | None) -> bool:
    """Whether ``adapter`` is a llara one, whose prompts carry hybrid behavior tokens."""
    if adapter is None:
        return False
    from behaviorlm.lm.hybrid import is_hybrid

    return is_hybrid(adapter)


def inside_run(root: Path, name: str, key: str, named_in: Path, option: str, always_path: bool = False) -> str:
    """``name`` if it is no local path (a hub id, the embedded model) or a path inside ``root``; else InputError.

    ``always_path``: ``name`` is a path relative to ``root`` (or absolute), returned joined to it. Otherwise it
    is a model name, a local path when a folder of that name exists (that is how the loader takes it) or when it
    looks like one (absolute, ~, ./ or ../). Symbolic links and ``..`` are resolved before the check.
    """
    path = root / Path(name).expanduser() if always_path else Path(name).expanduser()
    if not (always_path or path.is_dir() or name.startswith(("/", "~", "./", "../"))):
        return name
    if not path.resolve().is_relative_to(root.resolve()):
        raise InputError(f"{key} {name!r} lies outside the run folder; a run may only name files inside itself "
                         f"(pass {option} to load it anyway)", file=str(named_in))
    return str(path) if always_path else name


def read_model_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "model.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read ({exc})", file=str(path)) from None
    if not isinstance(info, dict) or not info.get("base_model"):
        raise InputError("expected an object with 'base_model'", file=str(path))
    return info


def choose_model(root: Path, model_name: str | None) -> Path | None:
    """The run's model folder to serve; None = the config's base model, zero-shot.

    Default order: "behaviorlm", then any tuned model (alphabetical), then a recorded zero-shot model.
    """
    models = sorted(p.parent for p in root.glob("*/model.json"))
    if model_name is not None:
        for path in models:
            if path.name == model_name:
                return path
        if model_name == "zero-shot":
            return None
        available = ", ".join(p.name for p in models) or "none"
        raise InputError(f"no model {model_name!r} in this run (available: {available})", file=str(root))
    by_name = {p.name: p for p in models}
    if "behaviorlm" in by_name:
        return by_name["behaviorlm"]
    tuned = [p for p in models if read_model_json(p).get("adapter")]
    if tuned:
        return tuned[0]
    return models[0] if models else None
