from datetime import datetime, timedelta

from behaviorlm.config import SelectionConfig
from behaviorlm.data.types import Event, Sample
from behaviorlm.recipe.selection import select_balanced

ANCHORS = {"A1", "A2"}
T0 = datetime(2024, 3, 4, 8)


def make_samples(counts: dict[str, int]) -> list[Sample]:
    out = []
    for behavior, n in counts.items():
        for i in range(n):
            target = Event(T0 + timedelta(hours=i), "home", behavior)
            out.append(Sample(f"{behavior}-{i}", "u", (Event(T0, "home", "A1"),), target))
    return out


class ScriptedScorer:
    """Predicts from a per-sample table and counts what it was asked to score."""

    def __init__(self, table: dict[str, str]):
        self.table = table
        self.calls = 0
        self.seen: list[str] = []

    def __call__(self, samples):
        self.calls += 1
        self.seen += [s.sample_id for s in samples]
        return [self.table.get(s.sample_id, s.label) for s in samples]


def test_keeps_only_same_category_mistakes_and_stops_early():
    samples = make_samples({"A1": 40, "T1": 40})
    # every A1 sample is mistaken for A2 (same category); T1 samples for A1 (other category)
    table = {f"A1-{i}": "A2" for i in range(40)} | {f"T1-{i}": "A1" for i in range(40)}
    scorer = ScriptedScorer(table)
    config = SelectionConfig(per_behavior=5, max_scan_per_behavior=40, seed=1)
    result = select_balanced(samples, ANCHORS, scorer, config, chunk_size=4)

    a1 = [s for s in result.samples if s.label == "A1"]
    assert len(a1) == 5 and all(table[s.sample_id] == "A2" for s in a1)
    assert result.kinds["A1"] == {"dds_cds": 5, "dds_only": 0, "random": 0}
    # early stop: A1 needed 5 qualifying samples -> two chunks of 4, not all 40
    assert result.scanned["A1"] == 8
    # T1 never yields a same-category mistake: scanned to the cap, filled with other mistakes
    assert result.scanned["T1"] == 40
    assert result.kinds["T1"] == {"dds_cds": 0, "dds_only": 5, "random": 0}
    assert result.scored == 48 == len(scorer.seen)
    # the model never answered a tail behavior: what makes CDS pick nothing of T1
    assert result.answered == {"anchor": 48, "tail": 0} == result.summary()["answered"]


def test_fills_with_random_samples_when_mistakes_run_out():
    samples = make_samples({"A1": 10, "T2": 3})
    table = {"A1-0": "A2"}  # one qualifying mistake, everything else predicted correctly
    config = SelectionConfig(per_behavior=4, max_scan_per_behavior=10, seed=0)
    result = select_balanced(samples, ANCHORS, ScriptedScorer(table), config, chunk_size=3)
    assert result.kinds["A1"] == {"dds_cds": 1, "dds_only": 0, "random": 3}
    assert "A1-0" in {s.sample_id for s in result.samples}
    # a behavior with fewer samples than F gives what it has
    assert result.kinds["T2"] == {"dds_cds": 0, "dds_only": 0, "random": 3}
    ids = [s.sample_id for s in result.samples]
    assert len(ids) == len(set(ids)) == 7


def test_scan_cap_limits_scoring():
    samples = make_samples({"A1": 100})
    scorer = ScriptedScorer({})
    result = select_balanced(samples, ANCHORS, scorer, SelectionConfig(per_behavior=5, max_scan_per_behavior=12), chunk_size=8)
    assert result.scored == 12 and len(scorer.seen) == 12
    assert result.kinds["A1"] == {"dds_cds": 0, "dds_only": 0, "random": 5}


def test_without_dds_selection_is_uniform_and_scores_nothing():
    samples = make_samples({"A1": 30, "T1": 30})
    scorer = ScriptedScorer({})
    config = SelectionConfig(per_behavior=6, difficulty=False, seed=3)
    result = select_balanced(samples, ANCHORS, scorer, config)
    assert scorer.calls == 0 and result.scored == 0
    assert sorted(result.kinds) == ["A1", "T1"] and all(k["random"] == 6 for k in result.kinds.values())
    again = select_balanced(samples, ANCHORS, scorer, config)
    assert [s.sample_id for s in again.samples] == [s.sample_id for s in result.samples]


def test_without_cds_any_mistake_qualifies_in_scan_order():
    samples = make_samples({"T1": 20})
    table = {f"T1-{i}": "A1" for i in range(20)}  # every mistake crosses the anchor/tail line
    config = SelectionConfig(per_behavior=4, contrastive=False, max_scan_per_behavior=20)
    result = select_balanced(samples, ANCHORS, ScriptedScorer(table), config, chunk_size=4)
    assert len(result.samples) == 4 and result.scanned["T1"] == 4
    assert result.kinds["T1"] == {"dds_cds": 0, "dds_only": 4, "random": 0}
    with_cds = select_balanced(samples, ANCHORS, ScriptedScorer(table), config.model_copy(update={"contrastive": True}), chunk_size=4)
    assert with_cds.scanned["T1"] == 20  # with CDS none qualifies, so the scan runs to the cap
