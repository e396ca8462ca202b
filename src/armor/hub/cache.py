"""Files of hub repositories read from the Hugging Face cache without the network, and what the cache holds."""

import os
from pathlib import Path

from armor.hub.environment import NotInCacheError, hf_home


def hub_cache() -> Path:
    """The hub's file cache, as huggingface_hub finds it: HF_HUB_CACHE, else HF_HOME/hub."""
    return Path(os.environ["HF_HUB_CACHE"]).expanduser() if os.environ.get("HF_HUB_CACHE") else hf_home() / "hub"


def cached_file(repo_id: str, filename: str, repo_type: str = "model", revision: str | None = None) -> Path:
    """The cached copy of one file of a hub repository (revision: a commit, branch or tag; default main); raises
    NotInCacheError naming the repository and the file."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache(), revision=revision, repo_type=repo_type)
    if not isinstance(found, str) or not os.path.isfile(found):
        at = f" at revision {revision}" if revision else ""
        raise NotInCacheError(f"{filename} of the {repo_type} repository {repo_id}{at}")
    return Path(found)


def blob_id(path: Path) -> str:
    """The content digest the cache names a file's blob by (SHA-256 for LFS files, the git blob id otherwise)."""
    return Path(os.path.realpath(path)).name


def link_file(src: Path, dst: Path) -> None:
    """The file `src` resolves to, at `dst` without a second copy: a hard link, or a symbolic link where the filesystem
    refuses one (another device)."""
    real = Path(os.path.realpath(src))
    try:
        os.link(real, dst)
    except OSError:
        dst.symlink_to(real)


def check_links(folder: Path) -> None:
    """Raise NotInCacheError naming the first file of a folder whose link into the cache leads nowhere."""
    for path in sorted(folder.iterdir()):
        if path.is_symlink() and not path.exists():
            target = os.readlink(path)
            repo = next((p for p in Path(target).parts if p.startswith(("models--", "datasets--"))), None)
            where = f" of the {repo.split('--', 1)[0][:-1]} repository {'/'.join(repo.split('--')[1:])}" if repo else ""
            raise NotInCacheError(f"{path.name}{where} (linked from {folder})")


def tree_size(path: Path) -> int:
    """Bytes of the files under a folder, each blob counted once (links followed, dangling ones skipped)."""
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            real = os.path.realpath(os.path.join(root, name))
            if real not in seen and os.path.isfile(real):
                seen.add(real)
                total += os.path.getsize(real)
    return total
