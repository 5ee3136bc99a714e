"""Every bad input, through the CLI (event logs, configurations, prepared datasets, run folders, destinations): one
line on stderr naming file/row/field, exit 2, nothing written; and the repairable problems of an event log: fixed,
counted in stats.json and warned about."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from behaviorlm.cli import main

HEADER = "user_id,timestamp,location,behavior\n"


def good_rows(user: str = "u1", n: int = 6) -> str:
    return "".join(f"{user},2024-03-04 0{i}:00:00,home,Watching video clip\n" for i in range(n))


def run_prepare(capsys, events: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["prepare", "--events", str(events), "--out", str(out), "--history-len", "2", *extra])
    return code, capsys.readouterr().err


BAD = {
    # name: (file name, content, expected row, expected field, words in the message)
    "missing column": ("e.csv", "user_id,timestamp,behavior_name\nu1,2024-03-04 07:00,Gaming\n",
                       None, "behavior", "column missing"),
    "unparseable timestamp": ("e.csv", HEADER + good_rows() + "u1,yesterday,home,Gaming\n",
                              7, "timestamp", "cannot parse timestamp 'yesterday'"),
    "missing timestamp": ("e.csv", HEADER + good_rows() + "u1,,home,Gaming\n", 7, "timestamp", "missing"),
    "empty file": ("e.csv", "", None, None, "empty file"),
    "header only": ("e.csv", HEADER, None, None, "empty file"),
    "empty jsonl": ("e.jsonl", "\n\n", None, None, "empty file"),
    "empty behavior": ("e.csv", HEADER + good_rows() + "u1,2024-03-05 07:00,home,\n", 7, "behavior", "empty"),
    "whitespace behavior": ("e.csv", HEADER + good_rows() + "u1,2024-03-05 07:00,home,   \n", 7, "behavior",
                            "only whitespace"),
    "empty user": ("e.csv", HEADER + good_rows() + ",2024-03-05 07:00,home,Gaming\n", 7, "user_id", "user id"),
    "extra field": ("e.csv", HEADER + good_rows() + "u1,2024-03-05 07:00,home,Gaming,surprise\n", 7, None,
                    "Expected 4 fields"),
    "bad jsonl line": ("e.jsonl", '{"user_id": "u1", "timestamp": "2024-03-04", "behavior": "x"}\n{oops\n',
                       2, None, "not valid JSON"),
    "jsonl bad timestamp": ("e.jsonl", '{"user_id": "u1", "timestamp": "2024-03-04", "behavior": "x"}\n'
                            '{"user_id": "u1", "timestamp": "13/45/2024 99:00", "behavior": "x"}\n',
                            2, "timestamp", "cannot parse"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    name, content, row, field, words = BAD[case]
    events = tmp_path / name
    events.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("behaviorlm prepare: error: ")
    assert str(events) in line
    assert words in line
    if row is not None:
        assert f"row {row}:" in line
    if field is not None:
        assert f": {field}:" in line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary leftovers either


def test_non_utf8_bytes_name_row_and_field(tmp_path, capsys):
    events = tmp_path / "latin1.csv"
    events.write_bytes((HEADER + good_rows()).encode() + "u1,2024-03-05 07:00,café,Gaming\n".encode("latin-1"))
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert f"{events}: row 7: location: not valid UTF-8 (byte 0xe9)" in err
    assert not out.exists()


def test_missing_column_with_mapping_names_the_mapped_column(tmp_path, capsys):
    events = tmp_path / "log.csv"
    events.write_text("uid,ts,act\nu1,2024-03-04 07:00,Gaming\n")
    code, err = run_prepare(capsys, events, tmp_path / "out", "--format", "generic", "--user-col", "uid",
                            "--time-col", "ts", "--behavior-col", "action")
    assert code == 2
    assert f"{events}: action: column missing (behavior)" in err
    assert "uid, ts, act" in err


def test_explicit_location_column_must_exist(tmp_path, capsys):
    events = tmp_path / "log.csv"
    events.write_text("user_id,timestamp,behavior\n" + "u1,2024-03-04 07:00,Gaming\n" * 3)
    code, err = run_prepare(capsys, events, tmp_path / "out", "--location-col", "place")
    assert code == 2 and "place: column missing (location)" in err


def test_missing_file(tmp_path, capsys):
    code, err = run_prepare(capsys, tmp_path / "nope.csv", tmp_path / "out")
    assert code == 2 and "nope.csv: file not found" in err


def test_unsupported_extension(tmp_path, capsys):
    events = tmp_path / "log.xlsx"
    events.write_bytes(b"PK\x03\x04")
    code, err = run_prepare(capsys, events, tmp_path / "out")
    assert code == 2 and "unsupported file type '.xlsx'" in err


def test_no_user_with_enough_events(tmp_path, capsys):
    events = tmp_path / "e.csv"
    events.write_text(HEADER + good_rows("u1", 3) + good_rows("u2", 2))
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 2 and "no user has at least 5 events" in err
    assert not out.exists()


def test_repairable_problems_are_fixed_counted_and_warned(tmp_path, capsys):
    rows = good_rows("u1", 8)
    shuffled = "".join(reversed(rows.splitlines(keepends=True)))  # 7 rows go back in time
    duplicates = "u2,2024-03-05 01:00:00,home,Gaming\n" * 3
    thin = good_rows("u3", 2)
    events = tmp_path / "e.csv"
    events.write_text(HEADER + shuffled + good_rows("u2", 6) + duplicates + thin)
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert any("dropped 2 duplicate rows" in w for w in warnings)
    assert any("7 rows were out of time order" in w for w in warnings)
    assert any("skipped 1 users with fewer than 5 events (2 events)" in w for w in warnings)
    report = json.loads((out / "stats.json").read_text())["settings"]["import"]
    assert report["duplicates"] == 2 and report["unsorted"] == 7
    assert report["users_skipped"] == 1 and report["events_skipped"] == 2
    assert report["users"] == 2 and report["events"] == 8 + 7


def test_non_utf8_jsonl_and_tsinghua_trace_name_the_row(tmp_path, capsys):
    events = tmp_path / "e.jsonl"
    events.write_bytes(b'{"user_id": "u1", "timestamp": "2024-03-04", "behavior": "x"}\n'
                       b'{"user_id": "u1", "timestamp": "2024-03-05", "behavior": "caf\xe9"}\n')
    code, err = run_prepare(capsys, events, tmp_path / "out")
    assert code == 2 and f"{events}: row 2: not valid UTF-8 (byte 0xe9)" in err
    trace = tmp_path / "trace.txt"
    trace.write_bytes(b"1 20160421080102 7 12 1024\n1 20160421080102 \xff 12 1024\n")
    fixtures = Path(__file__).parent / "fixtures" / "tsinghua"
    code, err = run_prepare(capsys, trace, tmp_path / "out", "--format", "tsinghua", "--app-categories",
                            str(fixtures / "App2Category.txt"))
    assert code == 2 and f"{trace}: row 2: base_station: not valid UTF-8 (byte 0xff)" in err
    assert not (tmp_path / "out").exists()


# --- the matrix: every verb, every kind of bad input ---------------------------------------------------------
#
# Each case builds its inputs under tmp_path and returns (argv, words expected in the message). The command must
# exit 2 with exactly one line on stderr ("behaviorlm VERB: error: ..."), no traceback, and leave tmp_path exactly
# as it was (nothing half-written). Models are never loaded and servers never bound: a case that got that far
# would fail loudly (see `no_model_no_server`).

YAML_OK = "train:\n  epochs: 1\n"


def canonical(tmp_path, rows: str, name: str = "e.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + rows, encoding="utf-8")
    return path


def dated(dates: list[str]) -> str:
    return "".join(f"u1,{d} 08:00,home,Gaming\n" for d in dates)


def prepare_argv(events: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--events", str(events), "--out", str(out), "--history-len", "2", *extra]


def a_file(tmp_path) -> Path:
    path = tmp_path / "plain-file"
    path.write_text("not a folder")
    return path


def unwritable_folder(tmp_path) -> Path:
    """A folder that refuses writes, even to root (who ignores permission bits): /sys is read-only for everyone."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_write("/sys"):
        pytest.skip("no folder here refuses writes to root")
    return Path("/sys")


