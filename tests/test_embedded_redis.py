from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis as syncredis
import redis.asyncio as aioredis

from bot.errors import StoreError
from bot.storage.embedded import EmbeddedRedis, ensure_embedded_redis, socket_path_for


def _server_pid(url: str) -> int:
    with syncredis.Redis.from_url(url) as client:
        return int(client.info("server")["process_id"])


def _set_and_get(url: str, key: str, value: str | None = None) -> bytes | None:
    with syncredis.Redis.from_url(url) as client:
        if value is not None:
            client.set(key, value)
        result: bytes | None = client.get(key)
        return result


def test_start_stop(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path, persistent=False)
    assert server.url.startswith("unix://")
    assert not server.is_serving()
    server.start()
    try:
        assert server.running and server.is_serving()
        assert _set_and_get(server.url, "k", "v") == b"v"
    finally:
        server.stop()
    assert not server.running and not server.is_serving()
    assert not list(tmp_path.glob("*.aof")), "a non-persistent server must not write data"


def test_restart_keeps_url_and_non_persistent_loses_data(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path, persistent=False)
    server.start()
    url = server.url
    _set_and_get(url, "k", "v")
    server.stop()
    server.start()
    try:
        assert server.url == url
        assert _set_and_get(url, "k") is None
    finally:
        server.stop()


def test_persistence_across_restart(tmp_path: Path) -> None:
    url, owner = ensure_embedded_redis(tmp_path)
    assert owner is not None
    _set_and_get(url, "survivor", "yes")
    owner.stop()
    assert list(tmp_path.glob("appendonly*")), "SHUTDOWN must leave the append-only file"
    url2, owner2 = ensure_embedded_redis(tmp_path)
    assert owner2 is not None
    try:
        assert url2 == url
        assert _set_and_get(url2, "survivor") == b"yes"
    finally:
        owner2.stop()


def test_second_ensure_reuses_running_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.storage.embedded")
    url, owner = ensure_embedded_redis(tmp_path)
    assert owner is not None
    try:
        url2, owner2 = ensure_embedded_redis(tmp_path)
        assert owner2 is None
        assert url2 == url
        assert _server_pid(url2) == owner._process.pid  # type: ignore[union-attr]
    finally:
        owner.stop()
    lines = [r for r in caplog.records if r.name == "bot.storage.embedded"]
    assert len(lines) == 2, "one INFO line per ensure call"
    assert all(r.levelno == logging.INFO for r in lines)
    assert "Started" in lines[0].getMessage() and str(tmp_path) in lines[0].getMessage()
    assert "already running" in lines[1].getMessage()


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import redis
    from bot.storage.embedded import ensure_embedded_redis
    url, owner = ensure_embedded_redis(Path(sys.argv[1]))
    with redis.Redis.from_url(url) as client:
        pid = int(client.info("server")["process_id"])
    print(json.dumps({"url": url, "owner": owner is not None, "pid": pid}), flush=True)
    sys.stdin.read()  # the parent closes stdin once every child has reported
    if owner is not None:
        owner.stop()
    """
)


def test_file_lock_lets_one_of_many_processes_start_the_server(tmp_path: Path) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(4)
    ]
    try:
        reports = [json.loads(child.stdout.readline()) for child in children]  # type: ignore[union-attr]
    finally:
        for child in children:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait(timeout=30)
            child.stdout.close()  # type: ignore[union-attr]
    assert sum(r["owner"] for r in reports) == 1
    assert len({r["pid"] for r in reports}) == 1
    assert len({r["url"] for r in reports}) == 1
    assert all(child.returncode == 0 for child in children)
    assert not EmbeddedRedis(data_dir=tmp_path, persistent=True).is_serving()


async def test_long_data_dir_falls_back_to_short_socket(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 6))
    assert len(str(deep / "redis.sock")) > 107
    sock = socket_path_for(deep)
    assert len(str(sock)) < 100
    assert socket_path_for(deep) == sock, "every process must derive the same path"
    url, owner = ensure_embedded_redis(deep)
    assert owner is not None
    try:
        client = aioredis.Redis.from_url(url)
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        await client.aclose()
        assert (deep / "redis.conf").exists(), "config and data stay in the data dir"
    finally:
        owner.stop()
    assert not sock.parent.exists(), "the short socket dir is cleaned up"


def test_corrupt_data_is_a_clear_store_error(tmp_path: Path) -> None:
    (tmp_path / "appendonly.aof").write_bytes(b"this is not an append-only file\n")
    server = EmbeddedRedis(data_dir=tmp_path, persistent=True)
    with pytest.raises(StoreError, match="exited at start-up"):
        server.start()
    assert not server.running


def test_unusable_data_dir_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    server = EmbeddedRedis(data_dir=blocker / "sub", persistent=True)
    with pytest.raises(StoreError, match="cannot prepare"):
        server.start()


def test_start_refuses_to_steal_a_served_socket(redis_server: EmbeddedRedis) -> None:
    twin = EmbeddedRedis(data_dir=redis_server.data_dir, persistent=False)
    with pytest.raises(StoreError, match="already serves"):
        twin.start()
    assert redis_server.is_serving()


def test_redis_url_fixture_serves(redis_url: str) -> None:
    with syncredis.Redis.from_url(redis_url) as client:
        assert client.ping()


def test_stale_socket_from_a_crashed_server_is_replaced(tmp_path: Path) -> None:
    sock = socket_path_for(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(sock))  # left behind, as by a killed server: nothing listens
    assert sock.exists()
    url, owner = ensure_embedded_redis(tmp_path)
    assert owner is not None, "a dead socket is not a running server"
    try:
        assert _set_and_get(url, "k", "v") == b"v"
    finally:
        owner.stop()
