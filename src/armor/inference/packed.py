"""The packed pruned model: compressed 2:4 cores, folded A/B blocks, and `load_pruned`."""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from armor.inference.armor_linear import ArmorLinear
from armor.pipeline.assemble import run_metadata
from armor.pipeline.blocks import block_linears, decoder_layers
from armor.pipeline.checkpoint import atomic_dir
from armor.pipeline.models import DTYPES, load_model
from armor.pipeline.runs import block_tensors
from armor.sparsity import GROUP, KEEP, PATTERNS

log = logging.getLogger(__name__)

FORMAT, VERSION = "armor-packed", 1
CODE_TO_PATTERN = torch.full((GROUP * GROUP,), -1, dtype=torch.long)  # first*4 + second kept position -> id
CODE_TO_PATTERN[PATTERNS[:, 0] * GROUP + PATTERNS[:, 1]] = torch.arange(len(PATTERNS))
META = "armor.json"


def compress_24(weight: Tensor) -> tuple[Tensor, Tensor]:
    """2:4 weight (d_out, d_in) -> kept values (d_out, d_in/2) and pattern ids, two per byte (d_out, d_in/8)."""
    groups = weight.reshape(weight.shape[0], -1, GROUP)
    nonzero = groups != 0
    if (nonzero.sum(-1) > KEEP).any():
        raise ValueError("weight is not 2:4: a group of 4 holds more than 2 non-zeros")
    order = nonzero.float() * GROUP - torch.arange(GROUP, dtype=torch.float32)  # non-zeros first, then leftmost
    kept = order.topk(KEEP, dim=-1).indices.sort(-1).values  # (d_out, n_groups, 2)
    pattern = (kept[..., 0] * GROUP + kept[..., 1])  # unique code per pair
    ids = CODE_TO_PATTERN[pattern].to(torch.uint8)
    if ids.shape[-1] % 2:
        ids = torch.nn.functional.pad(ids, (0, 1))
    packed = ids[..., 0::2] | (ids[..., 1::2] << 4)
    return groups.gather(-1, kept).reshape(weight.shape[0], -1), packed


def decompress_24(values: Tensor, packed: Tensor, d_in: int) -> Tensor:
    """Inverse of `compress_24`: the dense 2:4 weight (d_out, d_in)."""
    ids = torch.stack([packed & 0xF, packed >> 4], -1).reshape(packed.shape[0], -1)[:, : d_in // GROUP].long()
    kept = PATTERNS.to(values.device)[ids]  # (d_out, n_groups, 2)
    dense = values.new_zeros(values.shape[0], d_in // GROUP, GROUP)
    dense.scatter_(-1, kept, values.reshape(values.shape[0], -1, KEEP))
    return dense.reshape(values.shape[0], d_in)


def _fold(tensors: dict[str, Tensor], name: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A and B blocks with the NoWag norms folded in: A_p ← diag(r_out,p) A_p, B_q ← B_q diag(r_in,q)."""
    a, b = tensors[f"{name}.A"], tensors[f"{name}.B"]
    r_out = torch.nn.functional.pad(tensors[f"{name}.r_out"], (0, a.shape[0] * a.shape[1] - tensors[f"{name}.r_out"].numel()))
    r_in = torch.nn.functional.pad(tensors[f"{name}.r_in"], (0, b.shape[0] * b.shape[1] - tensors[f"{name}.r_in"].numel()))
    a = a * r_out.reshape(a.shape[0], a.shape[1], 1)
    b = b * r_in.reshape(b.shape[0], 1, b.shape[1])
    return a.to(dtype), b.to(dtype)


def pack(model_dir: Path, dtype: str, pruned: Path, out_dir: Path) -> None:
    """Write the packed model of one run: model.safetensors, armor.json, config and tokenizer."""
    model, tokenizer = load_model(model_dir, dtype)
    meta = run_metadata(pruned)
    tensors = {k: v for block in block_tensors(pruned) for k, v in block.items()}
    torch_dtype = DTYPES[dtype]
    state: dict[str, Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    linear_names = set()
    for i, block in enumerate(decoder_layers(model)):
        for name, lin in block_linears(block).items():
            full = f"model.layers.{i}.{name}"
            linear_names.add(f"{full}.weight")
            core = tensors.get(f"{full}.core", tensors.get(f"{full}.weight", lin.weight.detach())).to(torch_dtype)
            layers[full] = {"d_out": lin.out_features, "d_in": lin.in_features, "block_size": 0}
            if meta.get("method") == "dense":
                state[f"{full}.weight"] = core
                layers[full]["dense"] = True
                continue
            state[f"{full}.values"], state[f"{full}.patterns"] = compress_24(core)
            if f"{full}.A" in tensors:
                state[f"{full}.A"], state[f"{full}.B"] = _fold(tensors, full, torch_dtype)
                layers[full]["block_size"] = int(tensors[f"{full}.A"].shape[-1])
    for key, value in model.state_dict().items():
        if key not in linear_names and not (key == "lm_head.weight" and model.config.tie_word_embeddings):
            state[key] = value.detach().contiguous()
    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors")
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"format": FORMAT, "version": VERSION, "method": meta.get("method"), "dtype": dtype, "layers": layers}
        (tmp / META).write_text(json.dumps(info, indent=1) + "\n")
    log.info("packed %s (%s): %.1f MB", out_dir, meta.get("method"), packed_bytes(out_dir) / 1e6)


def packed_bytes(path: Path) -> int:
    """Bytes of the weights file of a packed or plain model folder."""
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def load_pruned(path: Path, device: str | torch.device = "cpu", sparse_kernels: bool = True) -> PreTrainedModel:
    """A transformers model whose decoder linears are ArmorLinear modules, from a packed folder.

    With `sparse_kernels`, cores switch to PyTorch's semi-structured 2:4 layout where the device supports it.
    """
    path = Path(path)
    info = json.loads((path / META).read_text())
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise ValueError(f"{path} is not an {FORMAT} v{VERSION} folder")
    dtype = DTYPES[info["dtype"]]
    state = load_file(path / "model.safetensors", device=str(device))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    for name, spec in info["layers"].items():
        if spec.get("dense"):
            core = state.pop(f"{name}.weight")
        else:
            core = decompress_24(state.pop(f"{name}.values"), state.pop(f"{name}.patterns"), spec["d_in"])
        a, b = (state.pop(f"{name}.A"), state.pop(f"{name}.B")) if spec["block_size"] else (None, None)
        _set_module(model, name, ArmorLinear(core, a, b, is_24=not spec.get("dense")))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = {key for key in missing if key.rpartition(".")[0] not in info["layers"]} - tied  # ArmorLinears are set
    if unexpected or missing:
        raise ValueError(f"{path}: unexpected tensors {unexpected[:5]}, missing tensors {sorted(missing)[:5]}")
    model.to(device)
    if tied:
        model.tie_weights()
    if sparse_kernels:
        switched = sum(m.to_sparse() for m in model.modules() if isinstance(m, ArmorLinear))
        log.info("semi-structured 2:4 kernels on %d layers", switched)
    return model.eval()
