"""Packing samples into segments of their users' logs."""

from __future__ import annotations

from datetime import datetime, timedelta

from behaviorlm.data.segments import pack, position, user_logs
from behaviorlm.data.types import Event, Sample

L = 3


def user_samples(user: str, n_events: int) -> list[Sample]:
    """Every (last-L -> next) sample of a user whose log is n_events hourly events; ids "user:position"."""
    log = [Event(datetime(2024, 5, 6) + timedelta(hours=i), f"place{i % 4}", f"b{i % 5}") for i in range(n_events)]
    return [Sample(f"{user}:{i}", user, tuple(log[i - L:i]), log[i]) for i in range(L, n_events)]


def targets_of(segments) -> list[str]:
    return [i for s in segments for i in s.sample_ids]


def test_every_sample_is_a_target_exactly_once_with_its_history_before_it():
    samples = user_samples("u1", 40) + user_samples("u2", 25)
    segments = pack(samples, max_events=L + 8)
    assert sorted(targets_of(segments)) == sorted(s.sample_id for s in samples)
    by_id = {s.sample_id: s for s in samples}
    for segment in segments:
        assert len(segment.events) <= L + 8
        for index, sample_id in zip(segment.targets, segment.sample_ids):
            sample = by_id[sample_id]
            assert index >= L
            assert segment.events[index] == sample.target
            assert segment.events[index - L:index] == sample.history


def test_a_split_packs_into_full_segments_that_overlap_by_one_history():
    samples = user_samples("u1", 3 + 24)
    segments = pack(samples, max_events=L + 8)
    assert [len(s.targets) for s in segments] == [8, 8, 8]
    assert segments[1].events[:L] == segments[0].events[-L:]


def test_context_joins_nearby_targets_and_far_ones_get_their_own_segment():
    everything = user_samples("u1", 60)
    chosen = [everything[i] for i in (0, 4, 40)]  # positions 3, 7 (near) and 43 (far)
    alone = pack(chosen, max_events=50, join_gap=2)
    assert [s.sample_ids for s in alone] == [("u1:3", "u1:7"), ("u1:43",)]  # 7's history 4..6 touches 3
    joined = pack(chosen, max_events=50, context=everything, join_gap=40)
    assert [s.sample_ids for s in joined] == [("u1:3", "u1:7", "u1:43")]
    assert len(joined[0].events) == 44  # positions 0..43, the gap read from the context


def test_samples_without_a_position_stand_alone():
    sample = user_samples("u1", 5)[0]
    odd = Sample("no-position", "u1", sample.history, sample.target)
    [segment] = pack([odd], max_events=20)
    assert segment.events == (*sample.history, sample.target) and segment.targets == (L,)
    assert position(odd) is None and position(sample) == L
    assert user_logs([sample])["u1"] == {i: e for i, e in enumerate((*sample.history, sample.target))}
