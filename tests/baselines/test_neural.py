import numpy as np
import pytest

from behaviorlm.baselines.bert4rec import BERT4Rec
from behaviorlm.baselines.neural import subsample
from behaviorlm.baselines.sasrec import SASRec
from behaviorlm.data.types import Sample
from behaviorlm.errors import InputError

from .helpers import CYCLE, cyclic_samples, cyclic_splits, random_samples

MODELS = [SASRec, BERT4Rec]


def accuracy(model, samples: list[Sample]) -> float:
    proba = model.predict_proba(samples)
    return float(np.mean([model.candidates[i] == s.label for i, s in zip(proba.argmax(1), samples)]))


@pytest.mark.parametrize("cls", MODELS)
def test_learns_a_deterministic_cycle(cls):
    splits = cyclic_splits()
    model = cls(list(CYCLE), epochs=30, patience=3, batch_size=16, progress=False).fit(splits["train"], splits["valid"])
    assert accuracy(model, splits["test"]) >= 0.95
    assert model.history[model.best_epoch - 1]["valid_accuracy"] == max(h["valid_accuracy"] for h in model.history)


@pytest.mark.parametrize("cls", MODELS)
def test_does_not_see_the_target(cls):
    """On unpredictable sequences a model that peeked at the label would still score far above chance."""
    train, test = random_samples(8, 30, prefix="a"), random_samples(4, 30, prefix="b")
    model = cls(list(CYCLE), epochs=8, patience=8, batch_size=32, progress=False).fit(train, [])
    assert accuracy(model, test) < 0.4


@pytest.mark.parametrize("cls", MODELS)
def test_same_seed_same_probabilities_and_shapes(cls):
    splits = cyclic_splits()
    runs = [cls(list(CYCLE), epochs=1, seed=3, batch_size=32, progress=False).fit(splits["train"], splits["valid"])
            for _ in range(2)]
    first, second = (m.predict_proba(splits["test"]) for m in runs)
    assert first.shape == (len(splits["test"]), len(CYCLE))
    np.testing.assert_allclose(first.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first, second)
    other = cls(list(CYCLE), epochs=1, seed=4, batch_size=32, progress=False).fit(splits["train"], splits["valid"])
    assert not np.array_equal(first, other.predict_proba(splits["test"]))


@pytest.mark.parametrize("cls", MODELS)
def test_short_long_and_unknown_histories(cls):
    train = cyclic_samples(4, 10, history=4)
    model = cls(list(CYCLE), epochs=1, batch_size=16, progress=False).fit(train, [])
    assert model.max_len == 4
    base = cyclic_samples(1, 1, history=9, prefix="x")[0]
    odd = [
        Sample("empty", "x", (), base.target),
        Sample("long", "x", base.history, base.target),  # longer than max_len: truncated to the last 4
        Sample("unknown", "x", tuple(e.__class__(e.time, "never-seen-place", "Not a candidate") for e in base.history),
               base.target),
    ]
    proba = model.predict_proba(odd)
    assert proba.shape == (3, len(CYCLE)) and np.isfinite(proba).all()
    truncated = Sample("tail", "x", base.history[-4:], base.target)
    np.testing.assert_allclose(proba[1], model.predict_proba([truncated])[0], rtol=1e-5)


def test_train_fraction_is_a_seeded_subset():
    samples = cyclic_samples(5, 20)
    half = subsample(samples, 0.5, seed=1)
    assert len(half) == 50 and half == subsample(samples, 0.5, seed=1) and half != subsample(samples, 0.5, seed=2)
    assert [s.sample_id for s in half] == [s.sample_id for s in samples if s in half]  # original order kept
    assert len(subsample(samples, 0.5, max_samples=10)) == 10
    model = SASRec(list(CYCLE), epochs=1, train_fraction=0.25, progress=False).fit(samples, [])
    assert model.train_samples == 25
    with pytest.raises(InputError):
        subsample(samples, 0.0)
    with pytest.raises(InputError):
        subsample(samples, 1.5)
