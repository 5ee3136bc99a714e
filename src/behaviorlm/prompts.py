"""The paper's prompt (Section 3.1.1) in its three instruction formats (Appendix D), and the packed format.

A prompt has five parts: task definition, role-play instruction, the history as
"(day, hour, place, behavior)" items, the next event's day/hour/place ("next-intent-info")
and the candidate set; the answer is the next behavior. The model code adds the chat template:
the system turn carries the role and task, the user turn the instruction, the assistant turn the answer.

The packed format (``render_segment``) renders a stretch of one user's log as one conversation: the system turn
carries the role and task, the first user turn the instruction, the candidate set and the first target's history,
then one turn pair per event: the user turn holds the event's day, hour and place (the paper's next-intent-info), the
assistant turn its behavior. The instruction, history and candidates are read once for the whole stretch, and every
assistant turn can be a target.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from behaviorlm.data.types import Event, Sample

ROLE = "You are a smart mobile assistant that can infer the user's behavior preferences based on their history."
TASK = "Predict the user's next behavior from the candidates."

FORMATS = (
    "This user has done behaviors {history} in the previous. "
    "Day of the week, the hour, and the place of the next behavior are {next_info}, respectively. "
    "Choose the answer from the following behavior candidate set: {candidates}. The answer is",
    "The user's historical behavior information sequence is: {history}. "
    "Day of the week, the hour, and the place of the next behavior are {next_info}, respectively. "
    "Given the following behavior candidate set: {candidates}, recommend one intention for this user to do next. "
    "The intent you recommend is",
    "The behavior history of this user is: {history}. "
    "Day of the week, the hour, and the place of the next behavior are {next_info}, respectively. "
    "Recommend a next intention for this user to do from the following behavior candidate set: {candidates}. "
    "The recommendation is",
)

PACKED_INSTRUCTION = (
    "Choose each answer from the following behavior candidate set: {candidates}. "
    "This user has done behaviors {history} in the previous. "
    "I will tell you, one at a time, the day of the week, the hour and the place of each of this user's next "
    "behaviors; answer each with the behavior the user did. The first one is: {context}"
)
"""The candidate set comes first, so every packed conversation of a call starts with the same tokens (system turn,
instruction, candidates): a scorer encodes them once for all (``CandidateRanker``)."""

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    answer: str | None

    def messages(self, with_answer: bool = False) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]
        if with_answer and self.answer is not None:
            msgs.append({"role": "assistant", "content": self.answer})
        return msgs

    def plain_text(self) -> str:
        """For models without a chat template."""
        return f"{self.system}\n{self.user}"


def context_text(time: datetime, place: str) -> str:
    return f"{DAYS[time.weekday()]}, {time.hour}, {place or 'unknown place'}"


def packed_context_text(event: Event) -> str:
    """An event's context in the packed format; logs without places drop the field, as ``event_text`` does."""
    day = DAYS[event.time.weekday()]
    return f"{day}, {event.time.hour}, {event.place}" if event.place else f"{day}, {event.time.hour}"


def event_text(event: Event, token: str = "") -> str:
    """``(day, hour, place, behavior)``; logs without places (e.g. check-ins) drop the field to save tokens.
    ``token``: written after the behavior's name (a hybrid behavior token, ``behavior_token``)."""
    behavior = f"{event.behavior} {token}" if token else event.behavior
    if not event.place:
        return f"({DAYS[event.time.weekday()]}, {event.time.hour}, {behavior})"
    return f"({context_text(event.time, event.place)}, {behavior})"


def behavior_token(index: int) -> str:
    """The hybrid token of candidate ``index``: the llara variant (``lm.hybrid``) adds it to the tokenizer and
    replaces its input embedding by the behavior's projected SASRec embedding."""
    return f"<|behavior_{index}|>"


def history_text(events: Sequence[Event], candidates: Sequence[str] = (), behavior_tokens: bool = False) -> str:
    """The history items, comma-separated; with ``behavior_tokens`` each candidate's name is followed by its
    ``behavior_token``."""
    index = {name: i for i, name in enumerate(candidates)} if behavior_tokens else {}
    return ", ".join(event_text(e, behavior_token(index[e.behavior]) if e.behavior in index else "")
                     for e in events)


