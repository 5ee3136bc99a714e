"""Fuzzing the request schema: random malformed bodies always get a 4xx with a message, never a 5xx."""

from __future__ import annotations

import json
import random

import pytest
from fastapi.testclient import TestClient

from behaviorlm.serving.http import ServerSettings, create_app
from serving_helpers import events

SEED = 1234
CASES = 300
JUNK = [None, True, False, 0, -1, 10**30, 1.5, float("inf"), "", " ", "\x00", "🙂" * 50, "Work", "2024-05-06T08:00",
        [], [1, 2], {}, {"a": 1}, "x" * 5000, "2024-02-30T10:00", "T", "2024-05-06T25:00"]


def valid_body(rng: random.Random) -> dict:
    body = {"events": events(rng.randint(1, 6))}
    if rng.random() < 0.5:
        body["next"] = {"time": "2024-05-08T09:30:00", "place": "office"}
    if rng.random() < 0.5:
        body["k"] = rng.randint(1, 5)
    return body


def paths(node, prefix=()):
    """Every (path to a value) inside a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def set_at(doc, path, value):
    if not path:
        return value
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


def malformed(rng: random.Random) -> bytes:
    """A body that is invalid by construction (each mutation breaks a rule the schema enforces)."""
    body = valid_body(rng)
    kind = rng.randrange(9)
    if kind == 0:  # replace a value somewhere by junk of the wrong kind
        path = rng.choice([p for p in paths(body) if p and p[-1] in ("time", "behavior", "events", "next", "k")])
        body = set_at(body, path, rng.choice([j for j in JUNK if not _valid_for(path[-1], j)]))
    elif kind == 1:  # drop a required key
        event = rng.choice(body["events"])
        del event[rng.choice(["time", "behavior"])]
    elif kind == 2:  # an unknown key
        target = rng.choice([body, rng.choice(body["events"])])
        target[rng.choice(["behaviour", "user", "__proto__", "Time", ""])] = rng.choice(JUNK)
    elif kind == 3:  # unknown behavior
        rng.choice(body["events"])["behavior"] = rng.choice(["work", "Work ", "Sleep", "Breakfast\n", "💤"])
    elif kind == 4:  # k out of range or of the wrong type
        body["k"] = rng.choice([0, -3, 8, 10**9, "2", 2.5, None, True])
    elif kind == 5:  # too many events, none, or a body over the size limit
        body["events"] = rng.choice([[], events(6) * 3, [dict(events(1)[0], place="x" * 7000)]])
    elif kind == 6:  # the whole document of the wrong type
        body = rng.choice([[], [body], "text", 42, None, True])
    elif kind == 7:  # next before the last event
        body["next"] = {"time": "2024-05-01T00:00:00"}
    else:  # broken bytes: truncated JSON, random bytes, bad encodings
        raw = json.dumps(body).encode()
        return rng.choice([
            raw[: rng.randrange(1, len(raw) - 1)],
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
            raw.replace(b"{", b"[", 1),
            raw.decode().encode("utf-16")[:-2],  # (complete UTF-16 JSON is accepted, as json.loads does)
            b"\xef\xbb\xbf" + raw[:-1],
        ])
    return json.dumps(body).encode()


def _valid_for(key, value) -> bool:
    """Junk that would happen to be valid for this key is not used (the body must stay malformed)."""
    if key == "time":
        return value in ("2024-05-06T08:00",)
    if key == "behavior":
        return value == "Work"
    if key == "k":
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 7
    if key == "next":
        return value is None
    return False


@pytest.fixture(scope="module")
def client(predictor):
    settings = ServerSettings(max_events=12, max_batch=4, max_body_bytes=6_000)
    with TestClient(create_app(predictor, settings)) as c:
        yield c


def test_random_malformed_bodies_always_get_4xx(client):
    rng = random.Random(SEED)
    seen = set()
    for case in range(CASES):
        raw = malformed(rng)
        path = "/predict" if rng.random() < 0.7 else "/predict/batch"
        if path == "/predict/batch" and rng.random() < 0.5:
            try:
                raw = json.dumps({"requests": [json.loads(raw)]}).encode()
            except ValueError:
                pass
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (case, raw[:300], response.status_code, response.text[:300])
        assert response.json()["error"], (case, raw[:300])
        seen.add(response.status_code)
    assert 422 in seen and 413 in seen  # both validation and size limits were exercised


def test_valid_bodies_from_the_same_generator_succeed(client):
    """The generator's base bodies are valid: the failures above come from the mutations."""
    rng = random.Random(SEED)
    for _ in range(5):
        body = valid_body(rng)
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == body.get("k", 5)


