"""Fetching models once into a plain safetensors copy, loading them, and finding their linears."""

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from armor.pipeline.checkpoint import atomic_dir

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


HUB_TIMEOUT_S = 20


class ModelFetchError(RuntimeError):
    """A model could not be fetched from its configured source."""


def package_file(package: str, file: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFetchError(f"package {package!r} is not installed (see README: make demo installs it)")
    path = Path(spec.submodule_search_locations[0]) / file
    if not path.exists():
        raise ModelFetchError(f"package {package!r} has no file {file!r}")
    return path


def _gguf(spec: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = package_file(spec["package"], spec["file"])
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=DTYPES[spec["dtype"]])
    config = model.config
    del config.quantization_config  # a GGUF-loaded model only saves once this is gone
    plain = AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec["dtype"]])
    plain.load_state_dict(model.state_dict())
    return plain, tokenizer


def _check_hub(name: str, revision: str | None) -> None:
    """Fail within seconds, naming the cause, when the hub is unreachable or has no such model (skipped offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        model_info(name, revision=revision, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as err:
        raise ModelFetchError(f"{name!r} is gated on the Hugging Face hub: accept its licence and set HF_TOKEN") from err
    except RepositoryNotFoundError as err:
        raise ModelFetchError(f"no model {name!r} on the Hugging Face hub (check models.<name>.id; private models need HF_TOKEN)") from err
    except RevisionNotFoundError as err:
        raise ModelFetchError(f"model {name!r} has no revision {revision!r} on the Hugging Face hub") from err
    except Exception as err:  # the HTTP client's connection and timeout errors
        raise ModelFetchError(
            f"cannot reach the Hugging Face hub to fetch {name!r} ({err.__class__.__name__}: {err}). Without network, use a "
            "local source (source: gguf), or fill the Hugging Face cache elsewhere and set HF_HUB_OFFLINE=1"
        ) from err


def _hub(spec: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    name, revision = spec["id"], spec.get("revision")
    _check_hub(name, revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=DTYPES[spec["dtype"]])
    except OSError as err:
        raise ModelFetchError(
            f"could not fetch {name!r} from the Hugging Face hub ({err.__class__.__name__}: {err}). "
            "Check the id, network access, and HF_TOKEN for gated models."
        ) from err
    return model, tokenizer


def _random(spec: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok_path = package_file(spec["tokenizer"]["package"], spec["tokenizer"]["file"])
    tokenizer = AutoTokenizer.from_pretrained(tok_path.parent, gguf_file=tok_path.name)
    settings = dict(spec["config"])
    config = AutoConfig.for_model(settings.pop("model_type", "llama"), vocab_size=len(tokenizer), **settings)
    torch.manual_seed(spec["seed"])
    return AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec["dtype"]]), tokenizer


SOURCES = {"gguf": _gguf, "hub": _hub, "random": _random}


def fetch_model(spec: dict[str, Any], out_dir: Path) -> None:
    """Load a model from its source and save model and tokenizer as plain safetensors, atomically."""
    log.info("fetching model (%s source)", spec["source"])
    model, tokenizer = SOURCES[spec["source"]](spec)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("saved %s (%.1f M parameters)", out_dir, sum(p.numel() for p in model.parameters()) / 1e6)


def load_model(model_dir: Path, dtype: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a fetched model (on the CPU, eval mode) and its tokenizer, never touching the network."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype], local_files_only=True)
    return model.eval(), tokenizer


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a fetched model."""
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder blocks of a causal LM (Llama, Qwen, Mistral layout)."""
    return model.model.layers


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers inside one decoder block, by their name within the block."""
    return {name: mod for name, mod in block.named_modules() if isinstance(mod, nn.Linear)}


def apply_weights(model: PreTrainedModel, weights: dict[str, Tensor]) -> None:
    """Overwrite parameters by their full names; dtypes and shapes must match exactly."""
    with torch.no_grad():
        for name, value in weights.items():
            param = model.get_parameter(name)
            if param.dtype != value.dtype or param.shape != value.shape:
                raise ValueError(f"{name}: expected {param.dtype} {tuple(param.shape)}, got {value.dtype} {tuple(value.shape)}")
            param.copy_(value)
