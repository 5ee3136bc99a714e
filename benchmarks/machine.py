"""The machine's limit: the fp32 matrix-multiply rate, and what it allows a given model in tokens/s.

A transformer's work is almost all matrix multiplies against its weights, so the rate of one large square fp32
matmul (same thread count as the model runs with) is a practical peak. From it (see docs/PERFORMANCE.md):

- forward:        2 x P_body FLOPs per token, plus 2 x P_head per position whose logits are computed;
- LoRA training:  4 x P_body FLOPs per token (forward + activation gradients; frozen weights get no weight
                  gradients), plus 4 x P_head per position whose loss is computed;

where P_body are the parameters of the transformer layers (everything but the token embedding, whose lookup
costs nothing, and the LM head) and P_head = hidden size x vocabulary. Attention scores and LoRA's own
matmuls are left out: below 10 % of the work at the prompt lengths here.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import torch


def matmul_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu", threads: int | None = None) -> dict:
    """Best-of-``repeats`` rate of an ``n x n`` fp32 matmul in GFLOP/s (2 n^3 FLOPs each)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=generator).to(device)
        b = torch.randn(n, n, generator=generator).to(device)
        out = torch.empty(n, n, device=device)
        torch.matmul(a, b, out=out)  # warm-up: thread pool and kernel selection
        times = []
        for _ in range(repeats):
            _sync(device)
            started = time.perf_counter()
            torch.matmul(a, b, out=out)
            _sync(device)
            times.append(time.perf_counter() - started)
        best = min(times)
        return {"n": n, "repeats": repeats, "threads": torch.get_num_threads(), "device": device,
                "best_seconds": best, "gflops": 2 * n**3 / best / 1e9,
                "median_gflops": 2 * n**3 / sorted(times)[len(times) // 2] / 1e9}
    finally:
        torch.set_num_threads(previous)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            info["processor"] = names[0]
    except OSError:
        pass
    return info


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts that decide a causal LM's FLOPs per token."""

    total: int
    embedding: int
    body: int
    head: int
    hidden: int
    vocab: int

    def forward_flops(self, tokens: int, logit_positions: int) -> float:
        return 2.0 * self.body * tokens + 2.0 * self.head * logit_positions

    def train_flops(self, tokens: int, loss_positions: int) -> float:
        return 4.0 * self.body * tokens + 4.0 * self.head * loss_positions

    def ceilings(self, peak_gflops: float) -> dict:
        """Tokens/s at the peak rate when every FLOP is a transformer-layer FLOP (no LM head)."""
        return {"forward_tokens_per_s": peak_gflops * 1e9 / (2.0 * self.body),
                "forward_full_logits_tokens_per_s": peak_gflops * 1e9 / (2.0 * (self.body + self.head)),
                "lora_train_tokens_per_s": peak_gflops * 1e9 / (4.0 * self.body)}

    def to_json(self) -> dict:
        return asdict(self)


def model_size(model) -> ModelSize:
    """Counts on the base model (a PEFT wrapper's adapters are left out)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embedding = base.get_input_embeddings().weight
    head = base.get_output_embeddings().weight
    seen, total = set(), 0
    for name, param in base.named_parameters():
        if "lora_" in name or id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    tied = head is embedding or head.data_ptr() == embedding.data_ptr()
    body = total - embedding.numel() - (0 if tied else head.numel())
    return ModelSize(total=total, embedding=embedding.numel(), body=body, head=head.numel(),
                     hidden=head.shape[1], vocab=head.shape[0])
