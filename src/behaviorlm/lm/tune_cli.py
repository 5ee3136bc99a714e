"""``behaviorlm tune``: one LoRA stage on a prepared dataset (the building block of A-Tuning and B-Tuning).

    behaviorlm tune --data runs/demo/data --out runs/demo/a-tuning --subset anchors --aux
    behaviorlm tune --data runs/demo/data --out runs/demo/b-tuning --subset selected_ids.txt \\
        --init-adapter runs/demo/a-tuning/adapter --set train.epochs=2

Interrupted? Rerun the same command: it resumes from the last checkpoint in ``--out``.
On several GPUs: ``torchrun --nproc_per_node N -m behaviorlm.cli tune ...`` (or ``accelerate launch``), or
``--set train.num_processes=N`` (``recipe.launch``). Each process trains on ``train.batch_size`` samples a step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from behaviorlm.data.types import PreparedData, Sample
from behaviorlm.errors import InputError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared dataset folder (from `behaviorlm prepare`)")
    parser.add_argument("--out", required=True,
                        help="stage folder: adapter/, checkpoints/, tune.json (rerun to resume after interruption)")
    parser.add_argument("--config", help="run config YAML (model, lora, train, aux sections are used)")
    parser.add_argument("--subset", default="all",
                        help="training samples: all, anchors (label is an anchor behavior), tail (label in the tail "
                             "group) or a file of sample ids (one per line, or a JSON list)")
    parser.add_argument("--aux", action="store_true",
                        help="mix in aux.ratio x (number of samples) general conversations (A-Tuning's auxiliary task)")
    parser.add_argument("--init-adapter", help="continue training this PEFT adapter folder (e.g. B-Tuning after A)")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip validation; the adapter is the last step instead of the best validation accuracy")
    parser.add_argument("--format", choices=["paper", "packed"],
                        help="prompt format (default: the config's prompt.format, else paper); packed trains many "
                             "samples of a user in one conversation")
    parser.add_argument("--prompt-seed", type=int, help="seed choosing each sample's instruction format "
                                                        "(default: train.seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set train.epochs=2 --set lora.r=16 (repeatable)")


def choose_subset(data: PreparedData, subset: str) -> list[Sample]:
    train = data.split("train")
    if subset == "all":
        return list(train)
    if subset in ("anchors", "anchor"):
        anchors = data.stats.anchors
        return [s for s in train if s.label in anchors]
    if subset == "tail":
        groups = data.stats.groups
        return [s for s in train if groups.get(s.label) == "tail"]
    path = Path(subset)
    if not path.is_file():
        raise InputError(f"--subset {subset!r}: expected all, anchors, tail or a file of sample ids")
    text = path.read_text()
    try:
        ids = [str(i) for i in json.loads(text)] if text.lstrip().startswith("[") else text.split()
    except json.JSONDecodeError:
        raise InputError("not a valid JSON list of sample ids", file=str(path)) from None
    by_id = {s.sample_id: s for s in train}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise InputError(f"{len(missing)} sample ids are not in the train split (first: {missing[0]!r})",
                         file=str(path))
    return [by_id[i] for i in ids]


def run(args: argparse.Namespace) -> int:
    from behaviorlm import distributed
    from behaviorlm.config import load_config
    from behaviorlm.recipe import launch

    overrides = list(args.set) + ([f"prompt.format={args.format}"] if args.format else [])
    config = load_config(args.config, overrides)
    data = PreparedData(args.data)
    samples = choose_subset(data, args.subset)
    if not samples:
        raise InputError(f"--subset {args.subset}: no training samples")
    if args.init_adapter and not (Path(args.init_adapter) / "adapter_config.json").is_file():
        raise InputError("not a PEFT adapter folder (no adapter_config.json)", file=args.init_adapter)
    n_aux = round(config.aux.ratio * len(samples)) if args.aux else 0
    main = distributed.is_main()  # under a launcher, one process reports
    if main:
        print(f"tuning {config.model.name} on {len(samples)} samples ({config.prompt.format} format) "
              f"+ {n_aux} conversations")
    result = launch.tune(config, data, Path(args.out), samples, aux=n_aux, init_adapter=args.init_adapter,
                         validate=not args.no_validate, prompt_seed=args.prompt_seed)
    if not main:
        return 0
    seconds = result["train_seconds"]
    best = f"; best validation accuracy {result['best_metric']:.4f}" if result["best_metric"] is not None else ""
    print(f"{result['steps']} steps on {result['targets']} targets in {seconds:.0f} s "
          f"({result['tokens'] / max(seconds, 1e-9):.0f} tokens/s){best}; adapter: {result['adapter']}")
    return 0