def _can_write(folder: str) -> bool:
    try:
        (Path(folder) / ".behaviorlm-probe").touch()
    except OSError:
        return False
    (Path(folder) / ".behaviorlm-probe").unlink()
    return True


def run_config(tmp_path, *sets: str, config: Path | None = None) -> list[str]:
    argv = ["run", "--config", str(config or tmp_path / "ok.yaml"), "--out", str(tmp_path / "run")]
    if config is None:
        (tmp_path / "ok.yaml").write_text(YAML_OK)
    for item in sets:
        argv += ["--set", item]
    return argv


def dataset_copy(tmp_path, prepared_dir) -> Path:
    data = tmp_path / "data"
    shutil.copytree(prepared_dir, data)
    return data


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def run_folder(tmp_path, prepared_dir, config: str = "model:\n  name: smollm2-135m\n",
               model_json: dict | None = None) -> Path:
    """A run folder as serve/predict read it: config.yaml, data/, and RUN/behaviorlm/model.json."""
    root = tmp_path / "run"
    shutil.copytree(prepared_dir, root / "data")
    (root / "config.yaml").write_text(config)
    if model_json is not None:
        (root / "behaviorlm").mkdir()
        (root / "behaviorlm" / "model.json").write_text(json.dumps(model_json))
    return root


