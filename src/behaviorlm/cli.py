"""``behaviorlm <verb>``: one module per verb.

Each verb module defines ``configure_parser(parser)`` and ``run(args) -> int | None``. Modules are imported
only for the verb being run, so ``behaviorlm --help`` stays fast (torch is not imported for it).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from pydantic_core import ValidationError

from behaviorlm.errors import InputError
from behaviorlm.hosts import gpu_host
from behaviorlm.logs import show_on_stderr

VERBS: dict[str, tuple[str, str]] = {
    "simulate": ("behaviorlm.data.simulate", "write a realistic synthetic behavior log (the embedded default data)"),
    "prepare": ("behaviorlm.data.prepare", "event log -> (last-L -> next) samples, 8:1:1 user split, balanced test, stats"),
    "tune": ("behaviorlm.lm.tune_cli", "one LoRA instruction-tuning stage on a prepared dataset"),
    "evaluate": ("behaviorlm.evaluation.evaluate", "six metrics on both protocols for a base model or an adapter"),
    "compare": ("behaviorlm.evaluation.compare", "models scored on the same samples: metrics and paired differences with 95 % intervals"),
    "run": ("behaviorlm.recipe.pipeline", "the resumable BehaviorLM pipeline: prepare, A-Tuning, selection, B-Tuning, evaluation"),
    "baseline": ("behaviorlm.baselines.cli", "train and evaluate SASRec, BERT4Rec, Markov or most-frequent"),
    "experiment": ("behaviorlm.evaluation.experiments", "the paper's experiment suite (ablations, few-shot, sample efficiency, ...)"),
    "report": ("behaviorlm.evaluation.report", "render RUN/report.html and RUN/report.md from a run folder"),
    "export": ("behaviorlm.lm.export", "a run's model with its adapter merged, as a standalone Hugging Face folder"),
    "predict": ("behaviorlm.serving.batch", "batch prediction: each user's next behavior, top-k with probabilities"),
    "serve": ("behaviorlm.serving.http", "HTTP prediction server (FastAPI)"),
    "bench": ("behaviorlm.bench", "speed benchmarks against the naive way and the machine's limit"),
}


USER_FIXABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                       errno.EROFS, errno.ENOSPC, errno.ENAMETOOLONG, errno.ELOOP}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="behaviorlm",
        description="Tune a language model into a next-behavior predictor that stays accurate on rare behaviors.",
        epilog="Run `behaviorlm VERB --help` for a verb's options.",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (module_name, help_text) in VERBS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            module = importlib.import_module(module_name)
            module.configure_parser(sub)
            sub.set_defaults(_module=module)
    return parser


def configure_process() -> None:
    """What the command line sets for the whole process, before a verb imports torch: OpenMP threads that spin
    while waiting stall 2-7x when another process shares the cores (measured by `behaviorlm bench`), and passive
    waiting costs nothing on an idle machine (left alone on GPU hosts); the package's messages on stderr."""
    if not gpu_host():
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    show_on_stderr()


def main(argv: list[str] | None = None) -> int:
    configure_process()
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else None)
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except InputError as exc:
        print(f"behaviorlm {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # a configuration section built from command-line options
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        print(f"behaviorlm {args.verb}: error: {where + ': ' if where else ''}{message}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A path named on the command line (or inside a file it names) that cannot be read or written: the
        # verbs check their own inputs first; this is the net under what they cannot foresee.
        if exc.errno not in USER_FIXABLE_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"behaviorlm {args.verb}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"behaviorlm {args.verb}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
