"""A stand-in for the Hugging Face hub: a real HTTP server on 127.0.0.1 that answers the requests
`huggingface_hub` (snapshot_download, hf_hub_download, HfFileSystem) and `datasets` (load_dataset) make,
for repositories kept as plain folders, and serves an NLTK data index.

It exists because the hub itself cannot be reached here: the rehearsal and its tests point HF_ENDPOINT
at it and every other piece (huggingface_hub, datasets, lm-eval, the bigcode harness, Docker) is real.
Only what those clients read is implemented, in the hub's JSON shapes:

  GET  /api/{models,datasets}/{repo}[/revision/{rev}]     repo info: sha, siblings, gated
  GET  /api/{models,datasets}/{repo}/tree/{rev}[/{path}]  files and folders (recursive=1 for all)
  POST /api/{models,datasets}/{repo}/paths-info/{rev}     the entries of the paths asked for
  HEAD|GET /{repo}/resolve/{rev}/{path}, /datasets/{repo}/resolve/{rev}/{path}   file bytes, with
           X-Repo-Commit, ETag and Content-Length as the hub sends them
  GET  /nltk/index.xml, /nltk/packages/{file}             an NLTK downloader index (MERGEBENCH_NLTK_INDEX)

A repository is the folder `<root>/{models,datasets}/ORG/NAME/`; its revision is a hash of its files, so
a changed file is a new commit. A file `.gated` in it makes the repository gated: requests without
`Authorization: Bearer <token>` (the server's token) get the hub's 401 with X-Error-Code GatedRepo.
Every request that matches nothing is logged to `misses` (and answered 404 RepoNotFound / EntryNotFound),
which is how a new client request shows up.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GATED_MARK = ".gated"
KINDS = {"models": "models", "datasets": "datasets", "model": "models", "dataset": "datasets"}


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


_BLOB_SHAS: dict[tuple[str, int, int], str] = {}


def blob_sha(path: Path) -> str:
    """git's blob id of a file, as the hub's oid; remembered by (path, size, mtime): models are large and
    every request describes the whole repository."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _BLOB_SHAS:
        digest = hashlib.sha1(b"blob %d\0" % st.st_size)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _BLOB_SHAS[key] = digest.hexdigest()
    return _BLOB_SHAS[key]