def outside_adapter(tmp_path) -> Path:
    adapter = tmp_path / "elsewhere" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    return adapter


TRUSTING = "model:\n  name: some-org/custom-model\n  trust_remote_code: true\n"


def case_events(tmp_path, rows, *extra, name="e.csv"):
    return prepare_argv(canonical(tmp_path, rows, name), tmp_path / "out", *extra)


MATRIX = {
    # -- event logs (prepare) --
    "timestamp in year 1500": lambda t, d: (case_events(t, good_rows() + "u1,1500-03-04 07:00,home,Gaming\n"),
                                            ["row 7: timestamp:", "outside the supported years 1678-2261"]),
    "timestamp in year 2300": lambda t, d: (case_events(t, good_rows() + "u1,2300-01-01 07:00,home,Gaming\n"),
                                            ["row 7: timestamp:", "outside the supported years"]),
    "day-first dates read both ways": lambda t, d: (
        case_events(t, dated([f"{day:02d}/05/2024" for day in range(6, 14)])),
        ["row 1: timestamp:", "'06/05/2024 08:00' can be read day-first or month-first", "--dayfirst",
         "(row 8, '13/05/2024 08:00', can only be day-first)"]),
    "ambiguous dates, nothing settles them": lambda t, d: (
        case_events(t, dated([f"0{day}/05/2024" for day in range(1, 7)])), ["can be read day-first or month-first"]),
    "day-first and month-first in one file": lambda t, d: (
        case_events(t, dated(["13/05/2024", "14/05/2024", "05/15/2024"])),
        ["row 3: timestamp:", "'05/15/2024 08:00' can only be month-first", "(row 1) can only be the other way"]),
    "--dayfirst but a month-first date": lambda t, d: (
        case_events(t, dated([f"0{day}/05/2024" for day in range(1, 7)] + ["05/13/2024"]), "--dayfirst"),
        ["row 7: timestamp:", "cannot parse timestamp '05/13/2024 08:00' as a day-first date (--dayfirst)"]),
    "behavior of 1 MB": lambda t, d: (case_events(t, good_rows() + "u1,2024-03-05 07:00,home," + "B" * 1_000_000 + "\n"),
                                      ["row 7: behavior:", "1,000,000 characters long", "at most 200"]),
    "place of 201 characters": lambda t, d: (case_events(t, good_rows() + "u1,2024-03-05 07:00," + "p" * 201 + ",Gaming\n"),
                                             ["row 7: location:", "place is 201 characters long"]),
    "user id of 201 characters": lambda t, d: (case_events(t, good_rows() + "u" * 201 + ",2024-03-05 07:00,home,Gaming\n"),
                                               ["row 7: user_id:", "user id is 201 characters long"]),
    "behavior group of 201 characters (jsonl)": lambda t, d: (
        prepare_argv(_jsonl(t, [{"user_id": "u1", "timestamp": f"2024-03-04 0{i}:00", "behavior": "Gaming",
                                 "behavior_group": "g" * (201 if i == 5 else 3)} for i in range(6)]), t / "out"),
        ["row 6: behavior_group:", "behavior group is 201 characters long"]),
    # -- destinations --
    "--out under a file": lambda t, d: (prepare_argv(canonical(t, good_rows()), a_file(t) / "out"),
                                        ["--out: cannot be created, because", "plain-file is a file"]),
    "--out is a file": lambda t, d: (prepare_argv(canonical(t, good_rows()), a_file(t)), ["--out: is a file"]),
    "--out in a folder that refuses writes": lambda t, d: (
        prepare_argv(canonical(t, good_rows()), unwritable_folder(t) / "behaviorlm-out"), ["--out: cannot write in"]),
    "predict --out under a file": lambda t, d: (
        ["predict", "--run", str(run_folder(t, d)), "--events", str(canonical(t, good_rows())),
         "--out", str(a_file(t) / "next.jsonl")], ["--out: cannot be created"]),
    "evaluate --out under a file": lambda t, d: (
        ["evaluate", "--data", str(d), "--out", str(a_file(t) / "eval")], ["--out: cannot be created"]),
    "run --out under a file": lambda t, d: (["run", "--config", str(_yaml(t, YAML_OK)), "--out", str(a_file(t) / "r")],
                                            ["plain-file/r", "Not a directory"]),
    # -- configurations --
    "--set with broken YAML": lambda t, d: (run_config(t, "train.epochs=[1"),
                                            ["--set 'train.epochs=[1': the value is not valid YAML"]),
    "--set without =": lambda t, d: (run_config(t, "train.epochs"), ["expected KEY=VALUE"]),
    "--set into a value": lambda t, d: (run_config(t, "train.epochs.x=1"), ["train.epochs is not a section"]),
    "negative learning rate": lambda t, d: (run_config(t, "train.learning_rate=-0.001"),
                                            ["train.learning_rate: Input should be greater than 0 (got -0.001)"]),
    "batch size 0": lambda t, d: (run_config(t, "train.batch_size=0"), ["train.batch_size:", "(got 0)"]),
    "LoRA rank 0": lambda t, d: (run_config(t, "lora.r=0"), ["lora.r:", "(got 0)"]),
    "epochs -1": lambda t, d: (run_config(t, "train.epochs=-1"), ["train.epochs: Input should be greater than 0"]),
    "epochs 0": lambda t, d: (run_config(t, "train.epochs=0"), ["train.epochs:"]),
    "B-Tuning batch size 0": lambda t, d: (run_config(t, "b_train={batch_size: 0}"), ["b_train.batch_size:"]),
    "F = 0 samples per behavior": lambda t, d: (run_config(t, "selection.per_behavior=0"), ["selection.per_behavior:"]),
    "max_train_samples 0": lambda t, d: (run_config(t, "train.max_train_samples=0"), ["train.max_train_samples:"]),
    "simulator with 0 users": lambda t, d: (run_config(t, "simulator.users=0"),
                                            ["simulator.users: the simulator needs at least 1 user"]),
    "history length 0": lambda t, d: (run_config(t, "data.history_len=0"), ["data.history_len:"]),
    "negative auxiliary ratio": lambda t, d: (run_config(t, "aux.ratio=-0.5"), ["aux.ratio:"]),
    "dayfirst not a boolean": lambda t, d: (run_config(t, "data.dayfirst=maybe"), ["data.dayfirst:"]),
    "unknown key": lambda t, d: (run_config(t, "train.nosuch=1"), ["train.nosuch: Extra inputs are not permitted"]),
    "config is a directory": lambda t, d: (run_config(t, config=_mkdir(t / "conf.yaml")),
                                           ["conf.yaml: is a directory, not a YAML config file"]),
    "config is not UTF-8": lambda t, d: (run_config(t, config=_bytes(t / "c.yaml", b"train:\n  epochs: 1 # caf\xe9\n")),
                                         ["c.yaml: not valid UTF-8 (byte 0xe9"]),
    "config is a list": lambda t, d: (run_config(t, config=_yaml(t, "- train\n")), ["expected a mapping of sections"]),
    "config is not YAML": lambda t, d: (run_config(t, config=_yaml(t, "train: [1\n")), ["not valid YAML"]),
    "config missing": lambda t, d: (run_config(t, config=t / "nope.yaml"), ["nope.yaml: config file not found"]),
    # -- prepared datasets --
    "truncated train.parquet": lambda t, d: (["tune", "--data", str(_damaged(t, d, "train.parquet")), "--out", str(t / "s")],
                                             ["train.parquet: not a readable sample file"]),
    "garbage balanced_test.parquet": lambda t, d: (
        ["evaluate", "--data", str(_garbage(t, d, "balanced_test.parquet")), "--out", str(t / "e")],
        ["balanced_test.parquet: not a readable sample file"]),
    "truncated stats.json": lambda t, d: (["tune", "--data", str(_damaged(t, d, "stats.json")), "--out", str(t / "s")],
                                          ["stats.json: not valid JSON"]),
    "stats.json of another shape": lambda t, d: (
        ["tune", "--data", str(_replaced(t, d, "stats.json", '{"behaviours": []}')), "--out", str(t / "s")],
        ["stats.json: not a prepared dataset's statistics"]),
    "stats.json not UTF-8": lambda t, d: (
        ["evaluate", "--data", str(_replaced(t, d, "stats.json", b"\xff\xfe{")), "--out", str(t / "e")],
        ["stats.json: not valid JSON"]),
    # -- run folders and trust --
    "serve a run with damaged stats.json": lambda t, d: (
        ["serve", "--run", str(_run_with_damaged_stats(t, d))], ["stats.json: not valid JSON"]),
    "serve a run asking for remote code": lambda t, d: (
        ["serve", "--run", str(run_folder(t, d, TRUSTING))],
        ["config.yaml: model.trust_remote_code is true", "pass --trust-remote-code"]),
    "predict with a run asking for remote code": lambda t, d: (
        ["predict", "--run", str(run_folder(t, d, TRUSTING)), "--events", str(canonical(t, good_rows())),
         "--out", str(t / "next.jsonl")], ["model.trust_remote_code is true"]),
    "evaluate with a config asking for remote code": lambda t, d: (
        ["evaluate", "--data", str(d), "--config", str(_yaml(t, TRUSTING)), "--out", str(t / "e")],
        ["model.trust_remote_code is true"]),
    "serve a run whose adapter lies outside it": lambda t, d: (
        ["serve", "--run", str(run_folder(t, d, model_json={"base_model": "smollm2-135m",
                                                            "adapter": str(outside_adapter(t))}))],
        ["model.json: adapter", "lies outside the run folder", "pass --adapter"]),
    "serve a run whose adapter climbs out": lambda t, d: (["serve", "--run", str(_climbing_run(t, d))],
                                                         ["lies outside the run folder"]),
    "serve a run whose base model is a folder outside it": lambda t, d: (
        ["serve", "--run", str(run_folder(t, d, model_json={"base_model": str(_mkdir(t / "models" / "m"))}))],
        ["model.json: base_model", "lies outside the run folder", "pass --base-model"]),
    "predict ambiguous dates": lambda t, d: (
        ["predict", "--run", str(run_folder(t, d)), "--events", str(canonical(t, dated(["01/05/2024", "02/05/2024"]))),
         "--out", str(t / "next.jsonl")], ["can be read day-first or month-first"]),
}


