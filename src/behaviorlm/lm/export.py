"""``behaviorlm export``: a run's model as one standalone Hugging Face folder, the adapter merged into the weights.

    behaviorlm export --run runs/demo --model behaviorlm --out models/behaviorlm-demo

The folder holds ``config.json``, ``model.safetensors`` (sharded for large models), ``generation_config.json``, the
tokenizer files and ``behaviorlm.json`` (where it came from and the prompt format it was tuned in), so
``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads it without PEFT, and ``behaviorlm evaluate --model
DIR`` scores it as the adapter on its base model scores. The merge runs on the device the model is loaded on
(``--device``, default: a GPU when there is one) in the run's dtype (``--dtype`` to change it): an 8B model in
bfloat16 merges in ~16 GB of GPU memory, and ``save_pretrained`` writes it in shards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from behaviorlm.errors import InputError, check_destination
from behaviorlm.files import atomic_path, remove_stale

MARKER = "behaviorlm.json"
"""Written into every export; an existing folder with it may be replaced by a new export, no other folder."""


def check_out(out_dir: str | Path) -> Path:
    out_dir = check_destination(out_dir, directory=True)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise InputError("exists and is not an exported model; choose another --out", file=str(out_dir))
    return out_dir


def save_merged(model, tokenizer, out_dir: str | Path, info: dict | None = None) -> Path:
    """Merge the adapter of ``model`` (a PEFT model; others are saved as they are) where the model lies and save the
    standalone model, its tokenizer and generation config into ``out_dir``, written beside it and renamed into
    place (a previous export there is replaced only once the new one is complete)."""
    from transformers import GenerationConfig

    from behaviorlm.lm.loading import merged_adapter

    out_dir = check_out(out_dir)
    merged = merged_adapter(model)
    if getattr(merged, "generation_config", None) is None:
        merged.generation_config = GenerationConfig.from_model_config(merged.config)
    if merged.generation_config.pad_token_id is None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    remove_stale(out_dir.parent, only=out_dir.name)
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        merged.generation_config.save_pretrained(str(tmp))  # also when the model class cannot generate
        tokenizer.save_pretrained(str(tmp))
        (tmp / MARKER).write_text(json.dumps(info or {}, indent=2, default=str))
    return out_dir


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from behaviorlm.serving.batch import add_trust_options

    parser.add_argument("--run", required=True, help="run folder")
    parser.add_argument("--model", help="which RUN/<model> (default: behaviorlm, else a tuned one)")
    parser.add_argument("--out", required=True, help="folder to write the standalone model to")
    parser.add_argument("--device", default="auto", help="where to merge: auto (a GPU when there is one), cpu, cuda:1 ...")
    parser.add_argument("--dtype", help="weights' dtype: float32, bfloat16, float16 (default: the run's model.dtype)")
    add_trust_options(parser)


def run(args: argparse.Namespace) -> int:
    from behaviorlm.lm import loading
    from behaviorlm.lm.hybrid import is_hybrid
    from behaviorlm.serving.api import read_model_json, resolve_run

    check_out(args.out)
    root = Path(args.run)
    _stats, history_len, source, _batch = resolve_run(root, args.model, trust_remote_code=args.trust_remote_code,
                                                      base_model=args.base_model, adapter=args.adapter)
    if source.adapter is None:
        raise InputError(f"model {source.label!r} has no adapter: it is its base model {source.base_model!r} "
                         "already; nothing to merge", file=str(root))
    if is_hybrid(source.adapter):
        raise InputError(f"model {source.label!r} is a llara model: its hybrid behavior tokens live outside the "
                         "language model's weights, so it has no plain-model form; score it with `behaviorlm evaluate "
                         "--run`", file=str(root))
    dtype = args.dtype or source.dtype
    loading.pick_dtype(dtype)  # an unknown dtype fails before the model is loaded
    model, tokenizer = loading.load_model(source.base_model, args.device, dtype, adapter=str(source.adapter),
                                          trust_remote_code=source.trust_remote_code)
    info = read_model_json(root / source.label)
    record = {"run": str(root.resolve()), "model": source.label, "base_model": source.base_model,
              "adapter": str(source.adapter), "prompt": info.get("prompt") or {"format": source.prompt_format},
              "prompt_seed": info.get("prompt_seed"), "history_len": history_len,
              "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    out = save_merged(model, tokenizer, args.out, record)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.0f} MB): {source.label} = {source.base_model} + {source.adapter} merged, "
          f"{record['dtype']}; prompt format {record['prompt'].get('format')}")
    return 0
