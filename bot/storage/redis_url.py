"""``REDIS_URL``: which Redis the bot talks to, checked before anything connects.

- ``redis://``, ``rediss://`` (TLS) and ``unix://`` name one server; redis-py's
  ``Redis.from_url`` reads them as they are, query options included.
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]`` names
  Sentinels to ask where the master of ``service_name`` is (the name in
  ``sentinel monitor <name> ...``); the client follows the master through failovers.
  Sentinel port 26379 and db 0 unless given. ``rediss+sentinel://`` speaks TLS to the
  sentinels and to the master alike, with the system's CA certificates.
- The user name and password are sent to the master and to the sentinels. A password given
  without a user name goes to the sentinels as the ``default`` user's, which Redis 6+
  sentinels without a password accept: a password-protected master behind open sentinels
  works too. Sentinels with a password other than the master's are not supported.

Redis Cluster is refused on purpose: the call budget is a Lua script over several keys,
watch and alert transactions WATCH several keys before one MULTI, and alert delivery reads
several streams in one XREAD; Cluster rejects each of these when the keys hash to different
slots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

SENTINEL_PORT = 26379

_SCHEMES = "redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
_SENTINEL_FORM = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]"
_NO_CLUSTER = (
    "Redis Cluster is not supported (the bot's Lua scripts, transactions and stream reads span "
    "several keys, which Cluster refuses across slots); expected one Redis (redis://, "
    f"rediss://, unix://) or, for high availability, Sentinel: {_SENTINEL_FORM}"
)
_HOST = re.compile(r"[A-Za-z0-9._-]+")
_IPV6 = re.compile(r"\[([0-9A-Fa-f:.]+)\]")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class DirectUrl:
    """One Redis server, for ``Redis.from_url``."""

    #: May carry a password, so it stays out of repr.
    url: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SentinelUrl:
    """A master found through Sentinel."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @property
    def sentinel_username(self) -> str | None:
        """The user for the sentinels: a bare password goes as the ``default`` user's, since
        a sentinel without a password refuses ``AUTH <password>`` but accepts any password
        for ``default`` (Redis 6+), while one with ``requirepass`` checks it either way."""
        if self.username is None and self.password is not None:
            return "default"
        return self.username


RedisUrl: TypeAlias = DirectUrl | SentinelUrl


def parse_redis_url(url: str) -> RedisUrl:
    """What ``url`` points at, or ``ValueError`` saying what is wrong and what is accepted.
    The message never repeats the user name or password part of the URL."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError(f"contains spaces or control characters; expected {_SCHEMES}")
    raw_scheme, sep, rest = url.partition("://")
    scheme = raw_scheme.lower()
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise ValueError(f"not a Redis URL; expected one starting with {_SCHEMES}")
    if "cluster" in scheme:
        raise ValueError(_NO_CLUSTER)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel_url(rest, tls=scheme == "rediss+sentinel")
    if scheme in ("redis", "rediss", "unix"):
        return _direct_url(url, scheme)
    raise ValueError(f"unknown scheme {scheme}://; expected {_SCHEMES}")


def _direct_url(url: str, scheme: str) -> DirectUrl:
    form = (
        "unix:///path/to/redis.sock"
        if scheme == "unix"
        else f"{scheme}://[[user]:password@]host[:port][/db]"
    )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number 0-65535
    except ValueError:
        hint = " (several hosts: use redis+sentinel://)" if "," in url else ""
        raise ValueError(f"bad host or port; expected {form}{hint}") from None
    if scheme == "unix" and not parts.path:
        raise ValueError(f"no socket path; expected {form}")
    # redis-py silently ignores a db it cannot read and would use db 0.
    if scheme != "unix" and not re.fullmatch(r"/?|/[0-9]+", parts.path):
        raise ValueError(
            f"the path must be a db number; expected {form} "
            "(percent-encode '/', '?', '#' and '@' in a password)"
        )
    return DirectUrl(url)


def _sentinel_url(rest: str, *, tls: bool) -> SentinelUrl:
    # The last '@' ends the credentials: hosts and service names never hold one, and a
    # password pasted without percent-encoding ('/', '?', '#', ':') still splits right.
    userinfo, at, location = rest.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    if "?" in location or "#" in location:
        raise ValueError(
            f"options after '?' are not supported in a sentinel URL; expected {_SENTINEL_FORM}"
        )
    hosts, _, path = location.partition("/")
    service_name, db = _service_and_db(path)
    return SentinelUrl(
        sentinels=_sentinel_addresses(hosts),
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        tls=tls,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        raise ValueError(
            "credentials must be [user]:password@ (a password alone needs a leading ':'); "
            f"expected {_SENTINEL_FORM}"
        )
    return unquote(user) or None, unquote(password) or None


def _sentinel_addresses(hosts: str) -> tuple[tuple[str, int], ...]:
    if not hosts:
        raise ValueError(f"no sentinel hosts; expected {_SENTINEL_FORM}")
    entries = hosts.split(",")
    return tuple(_address(entry, i + 1, len(entries)) for i, entry in enumerate(entries))


def _address(entry: str, number: int, count: int) -> tuple[str, int]:
    # Named by position, not shown: a URL whose '@' is missing has its password here.
    which = f"sentinel address {number} of {count}" if count > 1 else "the sentinel address"
    problem = f"{which} is not host[:port] with a port 1-65535; expected {_SENTINEL_FORM}"
    if ipv6 := _IPV6.match(entry):
        host, port = ipv6[1], entry[ipv6.end() :]
        if port and not port.startswith(":"):
            raise ValueError(problem)
        port = port[1:]
    else:
        host, _, port = entry.partition(":")
        if not _HOST.fullmatch(host):
            hint = " (an IPv6 address goes in brackets: [::1]:26379)" if ":" in port else ""
            raise ValueError(problem + hint)
    if not port:
        return host, SENTINEL_PORT
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(problem)
    return host, int(port)


def _service_and_db(path: str) -> tuple[str, int]:
    service_name, _, db = path.partition("/")
    if not service_name:
        raise ValueError(
            "no service name: add /<service_name> after the sentinels, the name in "
            f"'sentinel monitor <name> ...' (often mymaster); expected {_SENTINEL_FORM}"
        )
    if not re.fullmatch(r"[\w.:-]+", service_name):
        raise ValueError(
            "the service name may hold only letters, digits, '.', '_', ':' and '-'; "
            f"expected {_SENTINEL_FORM}"
        )
    if db and not re.fullmatch(r"[0-9]+/?", db):
        raise ValueError(
            f"the db after the service name must be a number; expected {_SENTINEL_FORM}"
        )
    return service_name, int(db.rstrip("/") or 0)