def render(
    history: tuple[Event, ...] | list[Event],
    next_time: datetime,
    next_place: str,
    candidates: list[str],
    format_id: int = 0,
    answer: str | None = None,
    behavior_tokens: bool = False,
) -> Prompt:
    user = FORMATS[format_id].format(
        history=history_text(history, candidates, behavior_tokens),
        next_info=f"({context_text(next_time, next_place)})",
        candidates=", ".join(candidates),
    )
    return Prompt(system=f"{ROLE} {TASK}", user=user, answer=answer)


def format_for(sample_id: str, seed: int = 0) -> int:
    """The instruction format of a sample: drawn at random, but fixed per (sample, seed) so reruns agree."""
    return random.Random(f"{seed}:{sample_id}").randrange(len(FORMATS))


def render_sample(sample: Sample, candidates: list[str], seed: int = 0, with_answer: bool = True,
                  behavior_tokens: bool = False) -> Prompt:
    return render(
        sample.history,
        sample.target.time,
        sample.target.place,
        candidates,
        format_for(sample.sample_id, seed),
        answer=sample.label if with_answer else None,
        behavior_tokens=behavior_tokens,
    )


def render_segment(
    events: Sequence[Event],
    candidates: Sequence[str],
    targets: Sequence[int] = (),
    learn_only_targets: bool = True,
    behavior_tokens: bool = False,
) -> list[dict]:
    """A stretch of one user's events as a packed conversation (see module docstring).

    The events before the first target are its history, written once in the first user turn as the paper's
    "(day, hour, place, behavior)" items; every event from the first target on is a turn pair. Assistant turns whose
    event index is not in ``targets`` carry ``"target": False`` when ``learn_only_targets``: they are history, neither
    trained on nor scored (``lm.ranking.ChatFormat``). A segment with one target is the paper's prompt, reworded.
    ``behavior_tokens``: the history items carry hybrid tokens (``history_text``); the turn pairs never do, their
    assistant turns being answers.
    """
    wanted = set(targets)
    first = min(wanted, default=0)
    history = history_text(events[:first], candidates, behavior_tokens) or "nothing"
    messages: list[dict] = [{"role": "system", "content": f"{ROLE} {TASK}"}]
    for i in range(first, len(events)):
        context = packed_context_text(events[i])
        if i == first:
            context = PACKED_INSTRUCTION.format(history=history, candidates=", ".join(candidates), context=context)
        messages.append({"role": "user", "content": context})
        turn = {"role": "assistant", "content": events[i].behavior}
        if learn_only_targets and i not in wanted:
            turn["target"] = False
        messages.append(turn)
    return messages


def render_packed(history: Sequence[Event], next_time: datetime, next_place: str, candidates: Sequence[str],
                  behavior_tokens: bool = False) -> Prompt:
    """The packed format's prompt for one next event: a segment whose only target follows ``history``
    (system turn + first user turn of ``render_segment``), as a model tuned in the packed format reads it."""
    messages = render_segment([*history, Event(next_time, next_place, "")], candidates, targets=(len(history),),
                              behavior_tokens=behavior_tokens)
    return Prompt(system=messages[0]["content"], user=messages[1]["content"], answer=None)


# --- reading a rendered prompt back ----------------------------------------------------------------------

FIRST_MONDAY = datetime(2024, 1, 1)
"""Prompts name only the weekday and hour of each event; ``parse`` places them in the week of this Monday on."""


@dataclass(frozen=True)
class ParsedPrompt:
    history: list[Event]
    next_time: datetime
    next_place: str
    candidates: list[str]


