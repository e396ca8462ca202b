"""A stand-in Hugging Face hub for tests: serves repositories from a folder over HTTP, as HF_ENDPOINT.

`root/models/<org>/<name>/` and `root/datasets/<org>/<name>/` are repositories, each with one commit (a digest of its
files) that `main` resolves to. It answers what huggingface_hub and datasets ask of the hub: repository info, trees,
paths-info, auth checks and file downloads (ranges included). Repositories named in `gated` answer file downloads
and auth checks only for `Authorization: Bearer <token>`, with the hub's GatedRepo error otherwise. Every request is
recorded; a request through it as an HTTP proxy (an absolute URL or CONNECT) is recorded and refused, so a test that
points HTTP(S)_PROXY here sees every outgoing request of a run.
"""

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".gz", ".zst", ".arrow")  # stored in LFS on the real hub
LAST_MODIFIED = "2024-01-01T00:00:00.000Z"


@dataclass
class RepoFile:
    """One file of a repository with the digests the hub reports."""

    path: str
    size: int
    blob_id: str  # git blob SHA-1
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        """What the hub sends as the file's ETag: the LFS SHA-256, else the git blob id."""
        return self.sha256 or self.blob_id


@dataclass
class Repo:
    """A repository: its type, id, folder, files and commit."""

    kind: str  # "model" or "dataset"
    repo_id: str
    folder: Path
    files: dict[str, RepoFile] = field(default_factory=dict)
    commit: str = ""


