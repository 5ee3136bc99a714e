"""``behaviorlm run``: event log -> prepared data -> A-Tuning -> selection -> B-Tuning -> evaluation.

The run folder is the unit a user handles::

    RUN/config.yaml          the resolved configuration
    RUN/manifest.json        per stage: fingerprint, status, seconds, result; input hashes; versions
    RUN/data/                the prepared dataset (stats.json + splits)
    RUN/stages/<stage>-<fp>/ each tuning stage's checkpoints and adapter, each selection's samples
    RUN/<variant>/           metrics.json, predictions.parquet, model.json of every evaluated model
    RUN/baselines/<name>/    metrics.json of the sequential baselines
    RUN/embeddings/          the base model's embeddings of the behavior names (llm-esr, alphafuse), computed once

Each stage has a fingerprint (fp): a hash of the configuration it reads and of its upstream stages'
fingerprints. Rerunning skips stages whose fingerprint is unchanged and done, resumes a stage that was
interrupted (tuning continues from its last checkpoint), and reruns a stage whose configuration changed
together with everything downstream of it. Tuning and selection folders carry their fingerprint in
their name, so the experiments (seeds, ablations, few-shot curve) share one run folder and reuse every
stage they have in common, e.g. one A-Tuning for BehaviorLM and its B-Tuning ablations; a B-Tuning whose selection
picked exactly another's samples reuses that one's adapter instead of training the same thing again.

Launch on several GPUs with ``accelerate launch -m behaviorlm.cli run --config configs/llama-8b-gpu.yaml``:
tuning runs under Hugging Face Trainer, which shards the batches across processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from behaviorlm.config import RunConfig, dump_config, load_config
from behaviorlm.data.types import PreparedData, write_json_atomic, write_samples
from behaviorlm.errors import InputError
from behaviorlm.files import copy_tree_atomic, remove_stale, write_text_atomic
from behaviorlm.logs import run_log
from behaviorlm.recipe import launch, llara, stages
from behaviorlm.recipe.manifest import changed_output, load_manifest, output_hashes, write_record
from behaviorlm.recipe.seeding import seed_stage
from behaviorlm.recipe.selection import select_balanced

logger = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("behaviorlm", "torch", "transformers", "peft", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class Run:
    """A run folder with its manifest; ``stage()`` runs a step unless it is already done."""

    def __init__(self, root: Path, config: RunConfig):
        self.root = root
        self.config = config
        self.manifest_path = root / "manifest.json"
        removed = remove_stale(root, recursive=True)  # left by a killed run
        if removed:
            logger.info("removed %d temporary files and folders an interrupted run left", len(removed))
        self.manifest = load_manifest(root)

    def log(self, message: str) -> None:
        logger.info(message)

    def save_manifest(self) -> None:
        write_json_atomic(self.manifest, self.manifest_path)

    def record(self, name: str, folder: Path, record: dict) -> None:
        """A stage's record, in the manifest and in the stage's folder (what a damaged manifest is rebuilt from)."""
        self.manifest["stages"][name] = record
        if folder.is_dir():
            write_record(folder, name, record)
        self.save_manifest()

    def stage(self, name: str, folder: Path, fp: str, step: Callable[[Path], dict], copyable: str | None = None
              ) -> dict:
        """Run ``step(folder)`` unless done. ``copyable``: the name prefix of stages whose folder is ``RUN/<name
        without the prefix>`` and holds nothing but the step's output; a done one with the same fingerprint and
        folder name (an experiment evaluating a model the main run already evaluated) is copied, not recomputed."""
        record = self.manifest["stages"].get(name)
        damaged = None
        if record and record["fingerprint"] == fp and record["status"] == "done" and folder.exists():
            changed = changed_output(folder, record.get("outputs"))
            if changed is None:
                self.log(f"{name}: done, skipped")
                return record["result"]
            logger.warning("%s: %s since the stage finished; running it again", name, changed)
            damaged = record
            shutil.rmtree(folder)
        elif folder.exists() and (record is None or record["fingerprint"] != fp):
            self.log(f"{name}: configuration changed, starting over")
            shutil.rmtree(folder)
        twin = self._done_twin(name, folder, fp, copyable) if copyable else None
        if twin is not None:
            source, twin_record = twin
            started = time.perf_counter()
            copy_tree_atomic(source, folder)
            self.record(name, folder, {
                "fingerprint": fp, "status": "done", "seconds": round(time.perf_counter() - started, 1),
                "resumed": False, "result": twin_record["result"], "copied_from": str(source.relative_to(self.root)),
                "outputs": output_hashes(folder)})
            self.log(f"{name}: same model and settings as {source.relative_to(self.root)}, copied")
            return twin_record["result"]
        resuming = folder.exists()
        self.log(f"{name}: {'resuming' if resuming else 'running'}")
        started = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        self.record(name, folder, {
            "fingerprint": fp, "status": "running", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        seed_stage(self.config.train.seed, fp)
        result = step(folder)
        seconds = time.perf_counter() - started
        outputs = output_hashes(folder)
        if damaged is not None and outputs != damaged.get("outputs"):
            logger.warning("%s: the rerun's outputs differ from the first run's (not bitwise reproducible here); the "
                           "stages after it were built on the first", name)
        self.record(name, folder, {
            "fingerprint": fp, "status": "done", "seconds": round(seconds, 1), "resumed": resuming, "result": result,
            "outputs": outputs,
        })
        self.log(f"{name}: done in {seconds:.0f} s")
        return result

    def _done_twin(self, name: str, folder: Path, fp: str, prefix: str) -> tuple[Path, dict] | None:
        for other, record in self.manifest["stages"].items():
            if other == name or not other.startswith(prefix):
                continue
            source = self.root / other[len(prefix):]
            if (record["fingerprint"] == fp and record["status"] == "done" and source.name == folder.name
                    and source.is_dir()):
                return source, record
        return None


class Pipeline:
    def __init__(self, config: RunConfig, root: Path, eval_root: Path | None = None):
        self.config = config
        self.root = root
        self.eval_root = eval_root or root
        """Where each variant's metrics go: RUN itself for the main job, a sub-folder for an experiment."""
        self.run = Run(root, config)
        self.data: PreparedData | None = None
        self.fp: dict[str, str] = {}

    # -- stages --------------------------------------------------------------------------------
    def prepare(self) -> PreparedData:
        from behaviorlm.data.prepare import prepare_dataset

        cfg = self.config
        inputs = {"events_sha256": file_sha256(cfg.data.events)}
        self.run.manifest["inputs"] = inputs
        fp = fingerprint(cfg.data.model_dump(), cfg.simulator.model_dump() if cfg.data.events is None else None, inputs)
        folder = self.root / "data"

        def step(out: Path) -> dict:
            if out.exists():  # an interrupted prepare: it writes atomically, so start over
                shutil.rmtree(out)
            data = prepare_dataset(cfg.data, out, simulator=cfg.simulator)
            return {"samples": data.stats.samples, "behaviors": len(data.stats.behaviors)}

        self.run.stage("data", folder, fp, step)
        self.fp["data"] = fp
        self.data = PreparedData(folder)
        return self.data

    def tune_stage(self, model_stage: stages.ModelStage) -> str:
        """Runs (or skips) the tuning stages behind ``model_stage``; returns the adapter path relative to RUN."""
        if model_stage.tune_key in self.fp:
            return self.run.manifest["stages"][self.stage_name(model_stage.tune_key)]["result"]["adapter"]
        key = model_stage.tune_key
        cfg = self.config
        data = self.data
        if model_stage.selection is None:
            subset = model_stage.stage_one
            samples = stages.stage_one_samples(subset, data, cfg)
            n_aux = stages.aux_count(subset, len(samples), cfg)
            fp = fingerprint(self.fp["data"], subset, cfg.model.model_dump(), cfg.lora.model_dump(),
                             cfg.train.model_dump(), cfg.aux.model_dump() if n_aux else None, cfg.prompt.model_dump(),
                             [s.sample_id for s in samples], *([cfg.baseline_params] if subset == "llara" else []))
            init_adapter, train_cfg, upstream = None, cfg.train, {}
        else:
            stage_one = stages.ModelStage(model_stage.stage_one)
            init_adapter = str(self.root / self.tune_stage(stage_one))
            samples = self.select(model_stage, init_adapter)
            n_aux = 0
            fp = fingerprint(self.fp[model_stage.select_key], cfg.b_tuning.model_dump())
            train_cfg = cfg.b_tuning
            upstream = {"stage_one": self.stage_name(stage_one.tune_key),
                        "selection": self.stage_name(model_stage.select_key),
                        # Two selection rules can pick the same samples (CDS adds nothing when the stage-one model
                        # never answers a tail behavior): then the B-Tuning is the same training, done once.
                        "training_key": fingerprint(self.fp[stage_one.tune_key], [s.sample_id for s in samples],
                                                    cfg.b_tuning.model_dump())}

        def step(out: Path) -> dict:
            twin = self._same_training(upstream.get("training_key"), name)
            if twin is not None:
                twin_name, twin_result = twin
                write_json_atomic({"same_training_as": twin_name}, out / "same_training.json")
                self.run.log(f"{name}: the same samples, order and settings as {twin_name}; its adapter is reused")
                return {**twin_result, **upstream, "same_training_as": twin_name}
            tune = llara.tune if model_stage.stage_one == "llara" else launch.tune
            result = tune(cfg, data, out, samples, aux=n_aux, train=train_cfg, init_adapter=init_adapter)
            self.run.log(f"trained on {result['targets']} targets in {result['chats']} {result['prompt_format']} "
                         f"chats + {n_aux} conversations")
            return {**result, "adapter": stages.relative(Path(result["adapter"]), self.root), **upstream}

        self.fp[key] = fp
        name = self.stage_name(key)
        self._forget_if_twin_gone(name)
        return self.run.stage(name, self.root / "stages" / name, fp, step)["adapter"]

    def _same_training(self, training_key: str | None, name: str) -> tuple[str, dict] | None:
        """A finished B-Tuning stage (not a reuse itself) that trained on exactly these samples, in this order, from the
        same stage-one adapter with the same settings."""
        if training_key is None:
            return None
        for other, record in self.run.manifest["stages"].items():
            result = record.get("result") or {}
            if (other != name and record.get("status") == "done" and result.get("training_key") == training_key
                    and "same_training_as" not in result and (self.root / result["adapter"]).is_dir()):
                return other, result
        return None

    def _forget_if_twin_gone(self, name: str) -> None:
        """A stage that reused another's adapter runs again when that adapter is gone."""
        record = self.run.manifest["stages"].get(name)
        result = (record or {}).get("result") or {}
        if "same_training_as" in result and not (self.root / result["adapter"]).is_dir():
            logger.warning("%s: the adapter it reused (%s) is gone; training it", name, result["same_training_as"])
            del self.run.manifest["stages"][name]

    def stage_name(self, key: str) -> str:
        return f"{key}-{self.fp[key][:8]}"

    def select(self, model_stage: stages.ModelStage, scorer_adapter: str) -> list:
        key = model_stage.select_key
        cfg = self.config
        sel_cfg = stages.selection_config(model_stage.selection, cfg)
        fp = fingerprint(self.fp[stages.ModelStage(model_stage.stage_one).tune_key], sel_cfg.model_dump(),
                         cfg.eval.batch_size, *(["int8"] if cfg.eval.int8 else []))
        self.fp[key] = fp
        folder = self.root / "stages" / self.stage_name(key)
        data = self.data

        def step(out: Path) -> dict:
            out.mkdir(parents=True, exist_ok=True)
            predict_top1 = self._top1_predictor(scorer_adapter) if sel_cfg.difficulty else (lambda s: [])
            result = select_balanced(data.split("train"), data.stats.anchors, predict_top1, sel_cfg,
                                     chunk_size=cfg.eval.batch_size)
            write_samples(result.samples, out / "selected.parquet")
            summary = result.summary()
            write_json_atomic(summary, out / "selection.json")
            return {k: v for k, v in summary.items() if k not in ("kinds", "scanned")}

        self.run.stage(self.stage_name(key), folder, fp, step)
        from behaviorlm.data.types import read_samples

        return read_samples(folder / "selected.parquet")

    def _top1_predictor(self, adapter: str):
        from behaviorlm.lm.formats import rank_samples
        from behaviorlm.lm.loading import for_inference, load_model
        from behaviorlm.lm.ranking import CandidateRanker

        cfg = self.config
        model, tokenizer = load_model(cfg.model.name, cfg.model.device, cfg.model.dtype, adapter=adapter,
                                      trust_remote_code=cfg.model.trust_remote_code)
        model = for_inference(model, int8=cfg.eval.int8)
        ranker = CandidateRanker(model, tokenizer, batch_size=cfg.eval.batch_size, progress=False)
        candidates = self.data.candidates
        train = self.data.split("train")

        def predict_top1(samples) -> list[str]:
            ranked = rank_samples(ranker, samples, candidates, cfg.prompt, cfg.train.seed, context=train, k=1)
            return [r[0][0] for r in ranked]

        return predict_top1

    def evaluate(self, variant: str) -> dict:
        from behaviorlm.evaluation.evaluate import evaluate_model
        from behaviorlm.lm.loading import for_inference, load_model

        cfg = self.config
        model_stage = stages.model_stage(variant)
        adapter = self.tune_stage(model_stage) if model_stage else None
        upstream = self.fp[model_stage.tune_key] if model_stage else fingerprint(cfg.model.model_dump())
        prompt = stages.variant_prompt(variant, cfg.prompt)
        fp = fingerprint(self.fp["data"], upstream, cfg.eval.model_dump(), cfg.train.seed, prompt.model_dump())

        def step(out: Path) -> dict:
            model, tokenizer = load_model(cfg.model.name, cfg.model.device, cfg.model.dtype,
                                          adapter=str(self.root / adapter) if adapter else None,
                                          trust_remote_code=cfg.model.trust_remote_code)
            model = for_inference(model, int8=cfg.eval.int8)
            info = {"base_model": cfg.model.name, "adapter": adapter, "prompt_seed": cfg.train.seed,
                    **({"int8": True} if cfg.eval.int8 else {})}
            metrics = evaluate_model(model, tokenizer, self.data, out, variant, cfg.eval,
                                     prompt_seed=cfg.train.seed, model_info=info, prompt=prompt)
            return summarize(metrics)

        folder = self.eval_root / variant
        return self.run.stage(f"evaluate-{stages.relative(folder, self.root)}", folder, fp, step, copyable="evaluate-")

    def baseline(self, name: str) -> dict:
        from behaviorlm.baselines.run import LANGUAGE, NEURAL, run_baseline

        cfg = self.config
        seed = cfg.train.seed
        sizes = {"limit": cfg.eval.limit, "per_behavior": cfg.eval.per_behavior}
        params = dict(cfg.baseline_params) if name in NEURAL else {}
        language = {"language_model": cfg.model.name, "device": cfg.model.device, "dtype": cfg.model.dtype}
        # The base model enters only the LLM-enhanced baselines' fingerprints; the others' stay as they were.
        fp = fingerprint(self.fp["data"], name, seed, sizes, cfg.baseline_params,
                         *([language] if name in LANGUAGE else []))
        if name in LANGUAGE:
            params.update(language, trust_remote_code=cfg.model.trust_remote_code,
                          embedding_cache=self.root / "embeddings")

        def step(out: Path) -> dict:
            return summarize(run_baseline(name, self.data, out, seed=seed, **sizes, **params))

        folder = self.eval_root / "baselines" / name
        return self.run.stage(f"baseline-{stages.relative(folder, self.root)}", folder, fp, step, copyable="baseline-")

    # -- the whole run ---------------------------------------------------------------------------
    def execute(self) -> dict[str, dict]:
        self.root.mkdir(parents=True, exist_ok=True)
        with run_log(self.root / "log.txt"):
            if self.eval_root == self.root:
                write_text_atomic(self.root / "config.yaml", dump_config(self.config))
            self.run.manifest.update({"versions": package_versions(), "created": self.run.manifest.get(
                "created", datetime.now(timezone.utc).isoformat(timespec="seconds"))})
            started = time.perf_counter()
            self.prepare()
            results = {variant: self.evaluate(variant) for variant in self.config.variants}
            for name in self.config.baselines:
                results[name] = self.baseline(name)
            self.run.manifest["last_run_seconds"] = round(time.perf_counter() - started, 1)
            self.run.save_manifest()
        return results


