"""Test data shared by the serving tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from behaviorlm.data.types import BehaviorInfo, Stats

BEHAVIORS = ["Breakfast", "Commute", "Work", "Lunch", "Gym", "Dinner", "Reading"]
HISTORY_LEN = 4


def make_stats(history_len: int = HISTORY_LEN) -> Stats:
    shares = [0.3, 0.2, 0.2, 0.15, 0.1, 0.04, 0.01]
    groups = ["head", "head", "head", "head", "head", "medium", "tail"]
    return Stats(
        [BehaviorInfo(n, int(s * 1000), s, g, s > 0.01) for n, s, g in zip(BEHAVIORS, shares, groups)],
        samples={"train": 0, "valid": 0, "test": 0, "balanced_test": 0},
        settings={"history_len": history_len},
    )


def write_dataset(root: Path, history_len: int = HISTORY_LEN) -> Path:
    """A prepared-dataset folder as far as serving needs one: just stats.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "stats.json").write_text(json.dumps(make_stats(history_len).to_json()))
    return root


def events(n: int = 6, start_hour: int = 7) -> list[dict]:
    """``n`` events an hour apart on Monday 2024-05-06, cycling through the behaviors."""
    return [
        {"time": f"2024-05-06T{start_hour + i:02d}:15:00", "place": "home" if i % 2 else "office",
         "behavior": BEHAVIORS[i % len(BEHAVIORS)]}
        for i in range(n)
    ]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(app):
    """A real uvicorn server for ``app`` on a free loopback port, in a thread; yields its URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
