"""Thread settings: forward tokens/s by torch thread count and OpenMP wait policy, each in a fresh process.

PyTorch's CPU kernels run on an OpenMP thread pool whose idle threads spin while waiting for work. When
another process competes for the cores (a server next to a training job, two helpers on a laptop), spinning
threads steal the time the working threads need, and throughput can collapse several-fold;
``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep instead. The policy is read once when the OpenMP runtime
starts, so each setting is measured in its own process::

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.threads --model smollm2-135m --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("default", "PASSIVE")
"""``default`` = OMP_WAIT_POLICY unset (the OpenMP runtime's own choice)."""


def forward_rates(model_name: str, thread_counts: list[int], tokens: int = 400, repeats: int = 2) -> dict[str, float]:
    """Tokens/s of a ``tokens``-long forward (logits at the last position only), best of ``repeats``."""
    import torch

    from benchmarks.workload import load

    model, _ = load(model_name)
    ids = torch.randint(100, 10000, (1, tokens), generator=torch.Generator().manual_seed(0))
    out = {}
    with torch.inference_mode():
        model(input_ids=ids, logits_to_keep=1)  # warm-up
        for count in thread_counts:
            torch.set_num_threads(count)
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                model(input_ids=ids, logits_to_keep=1)
                best = min(best, time.perf_counter() - started)
            out[str(count)] = tokens / best
    return out


def probe(model_name: str, thread_counts: list[int], policies=POLICIES, tokens: int = 400) -> dict:
    """{policy: {threads: tokens/s}}, one child process per policy."""
    results = {}
    for policy in policies:
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        command = [sys.executable, "-m", "benchmarks.threads", "--model", model_name,
                   "--threads", ",".join(map(str, thread_counts)), "--tokens", str(tokens)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"thread probe failed ({policy}): {done.stderr.strip().splitlines()[-1:]}")
        results[policy] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward tokens/s at each thread count, printed as JSON.")
    parser.add_argument("--model", default="smollm2-135m", help="model name (tiny = random test model)")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--tokens", type=int, default=400, help="sequence length of the timed forward")
    args = parser.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",") if t]
    print(json.dumps(forward_rates(args.model, counts, args.tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
