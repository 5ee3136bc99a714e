"""benchmarks/load_test.py against a real loopback server with the tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from behaviorlm.serving.http import ServerSettings, create_app
from serving_helpers import running_server

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_test.py"


@pytest.fixture(scope="module")
def load_test():
    spec = importlib.util.spec_from_file_location("load_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_test_reports_throughput_and_latency(load_test, predictor, tmp_path, capsys):
    out = tmp_path / "load.json"
    with running_server(create_app(predictor, ServerSettings())) as url:
        code = load_test.main(["--url", url, "--requests", "12", "--duration", "60", "--concurrency", "3",
                               "--warmup", "1", "--k", "2", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["requests"] == result["ok"] == 12 and result["statuses"] == {"200": 12}
    assert result["requests_per_s"] > 0 and result["events_per_request"] == 4  # the server's history length
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert 1 <= result["model_calls"] <= 12 and result["k"] == 2
    assert "requests/s" in capsys.readouterr().out


def test_load_test_stops_at_the_time_limit(load_test, predictor):
    with running_server(create_app(predictor, ServerSettings())) as url:
        bodies = load_test.random_histories(["Work", "Gym"], 3, 4, seed=0)
        latencies, statuses, elapsed = load_test.asyncio.run(
            load_test.load(url, bodies, 1, 2, max_requests=10**6, duration=1.0, timeout=30))
    assert statuses.get("200", 0) == len(latencies) > 0
    assert elapsed < 10  # stopped by time, not by count


@pytest.mark.parametrize(("url", "ok"), [("http://127.0.0.1:8000", True), ("http://localhost:1", True),
                                          ("http://[::1]:80", True), ("http://10.0.0.5:8000", False),
                                          ("http://example.com", False)])
def test_only_loopback_targets(load_test, url, ok):
    assert load_test.is_loopback(url) is ok
