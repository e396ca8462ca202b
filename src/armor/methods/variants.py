"""The methods a config runs, each by its name: a method with its section's settings, or a named variant of one (its
own settings, run beside it in the same DAG with its own runs, checkpoints and table rows).

A run is labelled as the paper's or as ours everywhere: ARMOR is the paper's with its Adam solver on its diagonal
proxy and ours with another solver or proxy; the baselines are their papers'; a variant is ours unless the config
says `origin: paper`.
"""

from dataclasses import dataclass
from typing import Any

LABELS = {"dense": "Dense", "magnitude": "Magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT", "nowag_p": "NoWag-P", "armor": "ARMOR"}
SOLVER_LABELS = {"gauss_newton": "Gauss–Newton", "sweep": "sweep", "exact": "exact"}
PROXY_LABELS = {"block_covariance": "block covariance"}
REFIT_LABEL = "XᵀX refit"


@dataclass(frozen=True)
class Variant:
    """One configured method name: the method it runs, how it is labelled, whose settings they are, and its settings."""

    name: str
    method: str
    label: str
    origin: str  # "paper" or "ours"
    settings: dict[str, Any]

    @property
    def is_armor(self) -> bool:
        """Whether it runs ARMOR (once per block size, with a trace and snapshots)."""
        return self.method == "armor"

    def block_sizes(self, default: list[int]) -> list[int]:
        """The block sizes it runs at: its own `block_sizes` setting, else `default` (ARMOR); [0] for the others."""
        return self.settings.get("block_sizes", default) if self.is_armor else [0]

    def iterations(self, block_size: int) -> int:
        """ARMOR's iterations at one block size: its entry in iterations_by_block_size, else iterations."""
        by_size = {int(k): v for k, v in self.settings.get("iterations_by_block_size", {}).items()}
        return by_size.get(block_size, self.settings["iterations"])


def _default_label(method: str, settings: dict[str, Any]) -> tuple[str, str]:
    """A method's label and origin from its settings: ARMOR is the paper's only with Adam on the diagonal proxy."""
    if method != "armor":
        return LABELS[method], "paper"
    ours = [SOLVER_LABELS[settings["solver"]]] if settings.get("solver", "adam") != "adam" else []
    ours += [PROXY_LABELS[settings["proxy"]]] if settings.get("proxy", "diagonal") != "diagonal" else []
    ours += [REFIT_LABEL] if settings.get("refit_steps", 0) else []
    return (f"ARMOR, {', '.join(ours)} (ours)", "ours") if ours else (LABELS[method], "paper")


def configured(config: dict[str, Any]) -> dict[str, Variant]:
    """Every name in the config's methods, resolved: a method with its section's settings, or a variant of one with
    its own on top; labels are unique."""
    out: dict[str, Variant] = {}
    for name in config["methods"]:
        spec = config.get("variants", {}).get(name, {"method": name})
        method = spec["method"]
        settings = {**config.get(method, {}), **spec.get("settings", {})}
        label, origin = _default_label(method, settings)
        if name != method:
            origin = spec.get("origin", origin if method == "armor" else "ours")
            label = spec.get("label", label)
        if origin == "ours" and "(ours)" not in label:
            label += " (ours)"
        if any(v.label == label for v in out.values()):
            label += f" [{name}]"
        out[name] = Variant(name, method, label, origin, settings)
    return out
