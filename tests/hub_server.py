"""A local stand-in for the Hugging Face Hub's file API on 127.0.0.1, for the download tests.

It answers what ``huggingface_hub`` asks when it fetches one file (``get_hf_file_metadata`` and ``http_get``):
``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` (the
sha256, as the Hub sends for LFS files), ``X-Linked-Size``, ``Content-Length`` and ``Range: bytes=N-`` resumes
(206 + ``Content-Range``); 401 + ``X-Error-Code: GatedRepo`` for a gated file asked for without a token; 404 +
``X-Error-Code: EntryNotFound`` for anything else. Knobs for the failure cases: ``drop_after`` (close the
connection after that many body bytes of the next GET), ``refuse_gets`` (close every GET without an answer),
``etag_override`` (advertise another sha256 than the bytes served) and ``delay_per_mb`` (a slow link).
"""
from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubFiles:
    def __init__(self):
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.gated: set[str] = set()
        self.requests: list[tuple[str, str, str | None, str | None]] = []  # method, path, Range, Authorization
        self.drop_after: int | None = None
        self.refuse_gets = False
        self.down = False  # close every request without an answer (also on kept-alive connections)
        self.etag_override: str | None = None
        self.delay_per_mb = 0.0  # seconds to wait after each MiB of body (a slow link, for Cancel tests)
        self.lock = threading.Lock()

    def add(self, repo_id: str, revision: str, filename: str, data: bytes, gated: bool = False):
        self.files[(repo_id, revision, filename)] = data
        if gated:
            self.gated.add(repo_id)

    def gets(self) -> list[tuple[str, str | None]]:
        return [(path, rng) for method, path, rng, _ in self.requests if method == "GET"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubFiles  # set on the subclass per server

    def log_message(self, *args):  # keep test output clean
        pass

    def _lookup(self):
        m = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.path.split("?")[0])
        if not m:
            return None, None
        key = (m["repo"], m["rev"], m["file"])
        return key, self.hub.files.get(key)

    def _answer(self, with_body: bool):
        hub = self.hub
        with hub.lock:
            hub.requests.append((self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        if hub.down or (self.command == "GET" and hub.refuse_gets):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        key, data = self._lookup()
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if key[0] in hub.gated and not self.headers.get("Authorization"):
            body = b'{"error": "Access to this repository is restricted."}'
            self.send_response(401)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access restricted")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)
            return
        sha = hub.etag_override or hashlib.sha256(data).hexdigest()
        start = 0
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            start = int(m.group(1)) if m else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not with_body:
            return
        if hub.drop_after is not None:
            cut, hub.drop_after = hub.drop_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        step = 1 << 20
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            if hub.delay_per_mb:
                self.wfile.flush()
                time.sleep(hub.delay_per_mb)

    def do_HEAD(self):
        self._answer(with_body=False)

    def do_GET(self):
        self._answer(with_body=True)


class LocalServer:
    """``with LocalServer(handler_class) as server:`` serves on a free 127.0.0.1 port (``server.endpoint``) in a
    background thread until the block ends."""

    def __init__(self, handler_class):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        return False


class HubServer(LocalServer):
    """``with HubServer() as hub:`` serves ``hub.files`` at ``hub.endpoint`` until the block ends."""

    def __init__(self):
        self.files = HubFiles()
        super().__init__(type("Handler", (_Handler,), {"hub": self.files}))


def unused_endpoint() -> str:
    """An http endpoint on 127.0.0.1 where nothing listens (the Hub "down")."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"
