"""ARMOR and baseline 2:4 pruning for Hugging Face causal language models."""

__version__ = "0.1.0"
