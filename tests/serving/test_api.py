"""The Python prediction API: validation, determinism, history window, batching and run-folder loading."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from behaviorlm.data.types import Event
from behaviorlm.errors import InputError
from behaviorlm.serving.api import PredictionInputError, Predictor, choose_model, resolve_run

from serving_helpers import BEHAVIORS, HISTORY_LEN, events, make_stats, write_dataset


def test_predict_returns_top_k_sorted_probabilities(predictor):
    out = predictor.predict(events(6), k=3)
    assert len(out) == 3
    assert {o["behavior"] for o in out} <= set(BEHAVIORS)
    probs = [o["probability"] for o in out]
    assert probs == sorted(probs, reverse=True)
    assert all(0 < p <= 1 for p in probs)
    full = predictor.predict(events(6), k=len(BEHAVIORS))
    assert sum(o["probability"] for o in full) == pytest.approx(1.0, abs=1e-4)
    assert full[:3] == out  # top-k is a prefix of the full ranking


def test_predict_is_deterministic_and_ignores_input_order(predictor):
    evs = events(6)
    first = predictor.predict(evs, k=4)
    assert predictor.predict(list(reversed(evs)), k=4) == first
    assert predictor.predict(evs, k=4) == first


def test_events_as_dataclasses_and_column_aliases(predictor):
    evs = events(5)
    as_events = [Event(datetime.fromisoformat(e["time"]), e["place"], e["behavior"]) for e in evs]
    aliased = [{"timestamp": e["time"], "location": e["place"], "behavior": e["behavior"]} for e in evs]
    expected = predictor.prompt_for(evs)
    assert predictor.prompt_for(as_events) == expected
    assert predictor.prompt_for(aliased) == expected


def test_prompt_uses_last_history_len_events_and_default_next_context(predictor):
    evs = events(7)
    prompt = predictor.prompt_for(evs).user
    kept = evs[-HISTORY_LEN:]
    assert prompt.count("Monday") == HISTORY_LEN + 1  # history items + the next event's context
    assert f"(Monday, {7 + 2}, " not in prompt  # the 3rd event fell out of the window
    last_hour = int(kept[-1]["time"][11:13])
    assert f"are (Monday, {last_hour}, {kept[-1]['place']})" in prompt  # next = last event's time and place
    for name in sorted(BEHAVIORS):
        assert name in prompt  # candidate set


def test_explicit_next_context(predictor):
    prompt = predictor.prompt_for(events(3), {"time": "2024-05-11T21:00:00", "place": "bar"}).user
    assert "are (Saturday, 21, bar)" in prompt
    # no place: the user is assumed to still be where the last event happened
    prompt = predictor.prompt_for(events(3), {"time": "2024-05-11T21:00:00"}).user
    assert f"are (Saturday, 21, {events(3)[-1]['place']})" in prompt


@pytest.mark.parametrize(
    ("bad_events", "next_context", "loc", "text"),
    [
        ([{"time": "2024-05-06T08:00", "place": "", "behavior": "Skydiving"}], None, ("events", 0, "behavior"), "unknown behavior 'Skydiving'"),
        ([{"time": "yesterday", "behavior": "Work"}], None, ("events", 0, "time"), "cannot parse 'yesterday'"),
        ([{"time": 1714982400, "behavior": "Work"}], None, ("events", 0, "time"), "ISO 8601"),
        ([{"behavior": "Work"}], None, ("events", 0), "missing 'time'"),
        ([{"time": "2024-05-06T08:00"}], None, ("events", 0), "missing 'behavior'"),
        ([{"time": "2024-05-06T08:00", "place": 3, "behavior": "Work"}], None, ("events", 0, "place"), "place must be text"),
        (["Work"], None, ("events", 0), "mapping or Event"),
        ([], None, ("events",), "at least one event"),
        (events(2), {"time": "2024-05-01T00:00"}, ("next", "time"), "before the last event"),
        (events(2), {"place": "home"}, ("next",), "with a 'time'"),
        (events(2), {"time": "soon"}, ("next", "time"), "cannot parse"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_field(predictor, bad_events, next_context, loc, text):
    with pytest.raises(PredictionInputError) as info:
        predictor.predict(bad_events, next_context)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InputError)
    assert info.value.loc == loc
    assert text in str(info.value)


@pytest.mark.parametrize("k", [0, -1, len(BEHAVIORS) + 1, True, 2.0])
def test_k_out_of_range(predictor, k):
    with pytest.raises(PredictionInputError, match="k must be an integer"):
        predictor.predict(events(3), k=k)


def test_predict_batch_matches_single_predictions(predictor):
    users = [(events(5), None), (events(3, start_hour=12), {"time": "2024-05-07T09:00", "place": "gym"}), (events(1), None)]
    batch = predictor.predict_batch(users, k=3)
    assert len(batch) == 3
    for (evs, ctx), got in zip(users, batch):
        single = predictor.predict(evs, ctx, k=3)
        assert [g["behavior"] for g in got] == [s["behavior"] for s in single]
        assert [g["probability"] for g in got] == pytest.approx([s["probability"] for s in single], abs=1e-4)
    with pytest.raises(PredictionInputError) as info:
        predictor.predict_batch([(events(2), None), ([{"time": "x", "behavior": "Work"}], None)])
    assert info.value.loc == ("requests", 1, "events", 0, "time")


def test_behavior_info_from_stats(predictor, tiny):
    info = {b["name"]: b for b in predictor.behavior_info()}
    assert info["Reading"]["group"] == "tail" and info["Breakfast"]["share"] == 0.3
    plain = Predictor(*tiny, BEHAVIORS[:3])
    assert plain.behaviors == sorted(BEHAVIORS[:3]) and plain.behavior_info()[0]["group"] is None


# --- loading a run or a dataset folder ----------------------------------------------------------------


def make_run(root, models: dict[str, str | None]):
    """A run folder with config.yaml, data/stats.json and RUN/<name>/model.json for each model."""
    write_dataset(root / "data")
    (root / "config.yaml").write_text("model:\n  name: base-model\n  dtype: float32\ndata:\n  history_len: 3\neval:\n  batch_size: 4\n")
    for name, adapter in models.items():
        (root / name).mkdir()
        if adapter:
            (root / adapter).mkdir(parents=True, exist_ok=True)
        (root / name / "model.json").write_text(json.dumps({"base_model": "base-model", "adapter": adapter, "prompt_seed": 0}))
    return root


def test_dataset_folder_serves_the_base_model_zero_shot(tmp_path, fake_load_model):
    write_dataset(tmp_path / "ds", history_len=3)
    predictor = Predictor.from_run(tmp_path / "ds")
    assert fake_load_model == [{"name": "smollm2-135m", "device": "auto", "dtype": "auto", "adapter": None, "trust_remote_code": False}]
    assert predictor.history_len == 3 and predictor.name == "smollm2-135m (zero-shot)"
    assert len(predictor.predict(events(4), k=2)) == 2
    Predictor.from_run(tmp_path / "ds", model_name="other/model", device="cpu")
    assert fake_load_model[-1]["name"] == "other/model" and fake_load_model[-1]["device"] == "cpu"


def test_run_folder_prefers_behaviorlm_then_a_tuned_model(tmp_path, fake_load_model):
    run = make_run(tmp_path / "run", {"zero-shot": None, "ft": "ft/adapter", "behaviorlm": "behaviorlm/b/adapter"})
    predictor = Predictor.from_run(run)
    assert predictor.name == "behaviorlm" and predictor.history_len == 3
    assert fake_load_model[-1]["adapter"] == str(run / "behaviorlm/b/adapter")
    assert fake_load_model[-1]["dtype"] == "float32" and fake_load_model[-1]["name"] == "base-model"
    assert Predictor.from_run(run, model_name="zero-shot").name == "zero-shot"
    assert fake_load_model[-1]["adapter"] is None

    run2 = make_run(tmp_path / "run2", {"zero-shot": None, "ft": "ft/adapter"})
    assert choose_model(run2, None).name == "ft"
    run3 = make_run(tmp_path / "run3", {})
    _, _, source, batch = resolve_run(run3, None)
    assert source.base_model == "base-model" and source.adapter is None and batch == 4


def test_run_folder_errors(tmp_path):
    run = make_run(tmp_path / "run", {"ft": "ft/adapter"})
    with pytest.raises(InputError, match="no model 'nope' in this run \\(available: ft\\)"):
        resolve_run(run, "nope")
    (run / "ft" / "adapter").rmdir()
    with pytest.raises(InputError, match="adapter 'ft/adapter' is missing"):
        resolve_run(run, None)
    with pytest.raises(InputError, match="not a run folder"):
        resolve_run(tmp_path / "empty", None)
    (run / "ft" / "model.json").write_text("{broken")
    with pytest.raises(InputError, match="cannot read"):
        resolve_run(run, "ft")


def test_behaviors_folded_at_preparation_are_accepted_under_their_own_names(tiny):
    stats = make_stats()
    stats.settings["vocabulary"] = {"fold_map": {"Yoga": "Gym", "Ghost": "Not a class"}}
    predictor = Predictor(*tiny, stats, history_len=HISTORY_LEN)
    assert predictor.knows("Yoga") and not predictor.knows("Ghost") and "Yoga" not in predictor.candidates
    evs = events(3)
    as_gym = [dict(e, behavior="Gym") for e in evs]
    as_yoga = [dict(e, behavior="Yoga") for e in evs]
    assert predictor.prompt_for(as_yoga) == predictor.prompt_for(as_gym)


def test_a_run_adapter_is_merged_for_serving(tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from behaviorlm.lm.loading import tiny_model

    def load_model(name, device="auto", dtype="auto", adapter=None, trust_remote_code=False):
        model, tokenizer = tiny_model(seed=1)
        assert adapter is not None
        # a non-trivial adapter (random B), so merging would show if it changed the predictions
        return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)), tokenizer

    monkeypatch.setattr("behaviorlm.lm.loading.load_model", load_model)
    run = make_run(tmp_path / "run", {"behaviorlm": "behaviorlm/adapter"})
    merged = Predictor.from_run(run)
    assert not hasattr(merged.model, "peft_config")
    unmerged_model, tokenizer = load_model("x", adapter="a")
    unmerged = Predictor(unmerged_model, tokenizer, merged.stats, history_len=merged.history_len)
    got, want = merged.predict(events(4), k=4), unmerged.predict(events(4), k=4)
    assert [g["behavior"] for g in got] == [w["behavior"] for w in want]
    assert [g["probability"] for g in got] == pytest.approx([w["probability"] for w in want], abs=1e-4)


# --- a run folder is not trusted ------------------------------------------------------------------------


def test_remote_code_runs_only_when_the_caller_allows_it(tmp_path, fake_load_model):
    run = make_run(tmp_path / "run", {"ft": "ft/adapter"})
    (run / "config.yaml").write_text("model:\n  name: base-model\n  trust_remote_code: true\n")
    with pytest.raises(InputError, match="model.trust_remote_code is true.*pass --trust-remote-code"):
        Predictor.from_run(run)
    assert fake_load_model == []  # refused before loading anything
    Predictor.from_run(run, trust_remote_code=True)
    assert fake_load_model[-1]["trust_remote_code"] is True
    make_run(tmp_path / "plain", {"ft": "ft/adapter"})
    Predictor.from_run(tmp_path / "plain")
    assert fake_load_model[-1]["trust_remote_code"] is False
    write_dataset(tmp_path / "ds")
    Predictor.from_run(tmp_path / "ds", model_name="org/custom", trust_remote_code=True)
    assert fake_load_model[-1] == {"name": "org/custom", "device": "auto", "dtype": "auto", "adapter": None,
                                   "trust_remote_code": True}


def test_paths_named_by_a_run_must_lie_inside_it(tmp_path, fake_load_model):
    run = make_run(tmp_path / "run", {"behaviorlm": "behaviorlm/adapter"})
    info = run / "behaviorlm" / "model.json"
    outside = tmp_path / "elsewhere" / "adapter"
    outside.mkdir(parents=True)
    for adapter in (str(outside), "../elsewhere/adapter", "behaviorlm/../../elsewhere/adapter"):
        info.write_text(json.dumps({"base_model": "base-model", "adapter": adapter}))
        with pytest.raises(InputError, match=f"adapter '{adapter}' lies outside the run folder.*--adapter"):
            resolve_run(run, None)
    (tmp_path / "escape").symlink_to(outside.parent)
    (run / "link").symlink_to(tmp_path / "escape")
    info.write_text(json.dumps({"base_model": "base-model", "adapter": "link/adapter"}))
    with pytest.raises(InputError, match="lies outside the run folder"):
        resolve_run(run, None)
    # an absolute path inside the run (as `behaviorlm evaluate --adapter` records it) is fine
    info.write_text(json.dumps({"base_model": "base-model", "adapter": str((run / "behaviorlm" / "adapter").resolve())}))
    assert resolve_run(run, None)[2].adapter == (run / "behaviorlm" / "adapter").resolve()
    # the command line decides for itself
    _, _, source, _ = resolve_run(run, None, adapter=outside)
    assert source.adapter == outside

    models = tmp_path / "models" / "llama"
    models.mkdir(parents=True)
    info.write_text(json.dumps({"base_model": str(models), "adapter": None}))
    with pytest.raises(InputError, match="base_model '.*llama' lies outside the run folder.*--base-model"):
        resolve_run(run, None)
    assert resolve_run(run, None, base_model=str(models))[2].base_model == str(models)
    (run / "llama").mkdir()
    info.write_text(json.dumps({"base_model": str(run / "llama"), "adapter": None}))
    assert resolve_run(run, None)[2].base_model == str(run / "llama")
    info.write_text(json.dumps({"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "adapter": None}))
    assert resolve_run(run, None)[2].base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id is no path
    (run / "config.yaml").write_text(f"model:\n  name: {models}\n")
    with pytest.raises(InputError, match="model.name .* lies outside the run folder"):
        resolve_run(run, "zero-shot")


def test_a_packed_run_is_served_in_the_packed_format(tmp_path, fake_load_model, tiny):
    import numpy as np

    from behaviorlm.lm.ranking import CandidateRanker
    from behaviorlm.prompts import render_segment

    run = make_run(tmp_path / "run", {"behaviorlm": "behaviorlm/adapter"})
    info = json.loads((run / "behaviorlm" / "model.json").read_text())
    (run / "behaviorlm" / "model.json").write_text(json.dumps({**info, "prompt": {"format": "packed"}}))
    predictor = Predictor.from_run(run)
    assert predictor.prompt_format == "packed"
    evs = events(5)
    [ranked] = predictor.predict_batch([(evs, None)], k=len(BEHAVIORS))

    # The same next event as the target of a packed segment, scored by the packed scorer.
    history = predictor.to_events(evs)[-predictor.history_len:]
    segment = [*history, Event(history[-1].time, history[-1].place, BEHAVIORS[0])]
    conversation = render_segment(segment, predictor.candidates, targets=(len(history),))
    model, tokenizer = tiny
    [scores] = CandidateRanker(model, tokenizer, progress=False).score_segments([conversation], predictor.candidates)
    probs = np.exp(scores[0] - scores[0].max())
    expected = dict(zip(predictor.candidates, probs / probs.sum()))
    assert {r["behavior"]: r["probability"] for r in ranked} == pytest.approx(expected, abs=1e-5)
    assert Predictor.from_run(make_run(tmp_path / "run2", {"ft": "ft/adapter"})).prompt_format == "paper"
