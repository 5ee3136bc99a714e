"""The llara variant's tuning stage: LoRA and LLaRA's projector tuned together on ``ft``'s samples, with the
history behaviors of every prompt carrying hybrid tokens (``lm.hybrid``).

The behavior embeddings come from a SASRec trained on the training split (validation split for early stopping) by
the project's baseline code, with the ``sasrec`` baseline's seed and ``baseline_params``: the same model that
baseline scores. It is trained once per stage and kept in ``STAGE/sasrec/``, so a resumed stage reuses it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from behaviorlm import distributed
from behaviorlm.config import RunConfig, TrainConfig
from behaviorlm.data.types import PreparedData, Sample, write_json_atomic
from behaviorlm.errors import InputError
from behaviorlm.files import atomic_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SASREC_FILE = "items.safetensors"


def sasrec_items(data: PreparedData, config: RunConfig, folder: Path) -> tuple[torch.Tensor, dict]:
    """(candidates, dim) behavior embeddings of a trained SASRec, rows in ``data.candidates`` order, and a summary
    of its training; read back from ``folder`` when a previous attempt already trained it."""
    from safetensors.torch import load_file, save_file

    from behaviorlm.baselines.run import make_baseline

    table, summary = folder / SASREC_FILE, folder / "sasrec.json"
    if table.is_file() and summary.is_file():
        return load_file(str(table))["items"], json.loads(summary.read_text())
    params = {"progress": False, **config.baseline_params}
    model = make_baseline("sasrec", data.candidates, seed=config.train.seed, **params)
    log.info("training the SASRec whose behavior embeddings llara's hybrid tokens carry")
    model.fit(data.split("train"), data.split("valid"))
    # Vocab: candidate i has id i + 1 (id 0 is padding).
    items = model.model.encoder.behavior.weight[1:len(data.candidates) + 1].detach().clone().contiguous()
    best = next((h for h in model.history if h["epoch"] == model.best_epoch), {})
    info = {"best_epoch": model.best_epoch, "valid_accuracy": best.get("valid_accuracy"),
            "train_samples": model.train_samples, "hparams": model.hparams()}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(table) as tmp:
        save_file({"items": items}, str(tmp))
    write_json_atomic(info, summary)
    return items, info


def tune(config: RunConfig, data: PreparedData, out: Path, samples: Sequence[Sample], *, aux: int = 0,
         train: TrainConfig | None = None, init_adapter: str | None = None) -> dict:
    """The stage (``launch.tune``'s signature): SASRec, the hybrid model, ``stages.tune_on_samples`` on
    ``samples``; ``hybrid.json`` beside the adapter. Returns the manifest's record, with the SASRec's summary."""
    from behaviorlm.lm import loading
    from behaviorlm.lm.hybrid import attach_hybrid, hybrid_lora, write_hybrid_file
    from behaviorlm.recipe.stages import tune_on_samples, variant_prompt

    if aux or init_adapter is not None:
        raise ValueError("llara is one stage from the base model, without auxiliary conversations")
    if distributed.world_size() > 1:
        raise InputError("llara tunes in one process: run it without a launcher (accelerate launch, torchrun)")
    train = train or config.train
    if train.num_processes > 1:
        log.warning("llara tunes in one process; train.num_processes %d is not used", train.num_processes)
    items, sasrec = sasrec_items(data, config, Path(out) / "sasrec")
    model, tokenizer = loading.load_model(config.model.name, config.model.device, config.model.dtype,
                                          trust_remote_code=config.model.trust_remote_code)
    attach_hybrid(model, tokenizer, data.candidates, items, seed=train.seed)
    model = hybrid_lora(model, config.lora, train.seed)
    hybrid = config.model_copy(update={"prompt": variant_prompt("llara", config.prompt)})
    result = tune_on_samples(hybrid, data, out, samples, train=train, loaded=(model, tokenizer))
    write_hybrid_file(result["adapter"], data.candidates, items.shape[1], {"sasrec": sasrec})
    return {**result, "sasrec": sasrec}
