"""The OpenAI chat API of `behaviorlm serve`, and the chat-endpoint baseline scored through it end to end: the
official `openai` client and `behaviorlm evaluate --model openai:...` against a real server on loopback."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from behaviorlm.cli import main
from behaviorlm.data.types import Event, Sample, write_samples
from behaviorlm.prompts import render
from behaviorlm.serving.http import ServerSettings, create_app
from serving_helpers import BEHAVIORS, events, make_stats, running_server

SETTINGS = ServerSettings(max_events=10, max_batch=4, max_body_bytes=8_000, batch_window_ms=1)
CANDIDATES = sorted(BEHAVIORS)
HISTORY = [Event(datetime(2024, 5, 6, 8 + i), "home" if i % 2 else "office", BEHAVIORS[i]) for i in range(3)]


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, SETTINGS)) as c:
        yield c


def chat(client, content: str | None = None, **body):
    content = content if content is not None else render(HISTORY, datetime(2024, 5, 6, 12), "gym", CANDIDATES).user
    return client.post("/v1/chat/completions",
                       json={"model": "tiny", "messages": [{"role": "user", "content": content}], **body})


def expected(predictor, k: int = 5):
    return predictor.predict([vars(e) for e in HISTORY], {"time": "2024-05-06T12:00", "place": "gym"}, k=k)


def test_models_lists_the_served_id(client):
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"
    missing = client.get("/v1/models/gpt-4o")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert {"/v1/chat/completions", "/v1/models"} <= set(client.get("/openapi.json").json()["paths"])


def test_a_paper_prompt_gets_the_predicted_behavior_and_its_top_k(client, predictor):
    body = chat(client, logprobs=True, top_logprobs=2).json()
    top = expected(predictor)
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert choice["message"] == {"role": "assistant", "content": top[0]["behavior"]}
    assert [t["behavior"] for t in choice["behaviorlm"]["top"]] == [t["behavior"] for t in top]
    assert [t["probability"] for t in choice["behaviorlm"]["top"]] == pytest.approx([t["probability"] for t in top],
                                                                                     abs=1e-4)
    alternatives = choice["logprobs"]["content"][0]["top_logprobs"]
    assert [a["token"] for a in alternatives] == [t["behavior"] for t in top[:2]]
    assert alternatives[0]["logprob"] == pytest.approx(math.log(top[0]["probability"]), abs=1e-4)
    assert body["usage"]["prompt_tokens"] > 0
    # every instruction format, and a system message or earlier turns are ignored
    for format_id in (1, 2):
        content = render(HISTORY, datetime(2024, 5, 6, 12), "gym", CANDIDATES, format_id=format_id).user
        reply = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [
            {"role": "system", "content": "You are helpful."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": content}]}).json()
        assert reply["choices"][0]["message"]["content"] == top[0]["behavior"]


def test_a_candidate_subset_restricts_the_answer(client, predictor):
    subset = [t["behavior"] for t in expected(predictor, k=len(CANDIDATES))][-2:]  # the two least likely
    content = render(HISTORY, datetime(2024, 5, 6, 12), "gym", sorted(subset)).user
    top = chat(client, content).json()["choices"][0]["behaviorlm"]["top"]
    assert [t["behavior"] for t in top] == subset
    assert sum(t["probability"] for t in top) == pytest.approx(1.0)


def test_a_json_message_is_a_predict_body(client, predictor):
    request = {"events": events(4), "next": {"time": "2024-05-06T12:00"}, "k": 2}
    reply = chat(client, json.dumps(request)).json()["choices"][0]
    top = predictor.predict(request["events"], request["next"], k=2)
    assert reply["message"]["content"] == top[0]["behavior"]
    assert [t["behavior"] for t in reply["behaviorlm"]["top"]] == [t["behavior"] for t in top]


def test_streaming_sends_the_answer_as_one_chunk(client, predictor):
    response = chat(client, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    first, last = json.loads(lines[0]), json.loads(lines[1])
    assert first["choices"][0]["delta"]["content"] == expected(predictor, 1)[0]["behavior"]
    assert last["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("body", "status", "param", "text"), [
    ({"model": "gpt-4o"}, 404, "model", "does not exist; this server serves 'tiny'"),
    ({"n": 2}, 400, "n", "n must be 1"),
    ({"messages": [{"role": "assistant", "content": "Work"}]}, 400, "messages[0].role", "must be the user's"),
    ({"messages": []}, 400, "messages", "at least 1 item"),
    ({"messages": [{"role": "user", "content": "What next?"}]}, 400, "messages[0].content", "not a behavior prompt"),
    ({"messages": [{"role": "user", "content": '{"events": [{"time": "soon", "behavior": "Work"}]}'}]}, 400,
     "messages[0].content.events[0].time", "cannot parse 'soon'"),
    ({"messages": [{"role": "user", "content": json.dumps({"events": events(11)})}]}, 400,
     "messages[0].content.events", "at most 10 items"),
    ({"top_logprobs": 21, "logprobs": True}, 400, "top_logprobs", "less than or equal to 20"),
])
def test_errors_have_openai_shape(client, body, status, param, text):
    base = {"model": "tiny", "messages": [{"role": "user", "content": render(HISTORY, datetime(2024, 5, 6, 12), "",
                                                                             CANDIDATES).user}]}
    response = client.post("/v1/chat/completions", json={**base, **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert text in error["message"] and error["type"] == "invalid_request_error"


def test_unknown_behaviors_oversized_bodies_and_unknown_paths_too(client):
    prompt = render(HISTORY, datetime(2024, 5, 6, 12), "", CANDIDATES).user
    error = chat(client, prompt.replace("office, Breakfast", "office, Skydiving")).json()["error"]
    assert "does not end with a known behavior" in error["message"]
    error = chat(client, prompt.replace("Breakfast, Commute", "Breakfast, Skydiving, Commute")).json()["error"]
    assert "unknown behavior 'Skydiving' in the candidate set" in error["message"]
    too_big = client.post("/v1/chat/completions", content=b"{" + b" " * 9_000 + b"}",
                          headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and "larger than 8000 bytes" in too_big.json()["error"]["message"]
    assert client.get("/v1/nothing").json()["error"]["message"] == "Not Found"
    assert "error" in client.post("/predict", json={"events": []}).json()  # the server's own shape is unchanged


# --- end to end: a real server, the official client, and the chat-endpoint baseline -----------------------


class CountingChats:
    """ASGI wrapper counting the chat requests that reach the server."""

    def __init__(self, app):
        self.app, self.chats = app, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            self.chats += 1
        await self.app(scope, receive, send)


def write_dataset(root):
    """A prepared dataset in the served model's vocabulary: 6 test samples and 7 balanced-test samples, 13 prompts."""
    stats = make_stats()
    stats.samples.update(test=6, balanced_test=7)
    root.mkdir(parents=True)
    (root / "stats.json").write_text(json.dumps(stats.to_json()))
    start = datetime(2024, 5, 6, 7)
    for split, n in (("test", 6), ("balanced_test", 7)):
        samples = [Sample(f"{split}-{i}", f"u{i % 3}",
                          tuple(Event(start + timedelta(hours=h + i), "home", BEHAVIORS[(i + h) % 7]) for h in range(3)),
                          Event(start + timedelta(hours=3 + i), "office" if split == "test" else "gym",
                                BEHAVIORS[i % 7])) for i in range(n)]
        write_samples(samples, root / f"{split}.parquet")
    return root


