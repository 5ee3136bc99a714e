"""The chat-endpoint baseline's client: answer mapping, ranking by log-probabilities, retries with backoff, the
request budget and the answer cache, against a fake transport (the end-to-end test against `behaviorlm serve` is in
tests/serving/test_openai_api.py)."""

from __future__ import annotations

import math

import httpx2
import pytest

from behaviorlm.baselines.chat_endpoint import (ChatEndpoint, EndpointSettings, RateLimiter, match_answer, normalise,
                                                ranking)
from behaviorlm.errors import InputError

CANDIDATES = ["Eat breakfast", "Taking subway", "Work", "Workout"]
MESSAGES = [{"role": "system", "content": "role"}, {"role": "user", "content": "prompt"}]


@pytest.mark.parametrize(("text", "expected"), [
    ("Work", ("Work", "exact")),
    ("  eat BREAKFAST. ", ("Eat breakfast", "normalised")),
    ("**Workout**", ("Workout", "normalised")),
    ("Taking-subway!", ("Taking subway", "normalised")),
    ("I think Work", (None, "unmatched")),
    ("", (None, "unmatched")),
    (None, (None, "unmatched")),
])
def test_answers_map_exactly_then_normalised_else_unmatched(text, expected):
    assert match_answer(text, CANDIDATES) == expected


def test_normalise_ignores_case_whitespace_and_punctuation():
    assert normalise(" Eat\tBreakfast... ") == normalise("eat breakfast") == "eat breakfast"


def test_log_probabilities_rank_the_candidates_after_the_answer():
    top = [("Work", math.log(0.5)), ("Eat", math.log(0.3)), ("Wor", math.log(0.1)), (" workout", math.log(0.05))]
    ranked = ranking("Work", top, CANDIDATES)
    # "Eat" begins one candidate only; "Wor" begins two, so it ranks nothing
    assert [b for b, _ in ranked] == ["Work", "Eat breakfast", "Workout"]
    assert [p for _, p in ranked] == pytest.approx([0.5, 0.3, 0.05])
    assert ranking("Workout", top, CANDIDATES)[0] == ("Workout", pytest.approx(0.05))  # the answer always first
    assert ranking("Work", None, CANDIDATES) == [("Work", None)]
    assert ranking(None, None, CANDIDATES) == []


def completion(content: str, top: list[tuple[str, float]] | None = None) -> dict:
    logprobs = None
    if top is not None:
        entry = lambda t, lp: {"token": t, "logprob": lp, "bytes": None}  # noqa: E731
        logprobs = {"content": [{**entry(*top[0]), "top_logprobs": [entry(*t) for t in top]}]}
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                         "logprobs": logprobs}]}


