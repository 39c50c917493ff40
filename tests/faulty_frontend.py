"""An HTTPS front end on loopback for a local cluster's API server (its own
serving certificate, so its kubeconfig works with only the port changed) that
passes every request on, except that for a while it answers some with 503
Service Unavailable, as a load balancer without a healthy backend does. It
counts the writes it passed on, so a test sees how often each object was
applied. A fault at the HTTP level, not the TCP one: a connection dropped
mid-TLS is misread by the engine (see test_apply_retry.py)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import urllib3
import yaml

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "host", "content-length"}
UNAVAILABLE = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                          "reason": "ServiceUnavailable", "message": "no healthy upstream"}).encode()


class FaultyFrontend:
    """`failing(method, path)` says which requests fail while a fault is on."""

    def __init__(self, cluster, failing: Callable[[str, str], bool]):
        pki = cluster.layout.pki
        self.upstream = cluster.record().api_url
        self.failing = failing
        self._pool = urllib3.PoolManager(maxsize=32, ca_certs=str(pki / "ca.crt"))
        self._fault_until = 0.0
        self._lock = threading.Lock()
        self.applied: Counter[str] = Counter()  # object path -> 2xx non-dry-run PATCHes passed on
        self.refused: Counter[str] = Counter()  # object path -> 503s answered
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fail_for(self, seconds: float) -> None:
        self._fault_until = time.monotonic() + seconds

    def faulty(self) -> bool:
        return time.monotonic() < self._fault_until

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, kubeconfig: Path, out: Path) -> Path:
        """A copy of `kubeconfig` (written to `out`) that goes through this front end."""
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        cluster["server"] = f"{cluster['server'].rsplit(':', 1)[0]}:{self.port}"
        out.write_text(yaml.safe_dump(config))
        return out

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        path, query = urlsplit(target).path, urlsplit(target).query
        if self.faulty() and self.failing(method, path):
            with self._lock:
                self.refused[path] += 1
            return 503, {"Content-Type": "application/json"}, UNAVAILABLE
        response = self._pool.request(method, self.upstream + target, body=body or None, headers=headers,
                                      retries=False, redirect=False, preload_content=True, decode_content=False)
        if method == "PATCH" and "dryRun" not in query and 200 <= response.status < 300:
            with self._lock:
                self.applied[path] += 1
        return response.status, dict(response.headers), response.data


def _handler(frontend: FaultyFrontend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the engine's pool expects

        def _pass_on(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            status, answer_headers, data = frontend.answer(self.command, self.path, headers, body)
            self.send_response(status)
            for key, value in answer_headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _pass_on

        def log_message(self, *args) -> None:  # quiet
            pass

    return Handler
