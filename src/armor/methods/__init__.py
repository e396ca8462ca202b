"""The registry of pruning methods and their common block-level interface."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from armor.methods import armor, magnitude, nowag, sparsegpt, wanda
from armor.methods.base import LayerResult, LayerStats, fill_dead_inputs

BlockPruner = Callable[[dict[str, Tensor], dict[str, LayerStats], dict[str, Any]], dict[str, LayerResult]]


@dataclass(frozen=True)
class Method:
    """How a method prunes one decoder block and which statistics it needs."""

    name: str
    prune_block: BlockPruner | None  # None: the method leaves the weights as they are
    hessian: Callable[[dict[str, Any]], bool] = lambda options: False  # whether it reads XᵀX/n with these options
    default_mode: str = "independent"  # calibration mode: as the method's reference code calibrates

    def needs_hessian(self, options: dict[str, Any]) -> bool:
        """Whether pruning with these options reads XᵀX/n, which the calibration pass then records."""
        return self.hessian(options)


def per_layer(prune: Callable[..., Tensor], settings: tuple[str, ...] = ()) -> BlockPruner:
    """Lift a one-layer pruning function to a block pruner; `settings` are the options it takes by keyword."""

    def prune_block(
        weights: dict[str, Tensor], stats: dict[str, LayerStats], options: dict[str, Any]
    ) -> dict[str, LayerResult]:
        """Each linear of the block pruned on its own."""
        given = {key: options[key] for key in settings if key in options}
        return {name: LayerResult(prune(w, stats[name], **given)) for name, w in weights.items()}

    return prune_block


def with_dead_inputs_filled(prune_block: BlockPruner) -> BlockPruner:
    """A block pruner that sees h with its dead inputs filled (`fill_dead_inputs`), as NoWag-P and ARMOR's reference code."""

    def filled(weights: dict[str, Tensor], stats: dict[str, LayerStats], options: dict[str, Any]) -> dict[str, LayerResult]:
        """The wrapped pruner on the filled statistics."""
        return prune_block(weights, fill_dead_inputs(stats), options)

    return filled


METHODS: dict[str, Method] = {
    "dense": Method("dense", None, default_mode="none"),
    "magnitude": Method("magnitude", per_layer(magnitude.prune)),
    "wanda": Method("wanda", per_layer(wanda.prune), default_mode="sequential"),
    "sparsegpt": Method("sparsegpt", per_layer(sparsegpt.prune, ("percdamp", "blocksize")), hessian=lambda options: True, default_mode="sequential"),
    "nowag_p": Method("nowag_p", with_dead_inputs_filled(per_layer(nowag.prune))),
    "armor": Method("armor", with_dead_inputs_filled(armor.prune_block), hessian=armor.needs_hessian),
}


def get_method(name: str) -> Method:
    """Look a method up by name; the error lists the known ones."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