def parse(user: str, behaviors: Collection[str]) -> ParsedPrompt:
    """The history, next event's context and candidate set of a prompt's user turn as ``render`` (any of the three
    formats) or ``render_packed`` wrote it; ValueError with the reason when the text is neither.

    Names may contain commas, so a history item's behavior and each candidate are found among ``behaviors``.
    The text has weekdays and hours, not dates: each event gets the earliest time on or after the previous one
    with its weekday and hour (the first from Monday 2024-01-01), so the order and the rendered text are kept.
    """
    text = user.strip()
    for template in (*FORMATS, PACKED_INSTRUCTION):
        fields = _fill(template, text)
        if fields is not None:
            break
    else:
        raise ValueError("not a behavior prompt in any of this project's formats: expected the paper's wording, "
                         "e.g. 'This user has done behaviors (Monday, 8, home, Breakfast), ... The answer is'")
    known = set(behaviors)
    packed = "context" in fields
    history_text = fields["history"]
    items = [] if history_text == "" or packed and history_text == "nothing" else _items(history_text)
    history, time = [], FIRST_MONDAY
    for i, item in enumerate(items):
        day, hour, rest = _day_hour(item, f"history item {i + 1}")
        place, behavior = _place_and_behavior(rest, known, f"history item {i + 1}")
        time = _on_or_after(time, day, hour)
        history.append(Event(time, place, behavior))
    if packed:
        day, hour, place = _day_hour(fields["context"], "the next event", place_optional=True)
    else:
        context = fields["next_info"]
        if not (context.startswith("(") and context.endswith(")")):
            raise ValueError(f"the next event's context {context!r} is not in parentheses")
        day, hour, place = _day_hour(context[1:-1], "the next event")
        place = "" if place == "unknown place" else place
    return ParsedPrompt(history, _on_or_after(time, day, hour), place, split_names(fields["candidates"], known))


def _fill(template: str, text: str) -> dict[str, str] | None:
    """The placeholders' values when ``text`` has ``template``'s wording, else None. Each value ends at the first
    occurrence of the wording after it (a linear scan: no regular expression to backtrack on long input)."""
    parts = re.split(r"\{(\w+)\}", template)
    literals, names = parts[0::2], parts[1::2]
    if not text.startswith(literals[0]) or not text.endswith(literals[-1]):
        return None
    fields, pos, end = {}, len(literals[0]), len(text) - len(literals[-1])
    for i, (name, literal) in enumerate(zip(names, literals[1:]), 1):
        stop = end if i == len(names) else text.find(literal, pos, end)
        if stop < pos:
            return None
        fields[name], pos = text[pos:stop], stop + len(literal)
    return fields


def _items(text: str) -> list[str]:
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError(f"the history {_clip(text)!r} is not a list of '(day, hour, place, behavior)' items")
    return text[1:-1].split("), (")


def _day_hour(item: str, where: str, place_optional: bool = False) -> tuple[int, int, str]:
    parts = item.split(", ", 2)
    if len(parts) < (2 if place_optional else 3) or parts[0] not in DAYS or not parts[1].isdigit() \
            or not 0 <= int(parts[1]) <= 23:
        raise ValueError(f"{where}: expected '(day of the week, hour 0-23, ...)', got {_clip(item)!r}")
    return DAYS.index(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else ""


def _place_and_behavior(rest: str, known: set[str], where: str) -> tuple[str, str]:
    if rest in known:
        return "", rest
    endings = [name for name in known if rest.endswith(f", {name}")]
    if not endings:
        raise ValueError(f"{where}: {_clip(rest)!r} does not end with a known behavior")
    name = max(endings, key=len)
    return rest[:-len(name) - 2], name


def split_names(text: str, known: Collection[str]) -> list[str]:
    """``", ".join(names)`` split back into the names, which may themselves contain ", "; ValueError naming the
    first part that is no known name."""
    names, pos = [], 0
    by_length = sorted(known, key=len, reverse=True)
    while pos < len(text):
        found = next((n for n in by_length if n and text.startswith(n, pos)
                      and (pos + len(n) == len(text) or text.startswith(", ", pos + len(n)))), None)
        if found is None:
            unknown = text[pos:].split(", ", 1)[0]
            raise ValueError(f"unknown behavior {_clip(unknown)!r} in the candidate set")
        names.append(found)
        pos += len(found) + 2
    return names


def _on_or_after(start: datetime, weekday: int, hour: int) -> datetime:
    time = datetime.combine(start.date(), datetime.min.time()).replace(hour=hour)
    time += timedelta(days=(weekday - time.weekday()) % 7)
    return time if time >= start else time + timedelta(days=7)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