class Repo:
    """One repository folder and what the hub says about it."""

    def __init__(self, folder: Path, repo_id: str):
        self.folder, self.id = folder, repo_id
        self.files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                            if p.is_file() and p.name != GATED_MARK)
        digest = hashlib.sha1()
        for name in self.files:
            digest.update(name.encode() + b"\0" + self.file_sha(name).encode())
        self.sha = digest.hexdigest()
        self.gated = (folder / GATED_MARK).exists()

    def file_sha(self, name: str) -> str:
        return blob_sha(self.folder / name)

    def entry(self, path: str) -> dict | None:
        target = self.folder / path if path else self.folder
        if path in self.files:
            return {"type": "file", "path": path, "size": target.stat().st_size, "oid": self.file_sha(path)}
        if target.is_dir():
            return {"type": "directory", "path": path, "oid": _sha1(path.encode()), "size": 0}
        return None

    def tree(self, path: str, recursive: bool) -> list[dict]:
        prefix = f"{path}/" if path else ""
        names = set()
        for name in self.files:
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):].split("/")
            names.update("/".join(rest[:i]) for i in range(1, len(rest) + 1) if recursive or i == 1)
        return [self.entry(prefix + name) for name in sorted(names)]

    def info(self) -> dict:
        return {"id": self.id, "_id": self.sha[:24], "sha": self.sha, "private": False,
                "gated": "manual" if self.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": name} for name in self.files], "cardData": {}}


class HubDouble:
    """The server; use as a context manager. `url` is what HF_ENDPOINT must be set to."""

    def __init__(self, root: Path, token: str = "hf_rehearsal_token", port: int = 0):
        self.root, self.token = Path(root), token
        self.misses: list[str] = []
        self.requests: list[str] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the requests are kept in `requests`, not printed
                pass

            def do_HEAD(self):
                double._handle(self, "HEAD")

            def do_GET(self):
                double._handle(self, "GET")

            def do_POST(self):
                double._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HubDouble:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ repositories
    def repo(self, kind: str, repo_id: str) -> Repo | None:
        folder = self.root / KINDS[kind] / repo_id
        return Repo(folder, repo_id) if folder.is_dir() and "/" in repo_id and ".." not in repo_id else None

    def _split_repo(self, kind: str, parts: list[str]) -> tuple[Repo | None, list[str]]:
        """The repository named by the first one or two path parts (ORG/NAME or NAME), and the rest."""
        for n in (2, 1):
            found = self.repo(kind, "/".join(parts[:n])) if len(parts) >= n else None
            if found is not None:
                return found, parts[n:]
        return None, parts

    # ------------------------------------------------------------------ requests
    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(req.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/") if p]
        self.requests.append(f"{method} {req.path}")
        body = b""
        if method == "POST":
            body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        try:
            if parts[:1] == ["nltk"]:
                return self._nltk(req, method, parts[1:])
            if parts[:1] == ["api"] and len(parts) > 2 and parts[1] in ("models", "datasets"):
                return self._api(req, method, parts[1], parts[2:], query, body)
            kind = "datasets" if parts[:1] == ["datasets"] else "models"
            rest = parts[1:] if kind == "datasets" else parts
            repo, tail = self._split_repo(kind, rest)
            if repo is not None and tail[:1] == ["resolve"] and len(tail) >= 3:
                return self._resolve(req, method, repo, "/".join(tail[2:]))
        except BrokenPipeError:
            return
        self._miss(req, method, "RepoNotFound")

    def _authorized(self, req, repo: Repo) -> bool:
        return not repo.gated or req.headers.get("Authorization") == f"Bearer {self.token}"

    def _gated(self, req, repo: Repo) -> None:
        message = f"Access to {repo.id} is restricted. You must have access to it and be authenticated."
        self._send(req, HTTPStatus.UNAUTHORIZED, json.dumps({"error": message}).encode(),
                   {"X-Error-Code": "GatedRepo", "X-Error-Message": message})

    def _api(self, req, method, kind, parts, query, body) -> None:
        repo, tail = self._split_repo(kind, parts)
        if repo is None:
            return self._miss(req, method, "RepoNotFound")
        if not self._authorized(req, repo):
            return self._gated(req, repo)
        if not tail or tail[0] == "revision":
            return self._json(req, method, repo.info())
        if tail[0] == "tree" and len(tail) >= 2:
            path = "/".join(tail[2:])
            if path and repo.entry(path) is None:
                return self._miss(req, method, "EntryNotFound")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._json(req, method, repo.tree(path, recursive))
        if tail[0] == "paths-info" and method == "POST":
            form = urllib.parse.parse_qs(body.decode())
            paths = form.get("paths", [])
            if not paths and body.startswith(b"{"):
                paths = json.loads(body).get("paths", [])
            return self._json(req, method, [e for e in (repo.entry(p) for p in paths) if e is not None])
        self._miss(req, method, "EntryNotFound")

    def _resolve(self, req, method, repo: Repo, path: str) -> None:
        if not self._authorized(req, repo):
            return self._gated(req, repo)
        if path not in repo.files:
            return self._miss(req, method, "EntryNotFound")
        file = repo.folder / path
        size = file.stat().st_size
        req.send_response(HTTPStatus.OK)
        for key, value in {"X-Repo-Commit": repo.sha, "ETag": f'"{repo.file_sha(path)}"',
                           "Content-Length": str(size)}.items():
            req.send_header(key, value)
        req.end_headers()
        if method != "HEAD":
            with open(file, "rb") as fh:
                shutil.copyfileobj(fh, req.wfile, 1 << 20)

    def _nltk(self, req, method, parts) -> None:
        folder = self.root / "nltk"
        path = folder.joinpath(*parts) if parts else None
        if path is None or ".." in parts or not path.is_file():
            return self._miss(req, method, "EntryNotFound")
        data = path.read_bytes()
        if parts == ["index.xml"]:  # package URLs point back at this server, wherever it listens
            data = data.replace(b"{{SERVER}}", self.url.encode())
        self._send(req, HTTPStatus.OK, data, {"Content-Type": "application/xml"}, method)

    # ------------------------------------------------------------------ replies
    def _miss(self, req, method, code: str) -> None:
        self.misses.append(f"{method} {req.path}")
        self._send(req, HTTPStatus.NOT_FOUND, json.dumps({"error": f"{code}: {req.path}"}).encode(),
                   {"X-Error-Code": code}, method)

    def _json(self, req, method, payload) -> None:
        self._send(req, HTTPStatus.OK, json.dumps(payload).encode(), {"Content-Type": "application/json"}, method)

    @staticmethod
    def _send(req, status, data: bytes, headers: dict[str, str], method: str = "GET") -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if method != "HEAD":
            req.wfile.write(data)
