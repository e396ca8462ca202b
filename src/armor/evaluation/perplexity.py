"""Perplexity over non-overlapping token windows: exp of the mean next-token NLL."""

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def perplexity(model: PreTrainedModel, windows: Tensor, batch_size: int = 1, device: torch.device = torch.device("cpu")) -> float:
    """exp(mean NLL) over every predicted token of every window (n, seqlen)."""
    total_nll, total_tokens = 0.0, 0
    n = windows.shape[0]
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = windows[start : start + batch_size].to(device)
            logits = model(batch, use_cache=False).logits[:, :-1].float()  # (b, seqlen-1, vocab)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
            total_nll += float(nll)
            total_tokens += batch[:, 1:].numel()
            log.info("perplexity: %d/%d windows, running ppl %.3f", min(start + batch_size, n), n, math.exp(total_nll / total_tokens))
    return math.exp(total_nll / total_tokens)
