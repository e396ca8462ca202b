"""Model sources (hub, local folder, GGUF, random), fetching them once as safetensors, and loading them."""

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from armor.hub.cache import blob_id, cached_file, check_links
from armor.hub.environment import prefetch_command
from armor.pipeline.checkpoint import atomic_dir
from armor.pipeline.fingerprint import write_model_identity

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as benchmark rows record it, e.g. float16."""
    return str(dtype).removeprefix("torch.")


class ModelFetchError(RuntimeError):
    """A model could not be fetched from its configured source."""


class ModelPlacementError(RuntimeError):
    """A model does not fit on the GPUs it was given."""


def package_file(package: str, file: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFetchError(f"package {package!r} is not installed (see README: make demo installs it)")
    path = Path(spec.submodule_search_locations[0]) / file
    if not path.exists():
        raise ModelFetchError(f"package {package!r} has no file {file!r}")
    return path


HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]


def _save_loaded(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Write a loaded model and its tokenizer as a Hugging Face folder."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _convert(folder: Path, spec: dict[str, Any], out: Path) -> None:
    """Load a folder holding only PyTorch .bin weights and save it as safetensors (the whole model in memory)."""
    log.warning("%s has no safetensors weights: loading the whole model once to convert it", folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[spec["dtype"]], local_files_only=True)
    _save_loaded(model, AutoTokenizer.from_pretrained(folder, local_files_only=True), out)


def source_path(spec: dict[str, Any], key: str) -> Path:
    """The folder of a local source or the file of a GGUF source, checked to exist; `key` is its config key."""
    if spec["source"] == "local":
        folder = Path(spec["path"]).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise ModelFetchError(f"{key}.path: {folder} is not a Hugging Face model folder (no config.json)")
        return folder
    path = Path(spec["path"]).expanduser() if "path" in spec else package_file(spec["package"], spec["file"])
    if not path.is_file():
        raise ModelFetchError(f"{key}.path: no GGUF file at {path}")
    return path


def _hub(spec: dict[str, Any], out: Path, key: str, prefetched: dict[str, Any]) -> dict[str, str]:
    """Link the model's files from the Hugging Face cache, as prefetched (weights in .bin only are converted once);
    returns the content digests the cache names them by."""
    name, revision = spec["id"], prefetched["revision"]
    if prefetched["repo"] != name:
        raise ModelFetchError(f"{key}: the prefetched record is for {prefetched['repo']!r}, not {name!r}; run the prefetch again")
    paths = {file: cached_file(name, file, revision=revision) for file in prefetched["files"]}
    if not any(file.endswith(".safetensors") for file in paths):
        staging = out / ".bin"
        staging.mkdir()
        for file, path in paths.items():
            (staging / Path(file).name).symlink_to(path)
        _convert(staging, spec, out)
        shutil.rmtree(staging)
        return {}
    for file, path in paths.items():
        (out / Path(file).name).symlink_to(path)
    return {Path(file).name: blob_id(path) for file, path in paths.items()}


def _local(spec: dict[str, Any], out: Path, key: str) -> None:
    """Link every file of a local Hugging Face model folder (converting .bin-only weights to safetensors)."""
    folder = source_path(spec, key)
    if not any(folder.glob("*.safetensors")):
        _convert(folder, spec, out)
        return
    for file in folder.iterdir():
        if file.is_file():
            (out / file.name).symlink_to(file)


def _gguf(spec: dict[str, Any], out: Path, key: str) -> None:
    """Dequantise a GGUF file (by path, or inside an installed package) into plain safetensors."""
    path = source_path(spec, key)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=DTYPES[spec["dtype"]])
    config = model.config
    del config.quantization_config  # a GGUF-loaded model only saves once this is gone
    plain = AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec["dtype"]])
    plain.load_state_dict(model.state_dict())
    _save_loaded(plain, tokenizer, out)


def _random(spec: dict[str, Any], out: Path, key: str) -> None:
    """Write a randomly initialised model of the configured architecture with a real tokenizer (tests)."""
    tok_path = package_file(spec["tokenizer"]["package"], spec["tokenizer"]["file"])
    tokenizer = AutoTokenizer.from_pretrained(tok_path.parent, gguf_file=tok_path.name)
    settings = dict(spec["config"])
    config = AutoConfig.for_model(settings.pop("model_type", "llama"), vocab_size=len(tokenizer), **settings)
    torch.manual_seed(spec["seed"])
    _save_loaded(AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec["dtype"]]), tokenizer, out)


SOURCES = {"local": _local, "gguf": _gguf, "random": _random}  # and hub, read from the cache


def fetch_model(spec: dict[str, Any], out_dir: Path, prefetched: dict[str, Any] | None = None) -> None:
    """Put the model's safetensors, config and tokenizer in out_dir (named as the model), atomically; check its blocks.

    A hub model is linked from the Hugging Face cache, never copied: `prefetched` is the record of its prefetch
    (armor.prefetch.fetch.prefetch_model), naming its commit and files."""
    key = f"models.{out_dir.name}"
    log.info("fetching model (%s source)", spec["source"])
    with atomic_dir(out_dir) as tmp:
        if spec["source"] == "hub":
            if prefetched is None:
                raise ModelFetchError(f"{key}: a hub model is read from the Hugging Face cache; prefetch it first ({prefetch_command()})")
            digests = _hub(spec, tmp, key, prefetched)
        else:
            SOURCES[spec["source"]](spec, tmp, key)
            digests = {}
        write_model_identity(tmp, digests)
        config = AutoConfig.from_pretrained(tmp, local_files_only=True)
        layers = getattr(config, "num_hidden_layers", None)
        if spec.get("num_layers") is not None and layers != spec["num_layers"]:
            raise ModelFetchError(
                f"{key}.num_layers is {spec['num_layers']} but the fetched {config.model_type} model has {layers} decoder blocks"
            )
    log.info("saved %s (%s, %s decoder blocks)", out_dir, config.model_type, layers)


def load_model(model_dir: Path, dtype: str, device: torch.device | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a fetched model and its tokenizer in eval mode, never touching the network.

    On a CUDA device the model is spread over every visible GPU (device_map="auto"); otherwise it stays on the CPU.
    """
    check_links(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    device_map = "auto" if device is not None and device.type == "cuda" else None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype], local_files_only=True, device_map=device_map)
    check_placement(model)
    return model.eval(), tokenizer


