"""Packed segments: stretches of one user's log in which many samples are targets at once.

A user's log is one sequence, and consecutive samples share all but one history event. A segment renders a
stretch of consecutive events once (``prompts.render_segment``: one turn pair per event) and marks the events
that stand for samples as targets; a target sees the events before it in its segment, at least the ``L`` of its
sample's history. Training learns every target of a segment in one forward pass, and scoring ranks the
candidates at every target after one forward pass (``lm.ranking.CandidateRanker.rank_segments``).

Sample ids are ``user:position`` (position of the target in the user's log, see ``data/samples.py``), so the
events of a user are known at every position any sample covers (its history and its target); the ``context``
samples given to ``pack`` only supply events (e.g. the whole split, to join targets that lie a few events apart).
A sample whose id has no position becomes a segment of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from behaviorlm.data.types import Event, Sample

JOIN_GAP = 16
"""Join the next target to a segment when its history starts at most this many events after the segment ends:
rendering the gap as turn pairs (~21 tokens an event) costs less than a new segment's instruction, candidates and
history (~340 tokens at L = 10 with 35 behaviors)."""


@dataclass(frozen=True)
class Segment:
    user_id: str
    events: tuple[Event, ...]
    targets: tuple[int, ...]
    """Indices into ``events`` of the events that are targets, ascending."""
    sample_ids: tuple[str, ...]
    """The sample each target stands for (same order as ``targets``)."""


def position(sample: Sample) -> int | None:
    """The target's position in its user's log, from the ``user:position`` sample id; None when it has none."""
    head, sep, tail = sample.sample_id.rpartition(":")
    if not sep or head != sample.user_id or not tail.isdigit():
        return None
    return int(tail)


def user_logs(samples: Iterable[Sample]) -> dict[str, dict[int, Event]]:
    """Per user, the events at every position the samples cover."""
    logs: dict[str, dict[int, Event]] = defaultdict(dict)
    for sample in samples:
        at = position(sample)
        if at is None:
            continue
        log = logs[sample.user_id]
        log[at] = sample.target
        for offset, event in enumerate(reversed(sample.history), start=1):
            log.setdefault(at - offset, event)
    return logs


def pack(
    targets: Sequence[Sample],
    max_events: int,
    context: Iterable[Sample] = (),
    join_gap: int = JOIN_GAP,
) -> list[Segment]:
    """Segments in which every sample of ``targets`` is a target exactly once.

    A segment starts at the history of its first target and holds at most ``max_events`` events (never fewer
    than one sample's history and target). Consecutive targets of a user share a segment while their events are
    known (from ``targets`` or ``context``) and the gap between them is at most ``join_gap`` events; so a split's
    samples, all targets, become segments of ``max_events`` events that overlap by one history.
    """
    targets = list(targets)
    users = {s.user_id for s in targets}
    logs = user_logs([*(s for s in context if s.user_id in users), *targets])
    segments: list[Segment] = []
    by_user: dict[str, list[tuple[int, Sample]]] = defaultdict(list)
    for sample in targets:
        at = position(sample)
        if at is None or not sample.history:
            segments.append(Segment(sample.user_id, (*sample.history, sample.target), (len(sample.history),),
                                    (sample.sample_id,)))
        else:
            by_user[sample.user_id].append((at, sample))
    for user, items in by_user.items():
        segments += _pack_user(user, sorted(items, key=lambda item: item[0]), logs[user], max_events, join_gap)
    return segments


def _pack_user(user: str, items: list[tuple[int, Sample]], log: dict[int, Event], max_events: int,
               join_gap: int) -> list[Segment]:
    out: list[Segment] = []
    start = end = -1
    chosen: list[tuple[int, Sample]] = []

    def close() -> None:
        if chosen:
            events = tuple(log[p] for p in range(start, end + 1))
            targets = tuple(p - start for p, _ in chosen)
            out.append(Segment(user, events, targets, tuple(s.sample_id for _, s in chosen)))

    for at, sample in items:
        first = at - len(sample.history)
        joinable = (chosen and first <= end + 1 + join_gap and at - start < max_events
                    and all(p in log for p in range(end + 1, at)))
        if joinable:
            end = at
            chosen.append((at, sample))
            continue
        close()
        start, end, chosen = first, at, [(at, sample)]
    close()
    return out


def target_count(segments: Sequence[Segment]) -> int:
    return sum(len(s.targets) for s in segments)
