from datetime import datetime

import numpy as np
import pytest

from behaviorlm.baselines.markov import MarkovChain, MostFrequent
from behaviorlm.data.types import Event, Sample

CANDIDATES = ["A", "B", "C", "D"]
T = datetime(2024, 1, 1, 9)


def sample(history: str, target: str, i: int = 0) -> Sample:
    return Sample(f"s{i}", "u", tuple(Event(T, "", b) for b in history), Event(T, "", target))


def test_markov_learns_a_known_transition_and_backs_off():
    # A -> B always, B -> C always; D never seen as a last behavior; C is the most frequent target overall.
    train = [sample("DA", "B", i) for i in range(10)] + [sample("AB", "C", i) for i in range(10)] \
        + [sample("DC", "C", i) for i in range(5)]
    model = MarkovChain(CANDIDATES).fit(train, [])
    proba = model.predict_proba([sample("CA", "?"), sample("AB", "?"), sample("AD", "?"), sample("", "?")])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert [CANDIDATES[i] for i in proba.argmax(1)] == ["B", "C", "C", "C"]
    assert proba[0, 1] > 0.85  # 10 observations of A -> B
    np.testing.assert_allclose(proba[2], model.prior)  # unseen last behavior: the global distribution
    assert (proba > 0).all()  # smoothing keeps every candidate possible


def test_markov_smoothing_pulls_rare_contexts_to_the_prior():
    train = [sample("A", "B")] + [sample("C", "D", i) for i in range(20)]
    weak, strong = (MarkovChain(CANDIDATES, alpha=a).fit(train, []).predict_proba([sample("A", "?")])[0] for a in (0.1, 50))
    assert CANDIDATES[weak.argmax()] == "B" and CANDIDATES[strong.argmax()] == "D"


def test_most_frequent_in_history_with_global_tie_break():
    train = [sample("A", "C", i) for i in range(5)] + [sample("A", "B", i) for i in range(3)]
    model = MostFrequent(CANDIDATES).fit(train, [])
    proba = model.predict_proba([sample("AAB", "?"), sample("ABDB", "?"), sample("AB", "?"), sample("DA", "?"),
                                 sample("", "?")])
    # ties: B (3 training targets) beats A and D (0); C is the global favourite
    assert [CANDIDATES[i] for i in proba.argmax(1)] == ["A", "B", "B", "A", "C"]
    np.testing.assert_allclose(proba.sum(1), 1.0)
    ranked = np.argsort(-proba[0], kind="stable")
    assert [CANDIDATES[i] for i in ranked] == ["A", "B", "C", "D"]


@pytest.mark.parametrize("cls", [MarkovChain, MostFrequent])
def test_train_fraction_and_unfitted(cls):
    train = [sample("A", "B", i) for i in range(40)]
    assert cls(CANDIDATES, train_fraction=0.25).fit(train, []).train_samples == 10
    with pytest.raises(RuntimeError):
        cls(CANDIDATES).predict_proba(train)
