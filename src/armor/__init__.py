"""ARMOR and baseline 2:4 pruning for Hugging Face causal language models.

`armor.prune_layer(weight, h, method, **options)` prunes one linear layer; the workflow (Snakefile) prunes,
evaluates and tabulates whole models with the same code.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["prune_layer"]


def __getattr__(name: str) -> Any:
    """Import the public API on first use, so `import armor.config` stays free of torch."""
    if name == "prune_layer":
        from armor.api import prune_layer

        return prune_layer
    raise AttributeError(f"module 'armor' has no attribute {name!r}")