def _load_repo(kind: str, repo_id: str, folder: Path) -> Repo:
    """Index a repository folder: every file's digests and the repository's commit."""
    repo = Repo(kind, repo_id, folder)
    commit = hashlib.sha1(f"{kind}/{repo_id}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        name = path.relative_to(folder).as_posix()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        sha256 = hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else None
        repo.files[name] = RepoFile(name, len(data), blob, sha256)
        commit.update(f"{name}:{blob}".encode())
    repo.commit = commit.hexdigest()
    return repo


def load_repos(root: Path) -> dict[tuple[str, str], Repo]:
    """Every repository under root/models and root/datasets, by (kind, repo id)."""
    repos = {}
    for kind in ("model", "dataset"):
        base = root / f"{kind}s"
        for folder in sorted(base.glob("*/*")) if base.is_dir() else []:
            repo_id = folder.relative_to(base).as_posix()
            repos[kind, repo_id] = _load_repo(kind, repo_id, folder)
    return repos


def _tree_entry(repo: Repo, path: str) -> dict:
    """The tree/paths-info entry of a file or folder."""
    if path in repo.files:
        f = repo.files[path]
        entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": path}
        if f.sha256:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        return entry
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _tree(repo: Repo, folder: str, recursive: bool) -> list[dict]:
    """The entries under a folder ('' = the root), recursively or one level."""
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    paths: set[str] = set()
    for name in repo.files:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        for depth in range(1, len(parts) + 1 if recursive else 2):
            paths.add(prefix + "/".join(parts[:depth]))
    return [_tree_entry(repo, p) for p in sorted(paths)]


class StandInHub:
    """The server: start(), .url, .requests (method and path of every request), stop()."""

    def __init__(self, root: Path, gated: tuple[str, ...] = (), token: str | None = None) -> None:
        self.repos = load_repos(root)
        self.gated = set(gated)
        self.token = token
        self.requests: list[str] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                """Quiet: requests are recorded in hub.requests instead."""

            def do_CONNECT(self) -> None:  # noqa: N802
                hub._record(f"CONNECT {self.path}")
                self._send(403, {"error": "outgoing request refused by the stand-in hub"})

            def do_HEAD(self) -> None:  # noqa: N802
                hub._handle(self, "HEAD")

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                hub._handle(self, "POST")

            def _send(self, status: int, body: object, headers: dict | None = None, head: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint, e.g. http://127.0.0.1:40123."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StandInHub":
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "StandInHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, line: str) -> None:
        with self._lock:
            self.requests.append(line)

    def _authorised(self, handler: BaseHTTPRequestHandler, repo: Repo) -> str | None:
        """None when the request may read the repository's files, else the hub's error message."""
        if repo.repo_id not in self.gated:
            return None
        auth = handler.headers.get("Authorization", "")
        if not auth:
            return f"Access to {repo.kind} {repo.repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in."
        if auth != f"Bearer {self.token}":
            return f"Access to {repo.kind} {repo.repo_id} is restricted and you are not in the authorized list."
        return None

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Route one request."""
        self._record(f"{method} {handler.path}")
        if not handler.path.startswith("/"):  # used as a proxy: an outgoing request
            handler._send(403, {"error": "outgoing request refused by the stand-in hub"}, head=method == "HEAD")
            return
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/") if p]
        body = b""
        if method == "POST":
            body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        try:
            self._route(handler, method, parts, query, body)
        except KeyError as err:
            handler._send(404, {"error": f"{err.args[0]}"}, {"X-Error-Code": "RepoNotFound"}, head=method == "HEAD")

    def _repo(self, kind: str, org: str, name: str) -> Repo:
        if (kind, f"{org}/{name}") not in self.repos:
            raise KeyError(f"Repository Not Found for {kind} {org}/{name}")
        return self.repos[kind, f"{org}/{name}"]

    def _check_revision(self, handler: BaseHTTPRequestHandler, repo: Repo, revision: str, head: bool) -> bool:
        if revision in ("main", repo.commit):
            return True
        handler._send(404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}, head=head)
        return False

    def _route(self, handler: BaseHTTPRequestHandler, method: str, parts: list[str], query: dict, body: bytes) -> None:
        head = method == "HEAD"
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            repo = self._repo(parts[1][:-1], parts[2], parts[3])
            rest = parts[4:]
            if rest[:1] == ["auth-check"]:
                denied = self._authorised(handler, repo)
                if denied:
                    handler._send(401 if "Please log in" in denied else 403, {"error": denied}, {"X-Error-Code": "GatedRepo"})
                else:
                    handler._send(200, {"ok": True})
                return
            if not rest or rest[0] == "revision":
                if rest and not self._check_revision(handler, repo, rest[1], head):
                    return
                handler._send(200, self._info(repo), head=head)
                return
            if rest[0] == "tree":
                if self._check_revision(handler, repo, rest[1], head):
                    recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
                    handler._send(200, _tree(repo, "/".join(rest[2:]), recursive), head=head)
                return
            if rest[0] == "paths-info":
                if self._check_revision(handler, repo, rest[1], head):
                    form = parse_qs(body.decode()) if body else {}
                    paths = form.get("paths", [])
                    if not paths and body.startswith(b"{"):
                        paths = json.loads(body).get("paths", [])
                    known = [p for p in paths if p in repo.files or any(f.startswith(p.rstrip("/") + "/") for f in repo.files)]
                    handler._send(200, [_tree_entry(repo, p) for p in known])
                return
            raise KeyError(f"no such endpoint: {'/'.join(parts)}")
        kind = "dataset" if parts[:1] == ["datasets"] else "model"
        parts = parts[1:] if kind == "dataset" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(kind, parts[0], parts[1])
            if not self._check_revision(handler, repo, parts[3], head):
                return
            denied = self._authorised(handler, repo)
            if denied:
                handler._send(401 if "Please log in" in denied else 403, {"error": denied}, {"X-Error-Code": "GatedRepo"}, head=head)
                return
            self._send_file(handler, repo, "/".join(parts[4:]), head)
            return
        raise KeyError(f"no such endpoint: {'/'.join(parts)}")

    def _info(self, repo: Repo) -> dict:
        """The repository info the hub's API returns."""
        return {
            "_id": repo.commit[:24], "id": repo.repo_id, "sha": repo.commit, "private": False, "disabled": False,
            "gated": "manual" if repo.repo_id in self.gated else False, "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED, "downloads": 0, "likes": 0, "tags": [], "cardData": {},
            "siblings": [
                {"rfilename": f.path, "size": f.size, "blobId": f.blob_id}
                | ({"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}} if f.sha256 else {})
                for f in repo.files.values()
            ],
        }

    def _send_file(self, handler: BaseHTTPRequestHandler, repo: Repo, path: str, head: bool) -> None:
        """A file's bytes (or a range of them) with the hub's headers."""
        if path not in repo.files:
            handler._send(404, {"error": f"Entry not found: {path}"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}, head=head)
            return
        f = repo.files[path]
        data = (repo.folder / path).read_bytes()
        status, start, end = 200, 0, len(data) - 1
        ranged = handler.headers.get("Range", "")
        if ranged.startswith("bytes=") and not head:
            lo, _, hi = ranged[len("bytes=") :].partition("-")
            start = int(lo) if lo else max(0, len(data) - int(hi))
            end = min(int(hi), len(data) - 1) if hi and lo else len(data) - 1
            status = 206
        chunk = data[start : end + 1]
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(chunk)))
        handler.send_header("ETag", f'"{f.etag}"')
        handler.send_header("X-Repo-Commit", repo.commit)
        handler.send_header("Accept-Ranges", "bytes")
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        handler.end_headers()
        if not head:
            handler.wfile.write(chunk)