def _yaml(tmp_path, text: str) -> Path:
    path = tmp_path / "given.yaml"
    path.write_text(text)
    return path


def _climbing_run(tmp_path, prepared_dir) -> Path:
    """model.json's adapter is relative, but ../ leads out of the run folder to a real adapter."""
    outside_adapter(tmp_path)
    return run_folder(tmp_path, prepared_dir, model_json={"base_model": "smollm2-135m", "adapter": "../elsewhere/adapter"})


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _jsonl(tmp_path, records: list[dict]) -> Path:
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _damaged(tmp_path, prepared_dir, name: str) -> Path:
    data = dataset_copy(tmp_path, prepared_dir)
    truncate(data / name)
    return data


def _garbage(tmp_path, prepared_dir, name: str) -> Path:
    data = dataset_copy(tmp_path, prepared_dir)
    (data / name).write_bytes(os.urandom(3000))
    return data


def _replaced(tmp_path, prepared_dir, name: str, content: str | bytes) -> Path:
    data = dataset_copy(tmp_path, prepared_dir)
    (data / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return data


def _run_with_damaged_stats(tmp_path, prepared_dir) -> Path:
    root = run_folder(tmp_path, prepared_dir)
    (root / "data" / "stats.json").write_text('{"behaviors": [')
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def no_model_no_server(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("bad input reached the model loader / the server")

    monkeypatch.setattr("behaviorlm.lm.loading.load_model", refuse)
    monkeypatch.setattr("uvicorn.run", refuse)


@pytest.mark.parametrize("case", list(MATRIX))
def test_bad_input_matrix(tmp_path, capsys, prepared_dir, no_model_no_server, case):
    work = tmp_path / "work"
    work.mkdir()
    argv, words = MATRIX[case](work, prepared_dir)  # cases copy prepared_dir before changing it
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    with capsys.disabled():
        shown = lines[-1].replace(f"{work}/", "") if lines else ""
        print(f"\n| {case} | {code} | {shown} |", end="")
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"behaviorlm {argv[0]}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(tmp_path) == before  # nothing written, nothing half-written, no temporary leftovers


def test_the_matrix_covers_enough_cases():
    assert len(MATRIX) >= 30