# --- the same bodies against a running server, with /health watched throughout -----------------------------

LIVE_CASES = 520
LIVE_CLIENTS = 3
HEALTH_LIMIT_S = 1.0


def live_body(rng: random.Random) -> tuple[str, bytes]:
    """A path and body: mostly malformed (every kind above), some valid, some valid with places as long as allowed."""
    roll = rng.random()
    if roll < 0.15:
        return "/predict", json.dumps(valid_body(rng)).encode()
    if roll < 0.2:
        body = valid_body(rng)
        for event in body["events"]:
            event["place"] = rng.choice(["x" * 200, "station " * 25, "🙂" * 200])
        return "/predict", json.dumps(body).encode()  # over the token budget or not: either way bounded
    raw = malformed(rng)
    if rng.random() < 0.3:
        try:
            return "/predict/batch", json.dumps({"requests": [json.loads(raw)] * rng.randint(1, 4)}).encode()
        except ValueError:
            pass
    return "/predict", raw


def test_fuzz_a_running_server_no_5xx_and_health_stays_fast(predictor):
    import threading
    import time
    from collections import Counter

    import httpx

    from serving_helpers import running_server

    settings = ServerSettings(max_events=12, max_batch=4, max_body_bytes=6_000)
    rng = random.Random(SEED + 1)
    cases = [live_body(rng) for _ in range(LIVE_CASES)]
    statuses: Counter = Counter()
    failures: list = []
    health_seconds: list[float] = []
    done = threading.Event()

    with running_server(create_app(predictor, settings)) as url:
        def watch_health():
            with httpx.Client(base_url=url, timeout=10) as http:
                while not done.is_set():
                    started = time.perf_counter()
                    response = http.get("/health")
                    health_seconds.append(time.perf_counter() - started)
                    assert response.status_code == 200
                    time.sleep(0.05)

        def send(part: list[tuple[str, bytes]]):
            with httpx.Client(base_url=url, timeout=30, headers={"content-type": "application/json"}) as http:
                for path, raw in part:
                    response = http.post(path, content=raw)
                    statuses[response.status_code] += 1
                    if response.status_code >= 500 or not response.json().get("error" if response.status_code >= 400
                                                                                else "model"):
                        failures.append((path, raw[:200], response.status_code, response.text[:200]))

        watcher = threading.Thread(target=watch_health)
        watcher.start()
        clients = [threading.Thread(target=send, args=(cases[i::LIVE_CLIENTS],)) for i in range(LIVE_CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(300)
        done.set()
        watcher.join(30)

    by_class = Counter(f"{status // 100}xx" for status in statuses.elements())
    print(f"\nserver fuzz: {sum(statuses.values())} bodies, {dict(sorted(by_class.items()))}, "
          f"by status {dict(sorted(statuses.items()))}; /health {len(health_seconds)} polls, "
          f"slowest {max(health_seconds):.3f} s")
    assert sum(statuses.values()) == LIVE_CASES >= 500
    assert not failures, failures[:3]
    assert by_class["5xx"] == 0 and by_class["2xx"] > 0 and {422, 413} <= set(statuses)
    assert len(health_seconds) >= 5 and max(health_seconds) < HEALTH_LIMIT_S
