"""The packed pruned model: a Hugging Face folder that plain transformers loads with trust_remote_code=True, and the
dense-equivalent export (A·core·B multiplied out, the standard architecture, no custom code).

Both are written one decoder block at a time: one safetensors file per block, one for the rest, and an index.
"""

import fnmatch
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from armor.hub.cache import link_file
from armor.inference import armor_linear
from armor.inference.armor_linear import compress_24
from armor.pipeline.assemble import INDEX, SHARD, run_files, run_metadata
from armor.pipeline.blocks import WeightFiles, block_linears, decoder_layers, layers_path, skeleton
from armor.pipeline.checkpoint import atomic_dir
from armor.pipeline.models import DTYPES, check_placement

log = logging.getLogger(__name__)

FORMAT, VERSION = "armor-packed", 2
CONFIGURATION = '''"""Configuration of a model pruned to 2:4 with armor-repro: the {base} configuration under model_type "armor"."""

from transformers import {config_class}


class ArmorConfig({config_class}):
    model_type = "armor"
'''
MODELING = '''"""A {base} causal LM whose decoder linears are 2:4 cores, with ARMOR's block-diagonal wrappers where it has them
(written by armor-repro; needs only torch and transformers)."""

from transformers import {model_class}

from .armor_linear import ArmorLinear
from .configuration_armor import ArmorConfig


class ArmorForCausalLM({model_class}):
    config_class = ArmorConfig

    def __init__(self, config: ArmorConfig) -> None:
        super().__init__(config)
        for name, spec in config.armor["layers"].items():
            parent, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent), child, ArmorLinear(spec["d_in"], spec["d_out"], spec["block_size"], spec["bias"]))
'''


