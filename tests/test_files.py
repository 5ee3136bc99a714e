"""Crash-safe writes: a failed write leaves the old content and no temporary; temporaries of killed processes go."""

from __future__ import annotations

import subprocess
import sys

import pytest

from behaviorlm.config import DataConfig, RunConfig, SimulatorConfig
from behaviorlm.data.prepare import prepare_dataset
from behaviorlm.files import atomic_path, remove_stale, write_text_atomic
from behaviorlm.recipe.pipeline import Run


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that has ended (what a killed run's temporaries carry)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half of the ne")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "stale.bin").write_text("from the previous adapter")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["weights.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_only_a_dead_process_s_temporaries_are_removed(tmp_path, dead_pid):
    (tmp_path / "stages" / "tune-a" / f".adapter.tmp-{dead_pid}-0").mkdir(parents=True)
    (tmp_path / f".manifest.json.tmp-{dead_pid}-3").write_text("{")
    live = tmp_path / ".metrics.json.tmp-1-0"  # pid 1 runs for as long as the machine does
    live.write_text("being written")
    (tmp_path / f".data.old-{dead_pid}-1").mkdir()  # moved aside, its replacement never arrived: put back
    removed = remove_stale(tmp_path, recursive=True)
    assert sorted(p.name for p in removed) == [f".adapter.tmp-{dead_pid}-0", f".manifest.json.tmp-{dead_pid}-3"]
    assert live.exists() and (tmp_path / "data").is_dir()


def test_prepare_and_a_run_folder_clear_what_a_killed_process_left(tmp_path, dead_pid):
    stale = tmp_path / f".data.tmp-{dead_pid}-1234"
    (stale / "train.parquet").parent.mkdir()
    (stale / "train.parquet").write_bytes(b"PAR1 half a file")
    other = tmp_path / f".notes.txt.tmp-{dead_pid}-0"  # not prepare's: left alone
    other.write_text("")
    prepare_dataset(DataConfig(history_len=4), tmp_path / "data", simulator=SimulatorConfig(users=6, days=2),
                    progress=False)
    assert not stale.exists() and other.exists()

    Run(tmp_path, RunConfig())
    assert not other.exists()
