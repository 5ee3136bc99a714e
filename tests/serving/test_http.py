"""The HTTP server: every endpoint, every bad-input case, micro-batching, and one real uvicorn start."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from behaviorlm.serving.http import MicroBatcher, Overloaded, ServerSettings, create_app
from serving_helpers import BEHAVIORS, events, free_port, running_server

SETTINGS = ServerSettings(max_events=10, max_batch=4, max_body_bytes=8_000, batch_window_ms=1)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, SETTINGS)) as c:
        yield c


def test_health_and_behaviors(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["behaviors"] == len(BEHAVIORS)
    assert health["limits"]["max_events"] == 10
    names = [b["name"] for b in client.get("/behaviors").json()["behaviors"]]
    assert names == sorted(BEHAVIORS)


def test_openapi_documents_the_endpoints_and_limits(client):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/behaviors"} <= set(spec["paths"])
    events_schema = spec["components"]["schemas"]["PredictRequest"]["properties"]["events"]
    assert events_schema["maxItems"] == 10
    assert client.get("/docs").status_code == 200


def test_predict_matches_the_python_api(client, predictor):
    evs = events(6)
    response = client.post("/predict", json={"events": evs, "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny"
    expected = predictor.predict(evs, k=3)
    assert [p["behavior"] for p in body["predictions"]] == [e["behavior"] for e in expected]
    assert [p["probability"] for p in body["predictions"]] == pytest.approx([e["probability"] for e in expected], abs=1e-4)
    # default k = 5, next context and optional place
    body = client.post("/predict", json={"events": [{"time": "2024-05-06T08:00:00+09:00", "behavior": "Work"}],
                                         "next": {"time": "2024-05-06T12:00"}}).json()
    assert len(body["predictions"]) == 5


def test_predict_batch(client, predictor):
    requests = [{"events": events(3), "k": 1}, {"events": events(5), "k": 4, "next": {"time": "2024-05-07T10:00", "place": "gym"}}]
    response = client.post("/predict/batch", json={"requests": requests})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [len(r) for r in results] == [1, 4]
    expected = predictor.predict(requests[1]["events"], requests[1]["next"], k=4)
    assert [p["behavior"] for p in results[1]] == [e["behavior"] for e in expected]


def post_raw(client, content: bytes | str, path="/predict", **headers):
    return client.post(path, content=content, headers={"content-type": "application/json", **headers})


ONE = {"time": "2024-05-06T08:00:00", "place": "home", "behavior": "Work"}


@pytest.mark.parametrize(
    ("body", "status", "where", "text"),
    [
        ({"events": [dict(ONE, behavior="Skydiving")]}, 422, "body.events[0].behavior", "unknown behavior 'Skydiving'"),
        ({"events": [dict(ONE, time="2024-13-45T99:00")]}, 422, "body.events[0].time", "cannot parse"),
        ({"events": [dict(ONE, time="yesterday")]}, 422, "body.events[0].time", "ISO 8601"),
        ({"events": [dict(ONE, time=1714982400)]}, 422, "body.events[0].time", "valid string"),
        ({"events": [ONE] * 11}, 422, "body.events", "at most 10 items"),
        ({"events": []}, 422, "body.events", "at least 1 item"),
        ({}, 422, "body.events", "Field required"),
        ({"events": [ONE], "k": 0}, 422, "body.k", "greater than or equal to 1"),
        ({"events": [ONE], "k": len(BEHAVIORS) + 1}, 422, "body.k", f"less than or equal to {len(BEHAVIORS)}"),
        ({"events": [ONE], "k": "3"}, 422, "body.k", "valid integer"),
        ({"events": [ONE], "k": True}, 422, "body.k", "valid integer"),
        ({"events": [ONE], "next": {"time": "2024-05-01T00:00"}}, 422, "body.next.time", "before the last event"),
        ({"events": [ONE], "next": {"place": "home"}}, 422, "body.next.time", "Field required"),
        ({"events": [dict(ONE, behaviour="Work")]}, 422, "body.events[0].behaviour", "Extra inputs are not permitted"),
        ({"events": [ONE], "user": "u1"}, 422, "body.user", "Extra inputs"),
        ({"events": [dict(ONE, place="x" * 300)]}, 422, "body.events[0].place", "at most 200 characters"),
        ({"events": [dict(ONE, behavior=None)]}, 422, "body.events[0].behavior", "valid string"),
        ({"events": "Work"}, 422, "body.events", "valid list"),
        ([ONE], 422, "body", "dictionary"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(client, body, status, where, text):
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert f"{where}: " in error and text in error, error
    assert all({"loc", "msg", "type"} <= set(d) for d in response.json()["detail"])


def test_malformed_json_and_content_types(client):
    response = post_raw(client, '{"events": [')
    assert response.status_code == 422 and "invalid JSON" in response.json()["error"]
    assert post_raw(client, b"\xff\xfe\x00garbage").status_code == 422
    assert post_raw(client, "").status_code == 422
    assert client.post("/predict", content=b'{"events": []}', headers={"content-type": "text/plain"}).status_code == 422
    nested = "[" * 3000 + "]" * 3000
    assert 400 <= post_raw(client, nested).status_code < 500


def test_oversized_bodies_get_413(client):
    big = json.dumps({"events": [ONE] * 200})  # over 8,000 bytes
    response = post_raw(client, big)
    assert response.status_code == 413 and "larger than 8000 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(20):
            yield b" " * 1000

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers.get("content-length") is None
    assert response.status_code == 413
    assert post_raw(client, "{}", **{"content-length": "lots"}).status_code == 400


def test_batch_limits_and_item_errors(client):
    assert client.post("/predict/batch", json={"requests": [{"events": [ONE]}] * 5}).json()["error"].startswith("body.requests: ")
    response = client.post("/predict/batch", json={"requests": [{"events": [ONE]}, {"events": [dict(ONE, behavior="Nap")]}]})
    assert response.status_code == 422 and "body.requests[1].events[0].behavior" in response.json()["error"]
    response = client.post("/predict/batch", json={"requests": [{"events": [ONE]}, {"events": [ONE], "next": {"time": "2000-01-01T00:00"}}]})
    assert response.status_code == 422 and response.json()["error"].startswith("body.requests[1].next.time: ")
    assert client.post("/predict/batch", json={"requests": []}).status_code == 422


def test_unknown_routes_and_methods(client):
    assert client.get("/nope").status_code == 404 and client.get("/nope").json()["error"] == "Not Found"
    assert client.get("/predict").status_code == 405


def test_overload_answers_503(predictor):
    with TestClient(create_app(predictor, ServerSettings(max_pending=2))) as c:
        response = c.post("/predict/batch", json={"requests": [{"events": [ONE]}] * 3})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert c.post("/predict", json={"events": [ONE]}).status_code == 200


def test_concurrent_requests_share_one_model_call(predictor):
    prompts = [predictor.prompt_for(events(n)) for n in range(1, 7)]
    expected = predictor.rank(prompts, k=3)

    async def scenario():
        batcher = MicroBatcher(predictor, ServerSettings(max_batch=64, batch_window_ms=20, max_pending=6))
        batcher.start()
        try:
            results = await asyncio.gather(*(batcher.rank([p], k) for p, k in zip(prompts, [1, 2, 3, 3, 2, 1])))
            with pytest.raises(Overloaded):
                await batcher.rank(prompts + prompts[:1], 1)
            return results, batcher.batches, batcher.pending
        finally:
            await batcher.stop()

    results, batches, pending = asyncio.run(scenario())
    assert batches == 1 and pending == 0
    for got, want, k in zip(results, expected, [1, 2, 3, 3, 2, 1]):
        assert [g["behavior"] for g in got[0]] == [w["behavior"] for w in want[:k]]


def test_real_uvicorn_server_on_loopback(predictor):
    with running_server(create_app(predictor, SETTINGS)) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        results = [None] * 6

        def call(i):
            results[i] = httpx.post(f"{url}/predict", json={"events": events(i + 1), "k": 2}, timeout=60)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200] * 6  # concurrent clients over real sockets

        def chunks():
            for _ in range(20):
                yield b" " * 1000

        assert httpx.post(f"{url}/predict", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
        assert httpx.post(f"{url}/predict", content=json.dumps({"events": [ONE] * 200})).status_code == 413
        assert httpx.post(f"{url}/predict", json={"events": [dict(ONE, behavior="Nap")]}).status_code == 422


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-events", "0"], "--max-events must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        ([], "not a run folder"),
    ],
)
def test_serve_rejects_bad_options_before_binding(tmp_path, capsys, args, message):
    from behaviorlm.cli import main

    assert main(["serve", "--run", str(tmp_path / "nothing"), "--port", str(free_port()), *args]) == 2
    assert message in capsys.readouterr().err


def test_serving_threads_leave_a_core_for_the_event_loop(monkeypatch):
    from behaviorlm.serving.http import serving_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert serving_threads("cpu") == 7
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert serving_threads("cpu") == 1
    monkeypatch.setattr("behaviorlm.lm.loading.pick_device", lambda device: __import__("torch").device("cuda", 0))
    assert serving_threads("auto") is None


# --- bounded work ---------------------------------------------------------------------------------------


class GatedPredictor:
    """The tiny predictor whose model calls wait for ``gate``: a model that is busy for as long as a test needs."""

    def __init__(self, inner, hold_s: float = 10.0):
        self.inner = inner
        self.hold_s = hold_s
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def rank(self, prompts, k):
        self.calls.append(len(prompts))
        self.entered.set()
        self.gate.wait(self.hold_s)
        return self.inner.rank(prompts, k)


def wait_until(condition, seconds: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


LONG_PLACE = "Shinjuku station, south exit, second floor, next to the ticket gates " * 3  # ~200 characters


def test_prompt_token_budget_refuses_long_places_and_says_so(client, predictor):
    budget = client.get("/health").json()["limits"]["max_prompt_tokens"]
    assert budget > predictor.prompt_tokens(predictor.prompt_for(events(10)))  # ordinary requests fit easily
    long = [dict(e, place=LONG_PLACE[:200]) for e in events(6)]
    response = client.post("/predict", json={"events": long})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("body: the prompt would take ") and f"budget of {budget} per prompt" in error
    batch = client.post("/predict/batch", json={"requests": [{"events": events(3)}, {"events": long}]})
    assert batch.status_code == 422 and batch.json()["error"].startswith("body.requests[1]: the prompt would take")
    assert client.post("/predict", json={"events": [dict(ONE, place="p" * 201)]}).json()["error"].startswith(
        "body.events[0].place: String should have at most 200 characters")


def test_the_longest_valid_request_is_answered_quickly(predictor):
    """Places as long as the budget allows, on every event, and the most events: still one prompt of bounded size."""
    import time

    settings = ServerSettings(max_events=10, max_batch=4, max_body_bytes=64_000)
    with TestClient(create_app(predictor, settings)) as c:
        budget = c.get("/health").json()["limits"]["max_prompt_tokens"]
        place = ""
        for word in LONG_PLACE.split():  # the longest place whose prompt still fits
            trial = f"{place} {word}".strip()
            evs = [dict(e, place=trial) for e in events(10)]
            if predictor.prompt_tokens(predictor.prompt_for(evs)) > budget:
                break
            place = trial
        evs = [dict(e, place=place) for e in events(10)]
        started = time.perf_counter()
        response = c.post("/predict/batch", json={"requests": [{"events": evs, "next": {"time": "2024-05-07T09:00",
                                                                                      "place": place}}] * 4})
        assert response.status_code == 200, response.text
        assert time.perf_counter() - started < 5


def test_error_bodies_stay_small_whatever_the_request(predictor):
    settings = ServerSettings(max_body_bytes=1_000_000)
    with TestClient(create_app(predictor, settings)) as c:
        body = {"events": [dict(ONE, **{f"key{i}": i for i in range(20_000)})], "k" * 50_000: 1}
        response = c.post("/predict", json=body)
        assert response.status_code == 422
        assert len(response.content) < 4096
        detail = response.json()["detail"]
        # 20,001 errors: 20,000 unknown keys and one unknown key of 50,000 characters
        assert len(detail) == 11 and detail[-1] == {"loc": [], "msg": "19991 more errors not shown", "type": "truncated"}
        assert response.json()["error"].endswith("; and 19998 more")
        assert all(len(str(part)) <= 64 for d in detail for part in d["loc"])
        bad = c.post("/predict", json={"events": [dict(ONE, behavior="B" * 200)]})
        assert bad.status_code == 422 and len(bad.content) < 4096


def test_a_request_whose_client_left_never_reaches_the_model(predictor):
    gated = GatedPredictor(predictor)
    with running_server(create_app(gated, SETTINGS)) as url:
        first = {}
        holder = threading.Thread(target=lambda: first.update(r=httpx.post(f"{url}/predict", json={"events": events(3)},
                                                                             timeout=30)))
        holder.start()
        assert gated.entered.wait(10)  # the model is busy with the first request
        for n in (2, 4):  # these clients give up while queued
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{url}/predict", json={"events": events(n)}, timeout=0.3)
        assert wait_until(lambda: httpx.get(f"{url}/health").json()["dropped"] == 2)
        gated.gate.set()
        holder.join(10)
        assert first["r"].status_code == 200
        assert httpx.post(f"{url}/predict", json={"events": events(5)}, timeout=30).status_code == 200
        assert gated.calls == [1, 1]  # the first and the last request; the two abandoned ones never ran


def test_timeouts_answer_503_while_queued_and_504_while_running(predictor):
    gated = GatedPredictor(predictor, hold_s=2.0)
    settings = ServerSettings(max_events=10, max_batch=1, max_body_bytes=8_000, batch_window_ms=1, request_timeout_s=0.5)
    with running_server(create_app(gated, settings)) as url:
        results = {}

        def call(name, n):
            results[name] = httpx.post(f"{url}/predict", json={"events": events(n)}, timeout=30)

        running = threading.Thread(target=call, args=("running", 3))
        running.start()
        assert gated.entered.wait(10)
        queued = threading.Thread(target=call, args=("queued", 4))
        queued.start()
        running.join(10)
        queued.join(10)
        assert results["running"].status_code == 504
        assert "did not answer within 0.5 s" in results["running"].json()["error"]
        assert results["queued"].status_code == 503 and results["queued"].headers["retry-after"] == "1"
        gated.gate.set()
        assert wait_until(lambda: httpx.get(f"{url}/health").json()["pending"] == 0)
        assert gated.calls == [1]  # the timed-out queued request was withdrawn


def test_serve_refuses_a_run_that_asks_for_remote_code(tmp_path, capsys):
    from behaviorlm.cli import main
    from serving_helpers import write_dataset

    run = tmp_path / "run"
    write_dataset(run / "data")
    (run / "config.yaml").write_text("model:\n  name: org/custom\n  trust_remote_code: true\n")
    assert main(["serve", "--run", str(run), "--port", str(free_port())]) == 2
    assert "model.trust_remote_code is true" in capsys.readouterr().err