def _fold(tensors: dict[str, Tensor], name: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A and B blocks with the NoWag norms folded in: A_p ← diag(r_out,p) A_p, B_q ← B_q diag(r_in,q)."""
    a, b = tensors[f"{name}.A"], tensors[f"{name}.B"]
    r_out = torch.nn.functional.pad(tensors[f"{name}.r_out"], (0, a.shape[0] * a.shape[1] - tensors[f"{name}.r_out"].numel()))
    r_in = torch.nn.functional.pad(tensors[f"{name}.r_in"], (0, b.shape[0] * b.shape[1] - tensors[f"{name}.r_in"].numel()))
    return (a * r_out.reshape(a.shape[0], a.shape[1], 1)).to(dtype), (b * r_in.reshape(b.shape[0], 1, b.shape[1])).to(dtype)


def _write_blocks(model_dir: Path, dtype: torch.dtype, pruned: Path, out: Path, linear: Any | None) -> None:
    """Write every block's tensors, with each pruned linear's weight replaced by linear(run tensors, name), then the
    rest; a dense run (no block files) keeps every tensor. Files: one per block, one for the rest, a Hugging Face index.
    """
    files, model = WeightFiles(model_dir), skeleton(model_dir, dtype)
    path, n_blocks = layers_path(model), len(decoder_layers(model))
    blocks = run_files(pruned)  # none for a dense run
    total = n_blocks + 1
    weight_map: dict[str, str] = {}
    for index in range(n_blocks):
        run = load_file(blocks[index]) if blocks else {}
        prefix = f"{path}.{index}."
        names = [prefix + name for name in block_linears(decoder_layers(model)[index])] if run else []
        state = files.load([n for n in files.names() if n.startswith(prefix) and n.removesuffix(".weight") not in names], dtype, torch.device("cpu"))
        for name in names:
            state |= linear(run, name)
        weight_map |= _save(state, out, SHARD.format(index + 1, total))
    rest = files.load([n for n in files.names() if not n.startswith(f"{path}.")], dtype, torch.device("cpu"))
    weight_map |= _save(rest, out, SHARD.format(total, total))
    (out / INDEX).write_text(json.dumps({"metadata": {"format": "pt"}, "weight_map": weight_map}, indent=1) + "\n")


def _save(state: dict[str, Tensor], out: Path, shard: str) -> dict[str, str]:
    """Write one safetensors shard; its entries of the weight map (tensor name -> shard)."""
    save_file({k: v.contiguous() for k, v in state.items()}, out / shard, metadata={"format": "pt"})
    return {name: shard for name in state}


TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model",
                   "*.tiktoken", "chat_template.*", "generation_config.json")


def _link_tokenizer(model_dir: Path, out: Path) -> None:
    """The base model's tokenizer files and generation config in out, linked, never copied (a hub model's are files of
    the Hugging Face cache)."""
    for file in sorted(model_dir.iterdir()):
        if file.is_file() and any(fnmatch.fnmatch(file.name, pattern) for pattern in TOKENIZER_FILES):
            link_file(file, out / file.name)


def pack(model_dir: Path, dtype: str, pruned: Path, out_dir: Path, card: str) -> None:
    """Write the packed model of one run: a folder that loads with AutoModelForCausalLM(..., trust_remote_code=True).

    Dense runs are the unchanged model in the standard architecture.
    """
    method, torch_dtype = run_metadata(pruned)["method"], DTYPES[dtype]
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    layers: dict[str, dict[str, Any]] = {}
    files = WeightFiles(model_dir)

    def packed_linear(run: dict[str, Tensor], name: str) -> dict[str, Tensor]:
        """The packed tensors of one pruned linear: 2:4 values and patterns, folded wrappers, bias."""
        core = run.get(f"{name}.core", run[f"{name}.weight"]).to(torch_dtype)
        values, patterns = compress_24(core)
        state = {f"{name}.values": values, f"{name}.patterns": patterns}
        if f"{name}.A" in run:
            state[f"{name}.A"], state[f"{name}.B"] = _fold(run, name, torch_dtype)
        layers[name] = {"d_out": core.shape[0], "d_in": core.shape[1], "block_size": int(state[f"{name}.A"].shape[-1]) if f"{name}.A" in state else 0,
                        "bias": f"{name}.bias" in files}
        return state

    with atomic_dir(out_dir) as tmp:
        if method == "dense":
            _write_blocks(model_dir, torch_dtype, pruned, tmp, None)
            config.save_pretrained(tmp)
        else:
            _write_blocks(model_dir, torch_dtype, pruned, tmp, packed_linear)
            base_config = type(config).__name__
            model_class = AutoModelForCausalLM._model_mapping[type(config)].__name__
            (tmp / "configuration_armor.py").write_text(CONFIGURATION.format(base=config.model_type, config_class=base_config))
            (tmp / "modeling_armor.py").write_text(MODELING.format(base=config.model_type, model_class=model_class))
            shutil.copyfile(armor_linear.__file__, tmp / "armor_linear.py")
            settings = config.to_dict() | {
                "model_type": "armor", "architectures": ["ArmorForCausalLM"], "dtype": dtype,
                "auto_map": {"AutoConfig": "configuration_armor.ArmorConfig", "AutoModelForCausalLM": "modeling_armor.ArmorForCausalLM"},
                "armor": {"format": FORMAT, "version": VERSION, "method": method, "base_model_type": config.model_type, "layers": layers},
            }
            (tmp / "config.json").write_text(json.dumps(settings, indent=2) + "\n")
        _link_tokenizer(model_dir, tmp)
        (tmp / "README.md").write_text(card)
    log.info("packed %s (%s): %.1f MB", out_dir, method, packed_bytes(out_dir) / 1e6)


def export_dense(model_dir: Path, dtype: str, pruned: Path, out_dir: Path, card: str) -> None:
    """Write the dense-equivalent model of one run: the standard architecture with each pruned linear's weight
    A·core·B multiplied out (the run's reconstructed weight), loadable and fine-tunable with any tool."""
    torch_dtype = DTYPES[dtype]
    with atomic_dir(out_dir) as tmp:
        _write_blocks(model_dir, torch_dtype, pruned, tmp, lambda run, name: {f"{name}.weight": run[f"{name}.weight"].to(torch_dtype)})
        AutoConfig.from_pretrained(model_dir, local_files_only=True).save_pretrained(tmp)
        _link_tokenizer(model_dir, tmp)
        (tmp / "README.md").write_text(card)
    log.info("exported %s: %.1f MB", out_dir, packed_bytes(out_dir) / 1e6)


def packed_bytes(path: Path) -> int:
    """Bytes of the weights files of a model folder."""
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def load_pruned(path: Path, device: str | torch.device = "cpu", dtype: torch.dtype | str = "auto") -> PreTrainedModel:
    """A packed model, loaded with plain transformers and the folder's own code, in eval mode and in `dtype` (`auto`:
    as saved): on CUDA spread over every visible GPU (device_map="auto"), otherwise on `device`."""
    spread = torch.device(device).type == "cuda"
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=dtype, local_files_only=True, device_map="auto" if spread else None)
    check_placement(model)
    return (model if spread else model.to(device)).eval()
