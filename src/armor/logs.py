"""Logging setup for workflow steps: a log file plus stderr."""

import logging
import sys
from typing import Any

from armor.hub.environment import hf_home, offline
from armor.software import software


def setup(log_file: str | None = None) -> None:
    """Log INFO and above with timestamps to stderr and, when given, to `log_file`, starting with the software the step
    runs in (image or host, torch, transformers) and whether it may reach the Hugging Face hub; an error that ends the
    step is logged with its traceback."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", handlers=handlers, force=True
    )
    log = logging.getLogger(__name__)
    log.info("software: %s", ", ".join(f"{k} {v}" for k, v in software().items()))
    log.info("Hugging Face hub %s, cache %s", "offline" if offline() else "online", hf_home())
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    """Log an error that ends the step, with its traceback, so it is in the step's log file and not only on stderr."""
    logging.getLogger("armor").critical("the step failed: %s: %s", kind.__name__, error, exc_info=(kind, error, trace))
