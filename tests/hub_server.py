"""A test fixture: an HTTP server on 127.0.0.1 that speaks the part of the Hugging Face Hub's API that the real,
unpatched `huggingface_hub` and `transformers` clients use to push and pull model repos (point them at it with
HF_ENDPOINT). Model repos only; everything is kept in memory.

Covered: whoami; model card metadata validation; create repo (public or private); preupload (text files go inline, weights through LFS); the LFS
batch API with basic single-part transfer and verify; commits (NDJSON: header, file, lfsFile, deletedFile), refused
whole when an LFS object is missing; branches; repo info by revision; the file tree and paths-info; refs; resolve
(HEAD and GET, with X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size); tokens as Bearer auth, with 401 for an
unknown token, 403 for writing to another's namespace, 404 RepoNotFound for a private repo read without its owner's
token. Not covered: Xet storage (clients use LFS with HF_HUB_DISABLE_XET=1), multipart LFS uploads, pull requests,
tags, datasets and spaces, gated repos, rate limits, redirects to a CDN.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubState:
    """Repos: id -> {"owner", "private", "branches": {name: commit}, "commits": {sha: {...}}}; blobs by oid."""

    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens
        self.repos: dict[str, dict] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.lock = threading.Lock()
        self.counter = 0

    def commit_count(self, repo_id: str) -> int:
        return len(self.repos[repo_id]["commits"]) if repo_id in self.repos else 0


class HubServer:
    def __init__(self, tokens: dict[str, str]):
        self.state = HubState(tokens)
        handler = type("Handler", (HubHandler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args):  # quiet
        pass

    # --- plumbing -------------------------------------------------------------------------------------------

    def _dispatch(self, method: str):
        url = urlparse(self.path)
        self.query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        try:
            user = self._user()
            for pattern, handler_method, name in ROUTES:
                match = re.fullmatch(pattern, url.path)
                if match and handler_method == method:
                    return getattr(self, name)(user, *[unquote(g) for g in match.groups() if g is not None])
            raise HubError(404, f"no route for {method} {url.path}")
        except HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            body = json.dumps({"error": error.message, **error.extra}).encode()
            self._send(error.status, body, headers, "application/json")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _send(self, status, body=b"", headers=None, content_type="application/octet-stream", head=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status=200):
        self._send(status, json.dumps(value).encode(), content_type="application/json")

    def _user(self) -> str | None:
        auth = self.headers.get("authorization") or ""
        if not auth.lower().startswith("bearer "):
            return None
        token = auth.split(" ", 1)[1]
        if token not in self.state.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.state.tokens[token]

    def _repo(self, repo_id: str, user: str | None, write: bool = False) -> dict:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo["private"] and user != repo["owner"]):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        if write:
            self._check_write(repo_id, user)
        return repo

    def _check_write(self, repo_id: str, user: str | None):
        if user is None:
            raise HubError(401, "You must be authenticated to write to the Hub")
        if repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")

    def _commit(self, repo: dict, revision: str) -> tuple[str, dict]:
        sha = repo["branches"].get(revision, revision)
        if sha not in repo["commits"]:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo["commits"][sha]

    # --- endpoints ------------------------------------------------------------------------------------------

    def whoami(self, user):
        if user is None:
            raise HubError(401, "Invalid user token")
        self._json({"type": "user", "name": user, "orgs": [], "auth": {"accessToken": {"role": "write"}}})

    def validate_yaml(self, user):
        content = json.loads(self.body)["content"]
        try:
            metadata = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        except yaml.YAMLError as error:
            self._json({"errors": [{"message": str(error)}]}, status=400)
            return
        self._json({"warnings": [] if metadata else [{"message": "empty or missing yaml metadata"}]})

    def create_repo(self, user):
        payload = json.loads(self.body or b"{}")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        self._check_write(repo_id, user)
        with self.state.lock:
            if repo_id in self.state.repos:
                raise HubError(409, "You already created this model repo", url=f"{self._endpoint()}/{repo_id}")
            first = self._new_commit(None, {}, "initial commit")
            self.state.repos[repo_id] = {
                "owner": repo_id.split("/")[0],
                # huggingface_hub sends "visibility"; older clients sent "private"
                "private": payload.get("visibility") == "private" or bool(payload.get("private")),
                "branches": {"main": first[0]},
                "commits": {first[0]: first[1]},
            }
        self._json({"url": f"{self._endpoint()}/{repo_id}", "name": repo_id, "id": repo_id})

    def preupload(self, user, repo_id, revision):
        self._repo(repo_id, user, write=True)
        files = json.loads(self.body)["files"]
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] > 1_000_000 else "regular",
                "shouldIgnore": False,
                "oid": None,
            }
            for f in files
        ]
        self._json({"files": modes, "commitOid": self._commit(self.state.repos[repo_id], revision)[0]})

    def lfs_batch(self, user, repo_id):
        self._repo(repo_id, user, write=True)
        objects = []
        for item in json.loads(self.body)["objects"]:
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.state.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self._endpoint()}/lfs-objects/{item['oid']}", "header": {}},
                    "verify": {"href": f"{self._endpoint()}/lfs-objects/{item['oid']}/verify", "header": {}},
                }
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, user, oid):
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "LFS object does not match its oid")
        self.state.lfs[oid] = self.body
        self._send(200)

    def lfs_verify(self, user, oid):
        if oid not in self.state.lfs:
            raise HubError(404, "LFS object not found")
        self._json({})

    def commit(self, user, repo_id, revision):
        repo = self._repo(repo_id, user, write=True)
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        with self.state.lock:
            parent, files = self._commit(repo, revision)
            files = dict(files["files"])
            header = {}
            for line in lines:  # every operation is checked before the commit exists: all or nothing
                key, value = line["key"], line["value"]
                if key == "header":
                    header = value
                elif key == "file":
                    files[value["path"]] = {"content": base64.b64decode(value["content"])}
                elif key == "lfsFile":
                    if value["oid"] not in self.state.lfs:
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    files[value["path"]] = {"lfs": value["oid"], "size": value["size"]}
                elif key in ("deletedFile", "deletedFolder"):
                    prefix = value["path"].rstrip("/")
                    files = {p: f for p, f in files.items() if p != prefix and not p.startswith(prefix + "/")}
                else:
                    raise HubError(400, f"unsupported commit operation {key}")
            sha, commit = self._new_commit(parent, files, header.get("summary", ""))
            repo["commits"][sha] = commit
            if revision in repo["branches"] or revision == "main":
                repo["branches"][revision] = sha
        self._json({"commitUrl": f"{self._endpoint()}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

    def create_branch(self, user, repo_id, branch):
        repo = self._repo(repo_id, user, write=True)
        payload = json.loads(self.body or b"{}")
        with self.state.lock:
            if branch in repo["branches"]:
                raise HubError(409, f"Branch {branch} already exists")
            repo["branches"][branch] = self._commit(repo, payload.get("startingPoint") or "main")[0]
        self._json({})

    def repo_info(self, user, repo_id, revision="main"):
        repo = self._repo(repo_id, user)
        sha, commit = self._commit(repo, revision)
        self._json(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "private": repo["private"],
                "siblings": [{"rfilename": path} for path in sorted(commit["files"])],
                "tags": [],
                "downloads": 0,
                "likes": 0,
            }
        )

    def tree(self, user, repo_id, revision, path=""):
        repo = self._repo(repo_id, user)
        _, commit = self._commit(repo, revision)
        prefix = path.strip("/")
        entries = [self._entry(p, f) for p, f in sorted(commit["files"].items()) if not prefix or p.startswith(prefix + "/")]
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        self._json(entries)

    def paths_info(self, user, repo_id, revision):
        repo = self._repo(repo_id, user)
        _, commit = self._commit(repo, revision)
        try:
            paths = json.loads(self.body)["paths"]
        except (json.JSONDecodeError, KeyError):
            paths = parse_qs(self.body.decode()).get("paths", [])
        self._json([self._entry(p, commit["files"][p]) for p in paths if p in commit["files"]])

    def refs(self, user, repo_id):
        repo = self._repo(repo_id, user)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo["branches"].items()]
        self._json({"branches": branches, "tags": [], "converts": []})

    def commits(self, user, repo_id, revision):
        repo = self._repo(repo_id, user)
        sha, _ = self._commit(repo, revision)
        history = []
        while sha is not None:
            commit = repo["commits"][sha]
            history.append({"id": sha, "title": commit["message"], "message": commit["message"], "authors": [], "date": "2026-01-01T00:00:00.000Z"})
            sha = commit["parent"]
        self._json(history)

    def resolve(self, user, repo_id, revision, path):
        repo = self._repo(repo_id, user)
        sha, commit = self._commit(repo, revision)
        if path not in commit["files"]:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        file = commit["files"][path]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "none"}
        if "lfs" in file:
            content = self.state.lfs[file["lfs"]]
            headers.update({"X-Linked-Etag": f'"{file["lfs"]}"', "X-Linked-Size": str(len(content)), "ETag": f'"{file["lfs"]}"'})
        else:
            content = file["content"]
            headers["ETag"] = f'"{git_blob_sha(content)}"'
        self._send(200, content, headers)

    # --- helpers --------------------------------------------------------------------------------------------

    def _endpoint(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def _new_commit(self, parent, files, message):
        self.state.counter += 1
        sha = hashlib.sha1(f"{parent}-{self.state.counter}-{message}".encode()).hexdigest()
        return sha, {"parent": parent, "files": files, "message": message}

    def _entry(self, path, file):
        if "lfs" in file:
            size = file["size"]
            return {"type": "file", "path": path, "size": size, "oid": git_blob_sha(file["lfs"].encode()), "lfs": {"oid": file["lfs"], "size": size, "pointerSize": 134}}
        return {"type": "file", "path": path, "size": len(file["content"]), "oid": git_blob_sha(file["content"])}


REPO = r"([^/]+/[^/]+?)"
ROUTES = [
    (r"/api/whoami-v2", "GET", "whoami"),
    (r"/api/repos/create", "POST", "create_repo"),
    (r"/api/validate-yaml", "POST", "validate_yaml"),
    (rf"/api/models/{REPO}/preupload/([^/]+)", "POST", "preupload"),
    (rf"/{REPO}\.git/info/lfs/objects/batch", "POST", "lfs_batch"),
    (r"/lfs-objects/([0-9a-f]{64})", "PUT", "lfs_upload"),
    (r"/lfs-objects/([0-9a-f]{64})/verify", "POST", "lfs_verify"),
    (rf"/api/models/{REPO}/commit/([^/]+)", "POST", "commit"),
    (rf"/api/models/{REPO}/branch/([^/]+)", "POST", "create_branch"),
    (rf"/api/models/{REPO}/revision/([^/]+)", "GET", "repo_info"),
    (rf"/api/models/{REPO}", "GET", "repo_info"),
    (rf"/api/models/{REPO}/tree/([^/]+)(?:/(.*))?", "GET", "tree"),
    (rf"/api/models/{REPO}/paths-info/([^/]+)", "POST", "paths_info"),
    (rf"/api/models/{REPO}/refs", "GET", "refs"),
    (rf"/api/models/{REPO}/commits/([^/]+)", "GET", "commits"),
    (rf"/{REPO}/resolve/([^/]+)/(.+)", "GET", "resolve"),
    (rf"/{REPO}/resolve/([^/]+)/(.+)", "HEAD", "resolve"),
]
