"""A model's decoder blocks one at a time: a weightless skeleton, weights read lazily from its safetensors, and the
exact inputs the model's own forward gives each block."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from armor.hub.cache import check_links

LAYER_PATHS = ("model.layers", "model.decoder.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers")


class UnsupportedModelError(ValueError):
    """The model has no list of decoder blocks this package can prune block by block."""


def layers_path(model: nn.Module) -> str:
    """Where a causal LM keeps its decoder blocks (e.g. 'model.layers'); UnsupportedModelError if nowhere known."""
    for path in LAYER_PATHS:
        try:
            if isinstance(model.get_submodule(path), nn.ModuleList):
                return path
        except AttributeError:
            continue
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    raise UnsupportedModelError(
        f"model type {model_type!r} ({type(model).__name__}) has no list of decoder blocks at any of {', '.join(LAYER_PATHS)}; "
        "block-by-block pruning supports decoder-only transformers such as llama, mistral, qwen2, qwen3, phi3, gemma2 and gemma3_text"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM."""
    return model.get_submodule(layers_path(model))


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers inside one decoder block, by their name within the block."""
    return {name: mod for name, mod in block.named_modules() if isinstance(mod, nn.Linear)}


class WeightFiles:
    """The tensors of a saved model folder, read lazily by name (one safetensors file, or shards with an index)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.exists():
            self.where = {name: self.folder / file for name, file in json.loads(index.read_text())["weight_map"].items()}
        elif (self.folder / "model.safetensors").exists():
            with self._open(self.folder / "model.safetensors", "cpu") as f:
                self.where = {name: self.folder / "model.safetensors" for name in f.keys()}
        else:
            raise FileNotFoundError(f"{self.folder} holds no model.safetensors or model.safetensors.index.json")

    def _open(self, file: Path, device: str) -> Any:
        """safe_open of one weight file; a damaged file is a ValueError naming it."""
        try:
            return safe_open(file, framework="pt", device=device)
        except Exception as err:  # safetensors raises its own error type for a truncated or garbled file
            raise ValueError(f"{file} is not a readable safetensors file ({err}); delete {self.folder} and fetch the model again") from err

    def __contains__(self, name: str) -> bool:
        """Whether a tensor of that name is stored."""
        return name in self.where

    def names(self) -> list[str]:
        """Every stored tensor name."""
        return list(self.where)

    def load(self, names: list[str], dtype: torch.dtype | None, device: torch.device) -> dict[str, Tensor]:
        """The named tensors on `device`; floating ones converted to `dtype` when given."""
        missing = [n for n in names if n not in self.where]
        if missing:
            raise KeyError(f"{self.folder}: no tensors {missing[:5]}")
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.where[name], []).append(name)
        out = {}
        for file, file_names in by_file.items():
            with self._open(file, str(device)) as f:
                for name in file_names:
                    tensor = f.get_tensor(name)
                    out[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        return out


def skeleton(model_dir: Path, dtype: torch.dtype) -> PreTrainedModel:
    """The model's modules with parameters on the meta device (no memory), buffers real, in eval mode."""
    check_links(model_dir)
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    layers_path(model)
    return model.eval()


def _assign(module: nn.Module, prefix: str, files: WeightFiles, dtype: torch.dtype, device: torch.device, skip: tuple[str, ...] = ()) -> None:
    """Load every saved tensor of `module` (names under `prefix`, none starting with any of `skip`) from files onto `device`."""
    names = [n for n in files.names() if n.startswith(prefix) and not n.startswith(skip)]
    state = {n.removeprefix(prefix): t for n, t in files.load(names, dtype, device).items()}
    module.load_state_dict(state, strict=False, assign=True)


def load_block(
    model: PreTrainedModel, index: int, files: WeightFiles, dtype: torch.dtype, device: torch.device, given: dict[str, Tensor] | None = None,
) -> nn.Module:
    """Decoder block `index` with its weights read from files onto `device` (the rest of the model untouched), except
    those `given` by full parameter name (e.g. a run's pruned linears), which are used instead and never read."""
    block, prefix, given = decoder_layers(model)[index], f"{layers_path(model)}.{index}.", given or {}
    wrong = [n for n, t in given.items() if not n.startswith(prefix) or t.dtype != dtype]
    if wrong:
        raise ValueError(f"block {index}: given tensors {wrong[:5]} are not this block's in {dtype}")
    _assign(block, prefix, files, dtype, device, skip=tuple(given))
    unknown = block.load_state_dict({n.removeprefix(prefix): t for n, t in given.items()}, strict=False, assign=True).unexpected_keys
    if unknown:
        raise KeyError(f"block {index} has no parameters {unknown[:5]}")
    left = [n for n, p in block.named_parameters() if p.is_meta]
    if left:
        raise KeyError(f"{files.folder}: block {index} has no saved weights for {left[:5]}")
    return block.to(device)


def release_block(model: PreTrainedModel, index: int) -> None:
    """Free decoder block `index`: its parameters go back to the meta device (buffers, which are not saved, stay)."""
    for module in decoder_layers(model)[index].modules():
        for name, param in module.named_parameters(recurse=False):
            setattr(module, name, nn.Parameter(param.to("meta"), requires_grad=False))


def load_outside_blocks(model: PreTrainedModel, files: WeightFiles, dtype: torch.dtype, device: torch.device) -> None:
    """Materialise everything but the decoder blocks (embeddings, final norm, head, rotary buffers) on `device`."""
    path = layers_path(model)
    _assign(model, "", files, dtype, device, skip=(f"{path}.",))
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    parent, _, child = path.rpartition(".")
    holder = model.get_submodule(parent)
    layers = getattr(holder, child)
    setattr(holder, child, nn.ModuleList())  # move the rest without touching the weightless blocks
    try:
        left = [n for n, p in model.named_parameters() if p.is_meta]
        if left:
            raise KeyError(f"{files.folder}: no saved weights for {left[:5]}")
        model.to(device)
    finally:
        setattr(holder, child, layers)


class _Stop(Exception):
    pass


def block_inputs(model: PreTrainedModel, windows: Tensor, device: torch.device) -> tuple[Tensor, list[dict[str, Any]]]:
    """The hidden states entering block 0 for every window (n, seq, d), and every block's own keyword arguments.

    Each block's forward is swapped for a recorder while the model runs its forward once per window, so each
    block receives exactly what the model gives it (its layer type's mask and rotary embedding included) and
    no block weight is needed. Keyword arguments come from a batch of one window; they broadcast over batches.
    """
    layers = decoder_layers(model)
    first: Tensor | None = None  # (n, seq, d), allocated at the first window: no second copy from a concatenation
    kwargs: list[dict[str, Any]] = [{} for _ in layers]
    row = 0

    def recorder(index: int) -> Callable[..., Tensor]:
        """A forward for block `index` that records its input and arguments and passes the input through."""
        def forward(*args: Any, **kw: Any) -> Tensor:
            nonlocal first
            hidden = args[0] if args else kw.pop("hidden_states")
            if index == 0:
                if first is None:
                    first = hidden.new_empty((windows.shape[0], *hidden.shape[1:]))
                first[row : row + 1] = hidden
            if not kwargs[index]:
                kwargs[index] = dict(kw) | {"use_cache": False}
            if index == len(layers) - 1:
                raise _Stop
            return hidden

        return forward

    with _replaced_forwards(layers, recorder), torch.no_grad():
        for row, ids in enumerate(windows):
            try:
                model(ids[None].to(device), use_cache=False)
            except _Stop:
                pass
    return first, kwargs


@contextmanager
def _replaced_forwards(layers: nn.ModuleList, make: Callable[[int], Callable[..., Tensor]]) -> Iterator[None]:
    """Every decoder block's forward replaced by make(index) inside the context."""
    for index, layer in enumerate(layers):
        layer.forward = make(index)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def head_logits(model: PreTrainedModel, ids: Tensor, final: Tensor) -> Tensor:
    """The model's logits (b, seq, vocab) for ids (b, seq) whose hidden states leaving the last block are final (b, seq, d).

    The model runs its own forward with every block passing its input through and block 0 returning `final`, so
    the final norm, the head and any logit soft-capping are the model's own; no block weight is needed.
    """

    def passthrough(index: int) -> Callable[..., Tensor]:
        """A forward for block `index`: `final` from block 0, the input unchanged from the others."""
        def forward(*args: Any, **kw: Any) -> Tensor:
            return final if index == 0 else (args[0] if args else kw["hidden_states"])

        return forward

    with _replaced_forwards(decoder_layers(model), passthrough):
        return model(ids, use_cache=False).logits


def run_block(block: nn.Module, hidden: Tensor, kwargs: dict[str, Any], batch_size: int, out: Tensor | None = None) -> Tensor:
    """Outputs of one decoder block for all windows (n, seq, d), in batches; written into `out` when given (may be hidden)."""
    outs = []
    with torch.no_grad():
        for start in range(0, hidden.shape[0], batch_size):
            result = block(hidden[start : start + batch_size], **kwargs)
            result = result[0] if isinstance(result, tuple) else result
            if out is None:
                outs.append(result)
            else:
                out[start : start + batch_size] = result
    return torch.cat(outs) if out is None else out


class BlockRunner:
    """Calibration windows fed through a model's decoder blocks, each block in memory only while it runs."""

    def __init__(self, model_dir: Path, dtype: torch.dtype, windows: Tensor, device: torch.device, batch_size: int) -> None:
        self.model = skeleton(model_dir, dtype)
        self.files = WeightFiles(model_dir)
        self.dtype, self.device, self.batch_size = dtype, device, batch_size
        self.prefix = layers_path(self.model)
        load_outside_blocks(self.model, self.files, dtype, device)
        self.hidden, self.kwargs = block_inputs(self.model, windows, device)

    def __len__(self) -> int:
        """The number of decoder blocks."""
        return len(decoder_layers(self.model))

    def load(self, index: int, given: dict[str, Tensor] | None = None) -> nn.Module:
        """Block `index`, materialised on the device (tensors `given` by full name used instead of the saved ones)."""
        return load_block(self.model, index, self.files, self.dtype, self.device, given)

    def release(self, index: int) -> None:
        """Free block `index`: its parameters go back to the meta device."""
        release_block(self.model, index)

    def run(self, index: int, block: nn.Module, hidden: Tensor, out: Tensor | None = None) -> Tensor:
        """Block `index`'s outputs for `hidden`, with the arguments the model gives that block (into `out` when given)."""
        return run_block(block, hidden, self.kwargs[index], self.batch_size, out)

    def logits(self, ids: Tensor, final: Tensor) -> Tensor:
        """The model's logits for ids (b, seq) from the hidden states leaving its last block (b, seq, d)."""
        with torch.no_grad():
            return head_logits(self.model, ids.to(self.device), final)
