"""Where a tuning stage runs: here, in N data-parallel worker processes, or across the ranks of a launcher.

- **One process** (the default): ``stages.tune_on_samples`` in this process, as always.
- **``train.num_processes: N``** (N > 1) in a process no launcher started: the stage is written as a job
  (``job.json`` in the stage folder) and run by ``torchrun --standalone --nproc_per_node N -m behaviorlm.recipe.launch
  JOB``. Hugging Face Trainer (Accelerate) shards every batch across the workers (DDP: gloo on CPUs, NCCL with one GPU
  per worker); the workers' rank 0 writes the stage folder and ``job_result.json``, the others wait at a barrier.
  The process that runs the pipeline prepares, selects and evaluates alone, and writes the manifest.
- **Started by a launcher** (``accelerate launch -m behaviorlm.cli run ...``, ``torchrun``; the launcher's
  ``WORLD_SIZE`` decides, ``train.num_processes`` is not used): rank 0 runs the pipeline (``orchestrate``) and
  announces each tuning stage; the other ranks wait at a barrier (``serve``), join the stage, and wait again.

Each process trains on ``train.batch_size`` samples a step, so N processes make a global batch N times larger: with
``train.batch_size`` halved, 2 processes train exactly as 1 (the same steps and losses, up to float rounding, when
``lora.dropout`` is 0; dropout masks are drawn per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from behaviorlm import distributed
from behaviorlm.config import RunConfig, TrainConfig
from behaviorlm.data.types import PreparedData, Sample, write_json_atomic
from behaviorlm.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class TuneJob:
    """A tuning stage as plain data, so that other processes can run exactly it (``stages.tune_on_samples``)."""

    config: dict
    data: str
    out: str
    sample_ids: list[str]
    """The targets, in order, by id in the train split (every stage trains on train samples)."""
    aux: int = 0
    train: dict | None = None
    init_adapter: str | None = None
    validate: bool = True
    prompt_seed: int | None = None

    def run(self) -> dict:
        from behaviorlm.recipe.stages import tune_on_samples

        config = RunConfig.model_validate(self.config)
        data = PreparedData(self.data)
        by_id = {s.sample_id: s for s in data.split("train")}
        samples = [by_id[i] for i in self.sample_ids]
        train = TrainConfig.model_validate(self.train) if self.train is not None else None
        return tune_on_samples(config, data, Path(self.out), samples, aux=self.aux, train=train,
                               init_adapter=self.init_adapter, validate=self.validate, prompt_seed=self.prompt_seed)


def tune(config: RunConfig, data: PreparedData, out: Path, samples: Sequence[Sample], *, aux: int = 0,
         train: TrainConfig | None = None, init_adapter: str | None = None, validate: bool = True,
         prompt_seed: int | None = None) -> dict:
    """``stages.tune_on_samples``, run where the launcher or ``train.num_processes`` says (module docstring)."""
    from behaviorlm.recipe.stages import tune_on_samples

    processes = (train or config.train).num_processes
    if distributed.world_size() == 1 and processes == 1:
        return tune_on_samples(config, data, out, samples, aux=aux, train=train, init_adapter=init_adapter,
                               validate=validate, prompt_seed=prompt_seed)
    # Paths as given: every process runs in this one's folder, and tune_spec.json records them as they are.
    job = TuneJob(config.model_dump(mode="json"), str(data.root), str(out), [s.sample_id for s in samples], aux,
                  train.model_dump(mode="json") if train else None, init_adapter, validate, prompt_seed)
    if distributed.world_size() > 1:
        return distributed.broadcast(job).run()  # the ranks waiting in ``serve`` receive it and join
    check_processes(processes)
    return spawn(job, processes)


def spawn(job: TuneJob, processes: int) -> dict:
    """Run ``job`` in ``processes`` workers started by torchrun; their rank 0's result."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    job_file, result_file = out / "job.json", out / "job_result.json"
    write_json_atomic(asdict(job), job_file)
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "behaviorlm.recipe.launch", str(job_file)]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env and not _gpu_host():  # torchrun would leave each worker one thread
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    completed = subprocess.run(command, env=env)
    if completed.returncode != 0 or not result_file.is_file():
        raise InputError(f"the tuning stage failed in its {processes} worker processes (exit status "
                         f"{completed.returncode}; their messages are above); rerun to resume", file=str(out))
    return json.loads(result_file.read_text())


def _gpu_host() -> bool:
    import torch

    return torch.cuda.is_available()


def check_processes(processes: int) -> None:
    """On a GPU host every worker takes a GPU of its own (its local rank): refuse more workers than GPUs."""
    import torch

    if processes > 1 and torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise InputError(f"train.num_processes {processes}: this machine has {torch.cuda.device_count()} GPUs, and "
                         "each process trains on a GPU of its own; use at most that many")


def orchestrate(main: Callable[[], T]) -> T | None:
    """Under a launcher, rank 0 runs ``main`` (a pipeline) while the other ranks ``serve`` its tuning stages; their
    result is None. Without a launcher, just ``main()``."""
    if distributed.world_size() == 1:
        return main()
    if not distributed.is_main():
        serve()
        return None
    try:
        return main()
    finally:
        distributed.broadcast(None)  # releases the waiting ranks


def serve() -> None:
    """A rank other than 0: wait at the barrier for rank 0's next tuning stage, join it; None ends the wait."""
    while True:
        job = distributed.broadcast(None)
        if job is None:
            return
        job.run()
        _free_memory()


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def worker(argv: list[str]) -> int:
    """A torchrun worker of ``spawn``: run the job; rank 0 writes the result next to it."""
    job_file = Path(argv[0])
    job = TuneJob(**json.loads(job_file.read_text()))
    distributed.state()  # the process group, with a timeout longer than rank 0's validation and saving
    try:
        result = job.run()
    except InputError as exc:
        print(f"behaviorlm tuning worker {distributed.rank()}: error: {exc}", file=sys.stderr)
        return 2
    if distributed.is_main():
        write_json_atomic(result, job_file.with_name("job_result.json"))
    distributed.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
