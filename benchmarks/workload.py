"""What the benchmarks run on: the model, real prompts from simulator data, and the sizes of each benchmark.

Prompts come from two prepared simulator datasets, history length 10 and 20, mixed half and half, so batches
hold prompts of different lengths (about 250 and 450 tokens with the embedded model) as real data does: that
is where padding to the longest in a batch costs and length grouping saves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from behaviorlm.data.types import PreparedData, Sample
from behaviorlm.prompts import Prompt, render_sample

TINY = "tiny"
"""Model name of a random 2-layer model built in code: exercises the benchmark machinery in seconds."""

HISTORY_LENGTHS = (10, 20)


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark runs. ``quick`` fits in a few minutes on a 2-core CPU with SmolLM2-135M."""

    train_samples: int = 32
    train_batch_size: int = 4
    train_epochs: int = 1
    predict_samples: int = 24
    separate_samples: int = 6
    """Samples scored with one full forward per candidate (the slow baseline); the first of the ranked ones."""
    generate_samples: int = 24
    predict_batch_size: int = 8
    matmul_n: int = 4096
    matmul_repeats: int = 5
    thread_counts: tuple[int, ...] = (1, 2)
    """Thread counts tried for the ranker; empty = keep torch's default only."""
    rank_batch_sizes: tuple[int, ...] = (1, 4, 16)
    """Other ranker batch sizes (prompts per forward) timed against ``predict_batch_size``; empty = none."""
    int8: bool = True
    """Also time the ranker on a dynamic-int8 copy of the model (CPU only)."""
    sim_users: int = 60
    sim_days: int = 7
    format_train_samples: int = 96
    """Paper vs packed: consecutive training samples trained as targets in each format."""
    format_eval_samples: int = 96
    """Paper vs packed: consecutive test samples ranked in each format."""
    segment_targets: int = 48

    @property
    def train_steps(self) -> int:
        per_epoch = -(-self.train_samples // self.train_batch_size)
        return per_epoch * self.train_epochs

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


QUICK = Sizes(train_samples=16, train_batch_size=4, predict_samples=6, separate_samples=2, generate_samples=6,
              matmul_n=3072, thread_counts=(), rank_batch_sizes=(), sim_users=40, sim_days=5,
              format_train_samples=96, format_eval_samples=48)
FULL = Sizes()


def load(model_name: str, adapter: str | None = None):
    """``(model, tokenizer)`` in eval mode; ``tiny`` builds the random test model."""
    from behaviorlm.lm.loading import load_model, tiny_model

    if model_name == TINY:
        if adapter is not None:
            from behaviorlm.lm.loading import attach_adapter

            model, tokenizer = tiny_model(seed=0)
            return attach_adapter(model, adapter).eval(), tokenizer
        return tiny_model(seed=0)
    return load_model(model_name, adapter=adapter)


def prepare_data(out: Path, sizes: Sizes) -> list[Path]:
    """Simulate a small event log and prepare it at each history length; returns the dataset folders."""
    from behaviorlm.config import DataConfig, SimulatorConfig
    from behaviorlm.data.prepare import prepare_dataset

    simulator = SimulatorConfig(users=sizes.sim_users, days=sizes.sim_days, seed=0)
    folders = []
    for length in HISTORY_LENGTHS:
        folder = out / f"sim-L{length}"
        if not (folder / "stats.json").is_file():
            prepare_dataset(DataConfig(history_len=length, balanced_per_behavior=5), folder, simulator=simulator,
                            progress=False)
        folders.append(folder)
    return folders


def dataset_folders(data: str | None, workdir: Path, sizes: Sizes) -> list[Path]:
    """``--data`` may be one prepared dataset, or a folder holding several (e.g. sim-L10 and sim-L20)."""
    if data is None:
        return prepare_data(workdir, sizes)
    root = Path(data)
    if (root / "stats.json").is_file():
        return [root]
    folders = sorted(p.parent for p in root.glob("*/stats.json"))
    if not folders:
        from behaviorlm.errors import InputError

        raise InputError("not a prepared dataset, nor a folder of them (no stats.json)", file=str(root))
    return folders


@dataclass
class Workload:
    """Samples with their candidate sets, alternating between the datasets."""

    samples: list[Sample]
    candidates: list[list[str]]
    source: list[str]

    def prompts(self, seed: int = 0, with_answer: bool = False) -> list[Prompt]:
        return [render_sample(s, c, seed, with_answer=with_answer) for s, c in zip(self.samples, self.candidates)]

    def chat_examples(self, seed: int = 0) -> list[list[dict[str, str]]]:
        return [p.messages(with_answer=True) for p in self.prompts(seed, with_answer=True)]

    def groups(self) -> list[tuple[list[int], list[str]]]:
        """Indices sharing a candidate set (a ranker call takes one candidate set)."""
        out: dict[tuple[str, ...], list[int]] = {}
        for i, cand in enumerate(self.candidates):
            out.setdefault(tuple(cand), []).append(i)
        return [(indices, list(cand)) for cand, indices in out.items()]

    def to_json(self) -> dict:
        return {"n": len(self.samples), "sources": sorted(set(self.source)),
                "history_lengths": sorted({len(s.history) for s in self.samples})}


def pick(folders: list[Path], split: str, n: int) -> Workload:
    """The first ``n`` samples of ``split``, alternating between the datasets (deterministic)."""
    data = [PreparedData(f) for f in folders]
    pools = [d.split(split) for d in data]
    samples, candidates, source = [], [], []
    i = 0
    while len(samples) < n and any(i < len(p) for p in pools):
        for d, pool, folder in zip(data, pools, folders):
            if i < len(pool) and len(samples) < n:
                samples.append(pool[i])
                candidates.append(d.candidates)
                source.append(folder.name)
        i += 1
    return Workload(samples, candidates, source)
