"""SDK-HMAC-SHA256 request signing, identical to huaweicloudsdkcore's ``Signer``.

``sign()`` is pure (request parts in, headers out) so the simulator can verify with the same
code and tests can compare it with the official SDK. ``HssAuth`` plugs it into httpx.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

import httpx

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def _quote(text: str) -> str:
    # RFC 3986 unreserved characters stay; everything else, including "/", is encoded.
    return quote(text, safe="~")


def canonical_query(params: Sequence[tuple[str, str]]) -> str:
    """The query string exactly as signed; send this string, not httpx's own encoding."""
    # The SDK sorts the raw pairs, then encodes; sorting encoded text orders some pairs
    # differently (e.g. "~" vs non-ASCII), which only matters for repeated keys but is cheap.
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(params))


def canonical_uri(path_segments: Sequence[str]) -> str:
    """Percent-encode each raw segment; the canonical form ends in ``/``, the sent URL not."""
    return canonical_path_of(encoded_path(path_segments))


def encoded_path(path_segments: Sequence[str]) -> str:
    return "/" + "/".join(_quote(s) for s in path_segments)


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    return sorted(k.lower() for k in headers if "_" not in k)


def string_to_sign(
    *,
    method: str,
    canonical_path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    names = signed_header_names(headers)
    lowered = {k.lower(): v for k, v in headers.items()}
    canonical_headers = "".join(f"{n}:{lowered[n].strip()}\n" for n in names)
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_path,
            query,
            canonical_headers,
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ALGORITHM}\n{lowered[DATE_HEADER.lower()]}\n{digest}"


def signature(sk: str, to_sign: str) -> str:
    return hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(
    *,
    ak: str,
    sk: str,
    method: str,
    canonical_path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes = b"",
) -> str:
    """The ``Authorization`` header value for a request whose headers are final."""
    to_sign = string_to_sign(
        method=method, canonical_path=canonical_path, query=query, headers=headers, body=body
    )
    names = ";".join(signed_header_names(headers))
    return f"{ALGORITHM} Access={ak}, SignedHeaders={names}, Signature={signature(sk, to_sign)}"


def format_sdk_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(DATE_FORMAT)


def canonical_path_of(raw_path: str) -> str:
    """Canonical URI of an already percent-encoded request path (as a server sees it).

    Like the SDK (and so the gateway): decode the whole path, split on ``/`` and re-encode each
    part. An encoded ``/`` inside a segment (``%2F``) is therefore signed as a plain ``/``.
    """
    path = "/".join(_quote(part) for part in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


@dataclass(frozen=True, slots=True)
class Credentials:
    ak: str
    sk: str
    security_token: str | None = None


class HssAuth(httpx.Auth):
    """Signs each request just before it is sent (and again on every retry: fresh date).

    The request's URL must already carry the canonical query and the percent-encoded path,
    which ``hss_client`` builds with ``canonical_query`` and ``encoded_path``.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        project_id: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._credentials = credentials
        self._project_id = project_id
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        for name in ("Authorization", DATE_HEADER, "X-Security-Token"):
            request.headers.pop(name, None)
        to_sign = {
            "Host": request.url.netloc.decode("ascii"),
            DATE_HEADER: format_sdk_date(self._clock()),
            "X-Project-Id": self._project_id,
            "Content-Type": "application/json",
        }
        if self._credentials.security_token:
            to_sign["X-Security-Token"] = self._credentials.security_token
        request.headers.update(to_sign)
        request.headers["Authorization"] = authorization(
            ak=self._credentials.ak,
            sk=self._credentials.sk,
            method=request.method,
            canonical_path=canonical_path_of(
                request.url.raw_path.split(b"?", 1)[0].decode("ascii")
            ),
            query=request.url.query.decode("ascii"),
            headers=to_sign,
            body=request.content,
        )
        yield request