def summarize(metrics: dict) -> dict:
    """The six metrics of each protocol with their 95 % intervals (``ci95``), as the manifest records them."""
    keys = ("prec_w", "rec_w", "overall", "head", "medium", "tail")
    return {p: {**{k: metrics[p].get(k) for k in keys}, "ci95": {k: (metrics[p].get("ci95") or {}).get(k)
                                                                  for k in keys}}
            for p in ("next_behavior", "long_tail") if p in metrics}


def print_table(results: dict[str, dict]) -> None:
    """Each model's six metrics with their 95 % intervals (bootstrap over users)."""
    keys = ("prec_w", "rec_w", "overall", "head", "medium", "tail")
    print(f"{'model':<14}" + "".join(f"{k:>18}" for k in keys[:2]) + " |" + "".join(f"{k:>18}" for k in keys[2:]))
    for name, result in results.items():
        cells = []
        for protocol, shown in (("next_behavior", keys[:2]), ("long_tail", keys[2:])):
            values = result.get(protocol, {})
            for key in shown:
                value, ci = values.get(key), (values.get("ci95") or {}).get(key)
                text = "-" if value is None else f"{value:.3f}" + (f" [{ci[0]:.2f},{ci[1]:.2f}]" if ci else "")
                cells.append(f"{text:>18}")
        print(f"{name:<14}" + "".join(cells[:2]) + " |" + "".join(cells[2:]))


