"""The jobs' view of the Hugging Face cache: every job runs offline on the cache at HF_HOME; only the prefetch rules
use the network, with the settings the user started the workflow with.

Nothing here imports huggingface_hub or datasets, which read these variables once, when first imported.
"""

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PREFETCH_COMMAND_ENV = "ARMOR_PREFETCH_COMMAND"  # how a job's error tells the user to fill the cache
NETWORK_ENV = "ARMOR_HUB_NETWORK"  # the offline settings the workflow was started with, as JSON, for the prefetch
TRUE = ("1", "true", "yes", "on")


def hf_home(environ: Mapping[str, str] = os.environ) -> Path:
    """The Hugging Face cache folder, absolute: HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface."""
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser().resolve()
    cache = environ.get("XDG_CACHE_HOME") or Path(environ.get("HOME") or Path.home()) / ".cache"
    return (Path(cache).expanduser() / "huggingface").resolve()


def prefetch_command_for(configfiles: Sequence[str | Path], workflow_dir: Path) -> str:
    """The `make prefetch` call (in the workflow's folder) for a workflow run on these config files."""
    files = [os.path.relpath(Path(f).resolve(), workflow_dir) for f in configfiles]
    if files in ([], ["config.yaml"]):
        return "make prefetch"
    return f"make prefetch CONFIG={shlex.quote(' '.join(files))}"


def job_environment(environ: Mapping[str, str], prefetch_command: str) -> dict[str, str]:
    """The variables every job runs with: offline hub and datasets, the cache's absolute path, the prefetch command,
    and (kept from the first process that set it) the user's own offline settings for the prefetch rules."""
    network = environ.get(NETWORK_ENV) or json.dumps({key: environ.get(key, "0") for key in OFFLINE})
    return {**OFFLINE, "HF_HOME": str(hf_home(environ)), PREFETCH_COMMAND_ENV: prefetch_command, NETWORK_ENV: network}


def use_network() -> None:
    """Give this process the offline settings the workflow was started with (unset: online), before huggingface_hub
    or datasets is imported: the prefetch rules' way out of the jobs' offline environment."""
    os.environ.update(json.loads(os.environ.get(NETWORK_ENV) or json.dumps(dict.fromkeys(OFFLINE, "0"))))


def offline() -> bool:
    """Whether this process may not reach the hub (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in TRUE


def prefetch_command() -> str:
    """The command that fills the cache for this workflow's config."""
    return os.environ.get(PREFETCH_COMMAND_ENV, "make prefetch")


class NotInCacheError(FileNotFoundError):
    """Something a job reads from the Hugging Face cache is not there."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is not in the Hugging Face cache at {hf_home()}. Jobs run offline: fetch it with "
            f"`{prefetch_command()}` where the network is (README: on a SLURM cluster)"
        )