def check_placement(model: PreTrainedModel) -> None:
    """Refuse a model that `device_map="auto"` could not fit on the visible GPUs (modules offloaded to the CPU or disk)."""
    offloaded = [name or "the whole model" for name, where in getattr(model, "hf_device_map", {}).items() if where in ("cpu", "disk")]
    if offloaded:
        raise ModelPlacementError(
            f"the model does not fit on the {torch.cuda.device_count()} visible GPU(s): {len(offloaded)} of its modules "
            f"were offloaded to the CPU or disk (first: {offloaded[0]}), where they would run slowly or not at all; "
            "raise models.<name>.gpus"
        )


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a fetched model."""
    check_links(model_dir)
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def apply_weights(model: PreTrainedModel, weights: dict[str, Tensor]) -> None:
    """Overwrite parameters by their full names; dtypes and shapes must match exactly."""
    with torch.no_grad():
        for name, value in weights.items():
            param = model.get_parameter(name)
            if param.is_meta:
                raise ValueError(f"{name} is offloaded (on the meta device), so its pruned weight cannot be applied")
            if param.dtype != value.dtype or param.shape != value.shape:
                raise ValueError(f"{name}: expected {param.dtype} {tuple(param.shape)}, got {value.dtype} {tuple(value.shape)}")
            param.copy_(value)


def _gguf_blocks(path: Path) -> int:
    """The block count in a GGUF file's metadata."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    field = reader.fields[f"{arch}.block_count"]
    return int(field.parts[field.data[0]][0])


def num_blocks(spec: dict[str, Any], fetched: Path) -> int:
    """A model's number of decoder blocks, known before any job runs (the prune jobs fan out over them).

    `fetched` is the model's folder under results/models (it may not exist yet). From the fetched copy when it exists, else `num_layers` in the config, else the source itself (a random
    config, a local folder's config.json, a GGUF file's metadata); hub models must set `num_layers`.
    """
    if (fetched / "config.json").is_file():
        return AutoConfig.from_pretrained(fetched, local_files_only=True).num_hidden_layers
    if spec.get("num_layers") is not None:
        return spec["num_layers"]
    if spec["source"] == "random":
        return spec["config"]["num_hidden_layers"]
    key = f"models.{fetched.name}"
    if spec["source"] == "local":
        return json.loads((source_path(spec, key) / "config.json").read_text())["num_hidden_layers"]
    if spec["source"] == "gguf":
        return _gguf_blocks(source_path(spec, key))
    raise ModelFetchError(f"set {key}.num_layers (the number of decoder blocks) for hub models")