class FakeEndpoint:
    """Answers each request with the next reply of a script: a status code, an exception, or a completion."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(reply, Exception):
            raise type(reply)(str(reply), request=request)
        if isinstance(reply, tuple):
            status, headers = reply
            return httpx2.Response(status, headers=headers, json={"error": {"message": f"status {status}"}})
        return httpx2.Response(200, json=reply)


def endpoint(fake: FakeEndpoint, tmp_path, sleeps: list, **settings) -> ChatEndpoint:
    settings = EndpointSettings(model="m", base_url="http://fake/v1", cache_dir=tmp_path / "cache",
                                requests_per_second=1e6, retry_base_s=0.25, **settings)
    return ChatEndpoint(settings, http_client=httpx2.Client(transport=httpx2.MockTransport(fake)), sleep=sleeps.append)


def test_retries_back_off_exponentially_and_obey_retry_after(tmp_path):
    fake = FakeEndpoint((429, {"retry-after": "0.5"}), (503, {}), httpx2.ConnectError("refused"), (500, {}),
                        completion("Work", [("Work", -0.1), ("Eat", -2.5)]))
    sleeps: list[float] = []
    client = endpoint(fake, tmp_path, sleeps, max_retries=5)
    [answer] = client.answers([MESSAGES])
    assert answer.text == "Work" and answer.top_logprobs == [("Work", -0.1), ("Eat", -2.5)]
    assert sleeps == [0.5, 0.5, 1.0, 2.0]  # Retry-After, then 0.25 x 2^attempt
    assert client.sent == fake.requests == 5 and client.retries == 4


def test_a_request_the_endpoint_refuses_is_not_retried(tmp_path):
    fake = FakeEndpoint((401, {}))
    with pytest.raises(InputError, match=r"refused the request: 401 .*OPENAI_API_KEY"):
        endpoint(fake, tmp_path, []).answers([MESSAGES])
    assert fake.requests == 1


def test_retries_give_up_with_one_line(tmp_path):
    fake = FakeEndpoint((503, {}))
    with pytest.raises(InputError, match="failed 3 times in a row"):
        endpoint(fake, tmp_path, [], max_retries=2).answers([MESSAGES])
    assert fake.requests == 3


def test_the_budget_stops_retries_and_keeps_the_answers_received(tmp_path):
    ok = completion("Work")
    fake = FakeEndpoint(ok, (500, {}))
    conversations = [MESSAGES, [*MESSAGES[:1], {"role": "user", "content": "another"}]]
    with pytest.raises(InputError, match=r"request budget \(--max-requests 3\) ran out on retries"):
        endpoint(fake, tmp_path, [], max_requests=3, concurrency=1).answers(conversations)
    assert fake.requests == 3
    # the first answer was cached: a rerun asks only for the second
    fake = FakeEndpoint(completion("Workout"))
    client = endpoint(fake, tmp_path, [], max_requests=1)
    assert [a.text for a in client.answers(conversations)] == ["Work", "Workout"]
    assert fake.requests == 1 and client.cache_hits == 1


def test_the_cache_answers_a_rerun_and_the_budget_is_checked_before_sending(tmp_path):
    fake = FakeEndpoint(completion("Work"))
    prompts = [[{"role": "user", "content": f"prompt {i}"}] for i in range(3)]
    with pytest.raises(InputError, match="3 prompts are not cached, more than --max-requests 2"):
        endpoint(fake, tmp_path, [], max_requests=2).answers(prompts)
    assert fake.requests == 0
    first = endpoint(fake, tmp_path, [])
    assert [a.text for a in first.answers(prompts + prompts[:1])] == ["Work"] * 4  # a repeated prompt is sent once
    assert fake.requests == 3
    again = endpoint(fake, tmp_path, [], max_requests=1)
    again.answers(prompts)
    assert fake.requests == 3 and again.sent == 0 and again.cache_hits == 3
    # other parameters are another question
    endpoint(fake, tmp_path, [], top_logprobs=0).answers(prompts[:1])
    assert fake.requests == 4


def test_requests_are_paced():
    sleeps: list[float] = []
    limiter = RateLimiter(4.0, sleep=sleeps.append)
    for _ in range(3):
        limiter.wait()
    assert len(sleeps) == 2 and sleeps[0] == pytest.approx(0.25, abs=0.05) and sleeps[1] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(("args", "message"), [
    (["--base-url", "http://127.0.0.1:1/v1"], "--base-url goes with --model openai:NAME"),
    (["--model", "openai:m", "--adapter", "a"], "--adapter does not apply to an endpoint model"),
    (["--model", "openai:"], "needs a model name after 'openai:'"),
    (["--model", "openai:m", "--max-requests", "0"], "--max-requests must be at least 1"),
    (["--model", "openai:m", "--top-logprobs", "21"], "at most 20"),
])
def test_bad_endpoint_options_are_one_line_and_exit_2(args, message, tmp_path, capsys):
    from behaviorlm.cli import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stats.json").write_text("{}")
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "out").exists()


def test_a_prompt_refused_with_400_is_unmatched_and_the_others_are_still_asked(tmp_path):
    fake = FakeEndpoint((400, {}), completion("Work"))
    client = endpoint(fake, tmp_path, [], concurrency=1)
    prompts = [[{"role": "user", "content": f"prompt {i}"}] for i in range(3)]
    answers = client.answers(prompts)
    assert "400" in answers[0].refused and [a.refused for a in answers[1:]] == [None, None]
    assert [a.text for a in answers] == [None, "Work", "Work"]
    assert fake.requests == 3, "a refusal is not retried"
    again = FakeEndpoint(completion("Lunch"))
    assert [a.text for a in endpoint(again, tmp_path, [], concurrency=1).answers(prompts)] == [
        "Lunch", "Work", "Work"], "refusals are not cached: a rerun asks again"


def test_the_endpoint_evaluation_counts_refusals_and_stops_when_every_prompt_is_refused(tmp_path):
    from tests.baselines.helpers import cyclic_splits, write_prepared

    from behaviorlm.baselines.chat_endpoint import evaluate_endpoint
    from behaviorlm.config import EvalConfig
    from behaviorlm.data.types import PreparedData

    data = PreparedData(write_prepared(tmp_path / "data", cyclic_splits()))
    sizes = EvalConfig(limit=4, per_behavior=1)
    fake = FakeEndpoint((400, {}), completion("Work"))
    client = endpoint(fake, tmp_path, [], concurrency=1)
    metrics = evaluate_endpoint(data, tmp_path / "out", "m", client.settings, sizes, endpoint=client)
    refused = metrics["next_behavior"]["refused"] + metrics["long_tail"]["refused"]
    assert refused == 1 and metrics["next_behavior"]["unmatched"] + metrics["long_tail"]["unmatched"] == 1
    everything = FakeEndpoint((400, {}))
    client = endpoint(everything, tmp_path / "other", [], concurrency=1)
    with pytest.raises(InputError, match="refused every prompt .*400"):
        evaluate_endpoint(data, tmp_path / "out2", "m", client.settings, sizes, endpoint=client)
    assert not (tmp_path / "out2").exists(), "nothing is written"
