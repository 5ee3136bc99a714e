import json

import pandas as pd
import pytest

from behaviorlm.baselines.run import BASELINES, LANGUAGE, NEURAL, run_baseline
from behaviorlm.cli import main
from behaviorlm.data.types import PreparedData

from .helpers import cyclic_splits, write_prepared

SIX = ("prec_w", "rec_w", "overall", "head", "medium", "tail")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared"), cyclic_splits())


@pytest.mark.parametrize("name", BASELINES)
def test_run_baseline_writes_the_shared_schema(prepared, tmp_path, name, tiny_backbone):
    fast = {"epochs": 2, "progress": False} if name in NEURAL else {}
    if name in LANGUAGE:
        fast.update(language_model="tiny", embedding_cache=tmp_path / "cache", hidden=16)
    data = PreparedData(prepared)
    result = run_baseline(name, data, tmp_path / name, seed=1, **fast)
    written = json.loads((tmp_path / name / "metrics.json").read_text())
    assert written["model"] == name == result["model"]
    assert written["train_samples"] == len(data.split("train"))
    assert written["seconds"] > 0
    for protocol, split in (("next_behavior", "test"), ("long_tail", "balanced_test")):
        metrics = written[protocol]
        assert metrics["n"] == len(data.split(split))
        assert all(key in metrics for key in SIX)
        assert metrics["hit@1"] == pytest.approx(metrics["rec_w"])
        assert metrics["hit@1"] <= metrics["hit@3"] <= metrics["hit@5"]
        assert set(metrics["per_behavior"]) <= set(data.candidates)
        assert metrics["ci95"]["rec_w"][0] <= metrics["rec_w"] <= metrics["ci95"]["rec_w"][1]
        assert metrics["bootstrap"]["unit"] == "user" and sum(metrics["n_by_group"].values()) == metrics["n"]
    predictions = pd.read_parquet(tmp_path / name / "predictions.parquet")
    assert len(predictions) == written["next_behavior"]["n"] + written["long_tail"]["n"]
    assert (predictions["sample_id"].str.rsplit("-", n=1).str[0] == predictions["user_id"]).all()
    test_rows = predictions[predictions["split"] == "test"]
    assert (test_rows["pred"] == test_rows["label"]).mean() == pytest.approx(written["next_behavior"]["rec_w"])
    assert all(len(top) == 5 and top[0]["behavior"] == pred
               for top, pred in zip(predictions["top"], predictions["pred"]))


def test_markov_is_exact_on_the_cycle_and_fraction_limit_apply(prepared, tmp_path):
    result = run_baseline("markov", PreparedData(prepared), tmp_path, train_fraction=0.5, limit=7, per_behavior=2)
    assert result["next_behavior"]["rec_w"] == 1.0 and result["long_tail"]["overall"] == 1.0
    assert result["next_behavior"]["n"] == 7 and result["long_tail"]["n"] == 12  # 2 of each of 6 behaviors
    assert result["long_tail"]["ci95"]["overall"] == [1.0, 1.0]
    assert result["limit"] == 7 and result["per_behavior"] == 2
    assert result["train_samples"] == len(PreparedData(prepared).split("train")) // 2


def test_cli(prepared, tmp_path, capsys):
    out = tmp_path / "sas"
    assert main(["baseline", "sasrec", "--data", str(prepared), "--out", str(out), "--epochs", "1",
                 "--max-train-samples", "50", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_samples"] == 50 and metrics["hparams"]["epochs"] == 1
    assert metrics["limit"] == 500 and metrics["per_behavior"] == 10  # the language models' evaluation defaults
    assert "sasrec next_behavior" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["markov", "--train-fraction", "0"], "train fraction must be in (0, 1]"),
    (["markov", "--epochs", "3"], "--epochs: only for sasrec, bert4rec, llm-esr, alphafuse, not markov"),
    (["most-frequent", "--limit", "0"], "limit must be at least 1"),
    (["most-frequent", "--per-behavior", "0"], "per_behavior must be at least 1"),
])
def test_cli_bad_input_is_one_line_exit_2(prepared, tmp_path, capsys, argv, message):
    code = main(["baseline", *argv, "--data", str(prepared), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_cli_not_a_prepared_dataset(tmp_path, capsys):
    assert main(["baseline", "markov", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err


def test_cli_all_scores_every_sample(prepared, tmp_path, capsys):
    out = tmp_path / "markov"
    assert main(["baseline", "markov", "--data", str(prepared), "--out", str(out), "--limit", "all",
                 "--per-behavior", "all"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    data = PreparedData(prepared)
    assert metrics["next_behavior"]["n"] == len(data.split("test"))
    assert metrics["long_tail"]["n"] == len(data.split("balanced_test"))
    assert metrics["limit"] is None and metrics["per_behavior"] is None
    assert "rec_w 1.0000 [1.000, 1.000]" in capsys.readouterr().out
