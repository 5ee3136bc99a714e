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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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


def event_text(event: Event) -> str:
    """``(day, hour, place, behavior)``; logs without places (e.g. check-ins) drop the field to save tokens."""
    if not event.place:
        return f"({DAYS[event.time.weekday()]}, {event.time.hour}, {event.behavior})"
    return f"({context_text(event.time, event.place)}, {event.behavior})"


def render(
    history: tuple[Event, ...] | list[Event],
    next_time: datetime,
    next_place: str,
    candidates: list[str],
    format_id: int = 0,
    answer: str | None = None,
) -> Prompt:
    user = FORMATS[format_id].format(
        history=", ".join(event_text(e) for e in history),
        next_info=f"({context_text(next_time, next_place)})",
        candidates=", ".join(candidates),
    )
    return Prompt(system=f"{ROLE} {TASK}", user=user, answer=answer)


def format_for(sample_id: str, seed: int = 0) -> int:
    """The instruction format of a sample: drawn at random, but fixed per (sample, seed) so reruns agree."""
    return random.Random(f"{seed}:{sample_id}").randrange(len(FORMATS))


def render_sample(sample: Sample, candidates: list[str], seed: int = 0, with_answer: bool = True) -> Prompt:
    return render(
        sample.history,
        sample.target.time,
        sample.target.place,
        candidates,
        format_for(sample.sample_id, seed),
        answer=sample.label if with_answer else None,
    )


def render_segment(
    events: Sequence[Event],
    candidates: Sequence[str],
    targets: Sequence[int] = (),
    learn_only_targets: bool = True,
) -> list[dict]:
    """A stretch of one user's events as a packed conversation (see module docstring).

    The events before the first target are its history, written once in the first user turn as the paper's
    "(day, hour, place, behavior)" items; every event from the first target on is a turn pair. Assistant turns whose
    event index is not in ``targets`` carry ``"target": False`` when ``learn_only_targets``: they are history, neither
    trained on nor scored (``lm.ranking.ChatFormat``). A segment with one target is the paper's prompt, reworded.
    """
    wanted = set(targets)
    first = min(wanted, default=0)
    history = ", ".join(event_text(e) for e in events[:first]) or "nothing"
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


def render_packed(history: Sequence[Event], next_time: datetime, next_place: str, candidates: Sequence[str]) -> Prompt:
    """The packed format's prompt for one next event: a segment whose only target follows ``history``
    (system turn + first user turn of ``render_segment``), as a model tuned in the packed format reads it."""
    messages = render_segment([*history, Event(next_time, next_place, "")], candidates, targets=(len(history),))
    return Prompt(system=messages[0]["content"], user=messages[1]["content"], answer=None)