def print_differences(root: Path, names: list[str]) -> None:
    """BehaviorLM minus each other model on the same samples, with the paired bootstrap's 95 % interval."""
    from behaviorlm.evaluation.report.artifacts import PROTOCOL_SHORT, load_run
    from behaviorlm.evaluation.report.tables import paired

    if "behaviorlm" not in names:
        return
    run = load_run(root)
    shown = [("long_tail", "overall"), ("long_tail", "head"), ("long_tail", "tail"), ("next_behavior", "rec_w")]
    lines = []
    for other in (n for n in names if n != "behaviorlm"):
        cells = []
        for protocol, metric in shown:
            diff = paired(run, "behaviorlm", other, protocol, metric)
            if diff is not None and diff.value is not None and diff.ci95 is not None:
                mark = "" if diff.significant else " n.s."
                low, high = diff.ci95
                cells.append(f"{PROTOCOL_SHORT[protocol]} {metric} {diff.value:+.3f} [{low:+.3f}, {high:+.3f}]{mark}")
        if cells:
            lines.append(f"  behaviorlm - {other}: " + "; ".join(cells))
    if lines:
        print("\npaired differences on the same samples (95 % interval over users; n.s. = it includes 0):")
        print("\n".join(lines))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run configuration (see configs/)")
    parser.add_argument("--out", help="run folder (default: runs/<config name>); rerun to resume")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=2 --set variants=[ft,behaviorlm]")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    root = Path(args.out or Path("runs") / Path(args.config).stem)
    if config.data.events is not None and not Path(config.data.events).is_file():
        raise InputError("events file not found", file=config.data.events)
    if config.eval.int8:
        from behaviorlm.lm.loading import check_int8

        check_int8(config.model.device)
    results = launch.orchestrate(lambda: Pipeline(config, root).execute())  # only rank 0 opens the run folder
    if results is None:  # a rank that served rank 0's tuning stages
        return 0
    print(f"\nrun folder: {root}   (next-behavior: prec_w rec_w | long-tail: overall head medium tail)")
    print_table(results)
    print_differences(root, list(results))
    return 0