def test_the_openai_client_and_the_endpoint_baseline_end_to_end(predictor, tmp_path, monkeypatch, capsys):
    import openai

    counting = CountingChats(create_app(predictor, SETTINGS))
    data = write_dataset(tmp_path / "data")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    with running_server(counting) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        prompt = render(HISTORY, datetime(2024, 5, 6, 12), "gym", CANDIDATES)
        reply = client.chat.completions.create(model="tiny", messages=prompt.messages(), logprobs=True, top_logprobs=3)
        top = expected(predictor)
        assert reply.choices[0].message.content == top[0]["behavior"]
        assert [t.token for t in reply.choices[0].logprobs.content[0].top_logprobs] == [t["behavior"] for t in top[:3]]
        assert [t["behavior"] for t in reply.choices[0].model_extra["behaviorlm"]["top"]] == [t["behavior"] for t in top]
        streamed = client.chat.completions.create(model="tiny", messages=prompt.messages(), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == top[0]["behavior"]
        with pytest.raises(openai.NotFoundError, match="does not exist") as refused:
            client.chat.completions.create(model="gpt-4o", messages=prompt.messages())
        assert refused.value.code == "model_not_found" and refused.value.param == "model"

        common = ["evaluate", "--data", str(data), "--model", "openai:tiny", "--base-url", f"{url}/v1",
                  "--cache", str(tmp_path / "cache"), "--requests-per-second", "1000", "--concurrency", "2",
                  "--limit", "all", "--per-behavior", "all"]
        before = counting.chats
        assert main([*common, "--out", str(tmp_path / "first")]) == 0
        assert counting.chats - before == 13
        metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
        assert metrics["endpoint"]["requests_sent"] == 13 and metrics["endpoint"]["cache_hits"] == 0
        for protocol, n in (("next_behavior", 6), ("long_tail", 7)):
            assert metrics[protocol]["n"] == n and metrics[protocol]["unmatched"] == 0
            assert metrics[protocol]["matched"]["exact"] == n and "hit@5" in metrics[protocol]
            assert metrics[protocol]["ci95"]["rec_w"] is not None
        # the server ranked what the served model predicts for each sample
        predictions = pd.read_parquet(tmp_path / "first" / "predictions.parquet")
        sample = predictions.iloc[0]
        history = [{"time": start, "place": "home", "behavior": BEHAVIORS[h % 7]}
                   for h, start in enumerate(pd.date_range("2024-05-06 07:00", periods=3, freq="h"))]
        direct = predictor.predict(history, {"time": "2024-05-06T10:00", "place": "office"}, k=5)
        assert sample["sample_id"] == "test-0" and sample["pred"] == direct[0]["behavior"]
        assert [t["behavior"] for t in sample["top"]] == [t["behavior"] for t in direct]
        assert [t["probability"] for t in sample["top"]] == pytest.approx([t["probability"] for t in direct], abs=1e-4)

        # a rerun is answered from the cache: nothing reaches the server
        assert main([*common, "--out", str(tmp_path / "again")]) == 0
        assert counting.chats - before == 13
        again = json.loads((tmp_path / "again" / "metrics.json").read_text())
        assert again["endpoint"]["requests_sent"] == 0 and again["endpoint"]["cache_hits"] == 13
        assert again["long_tail"]["overall"] == metrics["long_tail"]["overall"]

        # a budget too small for what is not cached: one line, exit 2, nothing sent
        capsys.readouterr()
        code = main([*common, "--out", str(tmp_path / "third"), "--cache", str(tmp_path / "empty-cache"),
                     "--max-requests", "5"])
        assert code == 2 and counting.chats - before == 13
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "13 prompts are not cached, more than --max-requests 5" in err
        assert not (tmp_path / "third").exists()
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".json")
    assert "sk-test-secret" not in written and "OPENAI_API_KEY" in written  # the variable's name, never its value
