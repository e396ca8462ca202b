"""CPU-side tuning for the optimiser's many short-lived, multi-megabyte tensors."""

import ctypes
import ctypes.util
import logging

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper bound on 64-bit


def keep_freed_memory() -> bool:
    """Stop glibc from unmapping freed tensors (each new one would page-fault again); False if not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    log.debug("glibc mallopt %s", "applied" if ok else "refused")
    return ok


def flush_denormals() -> bool:
    """Flush denormal floats to zero in this process (Adam's second moments and the damping terms of Gauss–Newton decay
    into them, and on x86 each operation on one costs many normal ones); False where the CPU cannot."""
    ok = torch.set_flush_denormal(True)
    log.debug("flush denormals %s", "on" if ok else "unsupported")
    return ok


def tune_cpu() -> None:
    """The optimiser's CPU settings for this process: freed tensors stay mapped and denormals are flushed to zero."""
    keep_freed_memory()
    flush_denormals()
