"""Testing aids for the fault matrix: a pause, or a SIGKILL, after a number of finished blocks of any block loop."""

import logging
import os
import signal
import time

log = logging.getLogger(__name__)

FAULT_ENV = "ARMOR_FAULT_AFTER_BLOCKS"  # SIGKILL this process after N newly finished blocks of the stage below
STAGE_ENV = "ARMOR_FAULT_STAGE"  # the stage FAULT_ENV applies to: calibrate, prune (the default) or assemble
DELAY_ENV = "ARMOR_DELAY_PER_BLOCK"  # sleep this many seconds after each newly pruned block (time-limit tests)


def after_block(stage: str, finished: int, index: int) -> None:
    """In prune, sleep DELAY_ENV seconds; in the stage STAGE_ENV names, SIGKILL this process once FAULT_ENV blocks finished."""
    delay = float(os.environ.get(DELAY_ENV, "0"))
    if delay and stage == "prune":
        log.warning("%s=%g: sleeping after block %d", DELAY_ENV, delay, index)
        time.sleep(delay)
    fault_after = int(os.environ.get(FAULT_ENV, "0"))
    if fault_after and finished >= fault_after and stage == os.environ.get(STAGE_ENV, "prune"):
        log.warning("%s=%d: killing this process after %s block %d", FAULT_ENV, fault_after, stage, index)
        os.kill(os.getpid(), signal.SIGKILL)
