"""Fill the Hugging Face cache (HF_HOME) with what a config needs, where the network is: access first (gated
repositories and tokens, before anything large downloads), then each model, text source and lm-eval task, each
leaving a small record (its repository, commit, files and sizes) that the offline jobs read.

With HF_HUB_OFFLINE=1 nothing is downloaded: each step checks that the cache already holds its item (a site with a
shared, pre-filled cache).
"""

import fnmatch
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from armor.evaluation.downstream import load_tasks, task_name
from armor.hub.cache import cached_file, hub_cache, tree_size
from armor.hub.environment import OFFLINE, hf_home, offline
from armor.pipeline.models import HUB_FILES

log = logging.getLogger(__name__)


class PrefetchError(RuntimeError):
    """Something the config needs cannot be fetched; the message names each item and what to do."""


def _size(n: float) -> str:
    """Bytes in human units, e.g. 13.5 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _access_problem(repo: dict[str, str], token: bool) -> str | None:
    """What stops this process from reading a repository's files, or None."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    name, kind, page = repo["repo"], repo["kind"], f"{_endpoint()}/{'datasets/' if repo['kind'] == 'dataset' else ''}{repo['repo']}"
    try:
        HfApi().auth_check(name, repo_type=kind)
    except GatedRepoError:
        if token:
            return f"{name} ({repo['needed_by']}) is gated and the account of your token has not been granted access: accept its licence at {page}"
        return f"{name} ({repo['needed_by']}) is gated: accept its licence at {page}, then set HF_TOKEN to a read token of that account"
    except RepositoryNotFoundError:
        return f"no {kind} repository {name} on {_endpoint()} (check {repo['needed_by']}; a private one needs HF_TOKEN)"
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code == 401:
            return f"{name} ({repo['needed_by']}): the hub refused the token in HF_TOKEN (401); set a valid read token"
        return f"{name} ({repo['needed_by']}): {err.__class__.__name__}: {err}"
    except Exception as err:  # the HTTP client's connection and timeout errors
        return (f"cannot reach {_endpoint()} for {name} ({err.__class__.__name__}: {err}); run the prefetch where the "
                "network is, or set HF_ENDPOINT to your site's hub mirror")
    return None


def check_access(repos: list[dict[str, str]]) -> dict[str, Any]:
    """Check that every repository can be read with this process's token before anything downloads; PrefetchError
    naming every one that cannot (gated without an accepted licence or a token, missing, unreachable)."""
    from huggingface_hub import get_token

    if offline():
        log.info("HF_HUB_OFFLINE is set: access not checked; the prefetch steps check the cache instead")
        return {"endpoint": None, "checked": False, "repos": repos}
    token = get_token() is not None
    log.info("checking access to %d repositories on %s (%s)", len(repos), _endpoint(), "with a token" if token else "no token set")
    problems = [p for repo in repos if (p := _access_problem(repo, token))]
    if problems:
        raise PrefetchError("the prefetch cannot read:\n  - " + "\n  - ".join(problems))
    return {"endpoint": _endpoint(), "checked": True, "repos": repos}


def model_files(sizes: dict[str, int]) -> dict[str, int]:
    """The files of a model repository the workflow reads, with their sizes: its top-level safetensors, configs and
    tokenizer files, and its .bin weights only where it has no safetensors."""
    top = {name: size for name, size in sizes.items() if "/" not in name}
    chosen = {n: s for n, s in top.items() if any(fnmatch.fnmatch(n, p) for p in HUB_FILES)}
    if not any(n.endswith(".safetensors") for n in chosen):
        chosen |= {n: s for n, s in top.items() if n.endswith(".bin")}
    return chosen


def prefetch_model(repo: str, revision: str | None) -> dict[str, Any]:
    """Download a model's files into the cache (or, offline, find them there); its record."""
    from huggingface_hub import HfApi, get_cached_repo_tree, snapshot_download
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    if offline():
        folder = cached_file(repo, "config.json", revision=revision).parent
        try:  # the repository's listing, kept in the cache by the download
            listing = {f.path: f.size for f in get_cached_repo_tree(repo, revision=folder.name)}
        except CachedRepoTreeNotFoundError:  # a cache filled without one: what the snapshot holds
            listing = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
        files = model_files(listing)
    else:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
        files = model_files({s.rfilename: s.size or 0 for s in info.siblings or []})
        log.info("model %s: %d files, %s", repo, len(files), _size(sum(files.values())))
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=list(files)))
    for name in files:
        cached_file(repo, name, revision=folder.name)
    return {"kind": "model", "repo": repo, "revision": folder.name, "files": files}


