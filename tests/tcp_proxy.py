"""A TCP proxy on loopback whose port can be closed for a while: a real
network fault between the engine and an API server (connections reset, then
refused), for tests of retries."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import yaml


class TcpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host, self.upstream_port = host, upstream_port
        self.port = _free_port(host)
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._hold: threading.Barrier | None = None
        self.closed_at: float | None = None

    def start(self) -> "TcpProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close_for(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for `seconds`, then listen again."""
        self.closed_at = time.monotonic()
        self._shut_all()
        time.sleep(seconds)
        self.start()

    def hold_next(self, rendezvous: threading.Barrier) -> None:
        """Let the next connection through only once `rendezvous` is met (or
        broken by its timeout): for tests that several servers are asked at once."""
        self._hold = rendezvous

    def stop(self) -> None:
        self._stopped.set()
        self._shut_all()

    def _shut_all(self) -> None:
        with self._lock:
            sockets, self._open = [*self._open], set()
            listener, self._listener = self._listener, None
        for sock in [listener, *sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            hold, self._hold = self._hold, None
            if hold is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    hold.wait()
            try:
                upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def proxied_kubeconfig(kubeconfig: Path, out: Path) -> tuple[TcpProxy, Path]:
    """A started proxy to the API server of `kubeconfig`, and a copy of that
    kubeconfig (written to `out`) that goes through it."""
    config = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = config["clusters"][0]["cluster"]
    base, port = cluster["server"].rsplit(":", 1)
    proxy = TcpProxy(int(port)).start()
    cluster["server"] = f"{base}:{proxy.port}"
    out.write_text(yaml.safe_dump(config))
    return proxy, out