def _commit(path: Path) -> str:
    """The commit of a cached file: the snapshot folder it lies in."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1]


def prefetch_text(repo: str, files: list[str]) -> dict[str, Any]:
    """Download files of a dataset repository into the cache (or, offline, find them there); its record."""
    from huggingface_hub import hf_hub_download

    paths = {}
    for file in files:
        if not offline():
            log.info("dataset %s: %s", repo, file)
            hf_hub_download(repo, file, repo_type="dataset")
        paths[file] = cached_file(repo, file, repo_type="dataset")
    return {"kind": "text", "repo": repo, "revision": _commit(next(iter(paths.values()))),
            "files": {file: path.stat().st_size for file, path in paths.items()}}


VERIFY = "import json, sys\nfrom armor.evaluation.downstream import load_tasks\nload_tasks(json.loads(sys.argv[1]), None)"


def prefetch_task(label: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Build one configured lm-eval task as the jobs do, which downloads its datasets and fills the datasets library's
    processed cache (offline: reads it), then check in a fresh offline process that it loads; its record."""
    _, loaded = load_tasks({label: spec}, None)
    item = loaded[label]
    leaves = item.get_all_tasks() if hasattr(item, "get_all_tasks") else [item]
    datasets = sorted({(t.config.dataset_path, t.config.dataset_name or "") for t in leaves if t.config.dataset_path})
    processed = sum(
        os.path.getsize(f["filename"]) for t in leaves if t.dataset is not None
        for files in t.dataset.cache_files.values() for f in files if os.path.isfile(f["filename"])
    )
    if not offline():
        done = subprocess.run([sys.executable, "-c", VERIFY, json.dumps({label: spec})], env={**os.environ, **OFFLINE},
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise PrefetchError(f"lm-eval task {task_name(spec)} (downstream.tasks.{label}) was fetched but does not load "
                                f"offline:\n{done.stderr[-2000:]}")
    log.info("task %s (%s): %d lm-eval task(s) on %d dataset(s), load offline", label, task_name(spec), len(leaves), len(datasets))
    return {"kind": "task", "label": label, "task": task_name(spec), "tasks": len(leaves),
            "datasets": [list(d) for d in datasets], "processed_bytes": processed}


def _repo_bytes(repo: str, kind: str) -> int:
    """Bytes a repository takes in the hub cache."""
    from huggingface_hub.file_download import repo_folder_name

    return tree_size(hub_cache() / repo_folder_name(repo_id=repo, repo_type=kind))


def cache_summary(records: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of what the cache holds for a config, from its prefetch records by name (the model, text source
    or task label): one row each, with the repositories, commits, files and sizes in the cache."""
    if not records:
        return f"Hugging Face cache: {hf_home()}\n\nNothing to fetch: the config names no hub model, hub text source or lm-eval harness task.\n"
    rows, total = [], 0
    for name, r in records.items():
        if r["kind"] == "task":
            repos = sorted({path for path, _ in r["datasets"]})
            size = sum(_repo_bytes(repo, "dataset") for repo in repos) + r["processed_bytes"]
            configs = len(r["datasets"])
            rows.append(f"| lm-eval task `{name}`: {r['task']} ({r['tasks']} task{'s' * (r['tasks'] > 1)}, {configs} dataset "
                        f"config{'s' * (configs > 1)}) | {', '.join(repos)} | | | {_size(size)} |")
        else:
            size = sum(r["files"].values())
            rows.append(f"| {r['kind']} `{name}` | {r['repo']} | {r['revision'][:12]} | {len(r['files'])} | {_size(size)} |")
        total += size
    head = [f"Hugging Face cache: {hf_home()}", "", "| item | repository | commit | files | size |", "|---|---|---|---|---|"]
    return "\n".join(head + rows + [f"| total | | | | {_size(total)} |", ""])
