"""HSS stand-in: ListAssociateRegistries and ListImageScanTask (the sync runs, see
``bot.sandbox.simruns``) with the gateway's signature check, rate limit (per API, as HSS
counts it) and faults.

``Simulator`` holds all state and logic and does no I/O (tests drive it directly with an
injected clock); ``bot.sandbox.sim_server`` serves it over aiohttp and is ``hss-sync-bot simulate``.
Every run's ``task_id`` is a task ListAssociateRegistries answers for (the project's
registries, as far as the run has got). Control endpoints under ``/_sim/`` (served by
``bot.sandbox.sim_server``) need no signature:

    GET  /_sim/stats                      counters (see ``Simulator.stats``)
    POST /_sim/reset                      forget data changes, counters, faults, lock-outs
    POST /_sim/faults  {"latency_ms", "error_rate", "throttle_rate", "malformed_rate",
                        "timeout_seconds", "queue": [503, 429, "malformed", "timeout", 200]}
    POST /_sim/limit   {"rate_limit", "window", "retry_after"}
    POST /_sim/flip    {"task_id", "registry", "status", "reason"} or {"task_id", "count"}
                       ("registry": an id or an exact name; "registry_id" also works)
    POST /_sim/shift   {"task_id", "insert": n, "remove": n, "at": row}
    POST /_sim/run     {"kind": "auto"|"manual", "duration": s} starts a run now, or
                       {"task_id", "status": -1|-2|-3} ends a running one early

Order of checks, as at the real gateway: route, signature (401), project (403), rate limit
(429, each API its own), then the backend: scripted/random faults (either API's next call),
parameters (400), task (HSS.0011), data. Only admitted calls take a rate-limit slot;
throttled ones still count in ``max_in_window`` (the most calls of one API in a window).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from bot.hss import signer
from bot.models import PROJECT_ID_MAX, TASK_ID_MAX, Registry
from bot.sandbox.simdata import STATUSES, InvalidParameter, Query, TaskData, parse_query, seeded_rng
from bot.sandbox.simruns import (
    LISTED_MAX,
    RunBook,
    RunQuery,
    RunsConfig,
    SimRun,
    parse_run_query,
)

logger = logging.getLogger(__name__)

DEMO_AK = "SIMULATORAK000000000"
DEMO_SK = "simulator-secret-key-0000000000000000000"
DEMO_PROJECT_ID = "0123456789abcdef0123456789abcdef"

_ROUTE = re.compile(r"/v5/([^/?]+)/image/image-sync/tasks/([^/?]+)/registries/?")
_RUNS_ROUTE = re.compile(r"/v5/([^/?]+)/image/tasks/?")
REGISTRIES, TASKS = "registries", "tasks"  # the APIs, as the bot's ``HssApi`` names them
_AUTH = re.compile(
    r"SDK-HMAC-SHA256\s+Access=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})"
)
SERVER_ERRORS = (500, 502, 503, 504)
#: What a scripted response may be: an HTTP status, "malformed" (200 with broken JSON) or
#: "timeout" (hold the request ``timeout_seconds``, then 504) or "ok" (serve normally).
Scripted = int | str


@dataclass(frozen=True, kw_only=True)
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    malformed_rate: float = 0.0
    timeout_seconds: float = 30.0


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    seed: int = 0
    ak: str = DEMO_AK
    sk: str = DEMO_SK
    #: When set, requests must carry this X-Security-Token (temporary credentials).
    security_token: str | None = None
    #: More permanent AK -> SK pairs, e.g. to show that budgets are per AK.
    extra_keys: Mapping[str, str] = field(default_factory=dict)
    project_id: str = DEMO_PROJECT_ID
    rate_limit: int = 5
    window: float = 60.0
    retry_after: bool = False
    #: Consecutive 401s that lock an AK for ``lockout_seconds``; ``None`` never locks.
    lockout_after: int | None = None
    lockout_seconds: float = 300.0
    max_clock_skew: float = 900.0
    default_size: int = 120
    task_sizes: Mapping[str, int] = field(default_factory=dict)
    missing_tasks: frozenset[str] = frozenset()
    missing_prefix: str | None = "missing-"
    not_found_status: int = 400
    hostile: bool = False
    faults: Faults = field(default_factory=Faults)
    flip_every: float | None = None
    flip_count: int = 1
    #: Sync runs (``bot.sandbox.simruns``): a scheduled one every ``run_every`` seconds
    #: (None: never), each over ``run_duration`` s; ``run_history`` began before the start.
    run_every: float | None = 86400.0
    run_duration: float = 1800.0
    run_history: int = 3
    run_registries: int = 500
    run_failure_rate: float = 0.02


@dataclass(slots=True)
class ApiStats:
    """One API's counters: calls per AK, 429s of the rate limit, most calls in a window."""

    calls: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    max_in_window: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "throttled": self.throttled,
            "max_in_window": dict(self.max_in_window),
        }


@dataclass(frozen=True, slots=True)
class SimRequest:
    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]  # any case; looked up lower-cased
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class SimResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]
    delay: float = 0.0  # seconds the server waits before answering


class UnknownRegistry(KeyError):
    """A task has no registry with that id or name."""

    def __init__(self, task_id: str, registry: str) -> None:
        super().__init__(task_id, registry)
        self.task_id = task_id
        self.registry = registry

    def __str__(self) -> str:
        return f"task {self.task_id!r} has no registry with id or name {self.registry!r}"


class _Reject(Exception):
    def __init__(self, response: SimResponse) -> None:
        super().__init__(response.status)
        self.response = response


def parse_raw_query(raw: str) -> list[tuple[str, str]]:
    """Pairs as the gateway decodes them: ``%XX`` only; ``+`` stays a plus."""
    pairs = []
    for part in raw.split("&") if raw else []:
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def _json(status: int, payload: object, request_id: str, **headers: str) -> SimResponse:
    body = json.dumps(payload, ensure_ascii=False).encode()
    all_headers = {"Content-Type": "application/json", "X-Request-Id": request_id, **headers}
    return SimResponse(status=status, body=body, headers=all_headers)


def _error(status: int, code: str, msg: str, request_id: str, **headers: str) -> SimResponse:
    payload = {"error_code": code, "error_msg": msg, "request_id": request_id}
    return _json(status, payload, request_id, **headers)


class Simulator:
    """All simulator state and behaviour; no I/O, time only through ``clock``."""

    def __init__(
        self, config: SimConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config or SimConfig()
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Back to the configured state: fresh data, no counters, configured faults."""
        self.faults = self.config.faults
        self._limit = (self.config.rate_limit, self.config.window, self.config.retry_after)
        self._queue: deque[Scripted] = deque()
        self._tasks: dict[str, TaskData] = {}
        self._rng = seeded_rng(self.config.seed, "faults")
        self._admitted: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._attempts: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._consecutive_401: Counter[str] = Counter()
        self._locked_until: dict[str, float] = {}
        self._last_flip = self._clock()
        config = self.config
        self.runs = RunBook(
            RunsConfig(
                seed=config.seed,
                registries=config.run_registries,
                every=config.run_every,
                duration=config.run_duration,
                history=config.run_history,
                failure_rate=config.run_failure_rate,
                hostile=config.hostile,
            ),
            start=self._last_flip,
        )
        #: Counts of both APIs; ``apis`` has each API's own.
        self.calls: Counter[str] = Counter()
        self.apis = {REGISTRIES: ApiStats(), TASKS: ApiStats()}
        self.auth_failures: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.throttled = 0
        self.max_in_window: Counter[str] = Counter()
        #: API requests being answered now (the server counts them), and the most at once.
        self.in_flight = 0
        self.max_in_flight = 0

    # -- run-time control -------------------------------------------------------------------

    def set_faults(self, **changes: float) -> Faults:
        self.faults = dataclasses.replace(self.faults, **changes)
        return self.faults

    def queue(self, *responses: Scripted) -> None:
        """Answer the next admitted API calls with these, in order, before anything else."""
        for item in responses:
            if not (item in ("malformed", "timeout", "ok") or isinstance(item, int)):
                raise ValueError(f"unknown scripted response {item!r}")
        self._queue.extend(responses)

    def set_rate_limit(
        self, calls: int | None = None, window: float | None = None, retry_after: bool | None = None
    ) -> None:
        old_calls, old_window, old_retry = self._limit
        self._limit = (
            old_calls if calls is None else calls,
            old_window if window is None else window,
            old_retry if retry_after is None else retry_after,
        )

    def task(self, task_id: str) -> TaskData:
        """The task's data, created from the seed on first use; a run's registries as far
        as it has got."""
        now = self._clock()
        run = self.runs.get(task_id, now)
        if run is not None:
            return run.registries(now)
        if task_id not in self._tasks:
            size = self.config.task_sizes.get(task_id, self.config.default_size)
            self._tasks[task_id] = TaskData(
                seed=self.config.seed, task_id=task_id, size=size, hostile=self.config.hostile
            )
        return self._tasks[task_id]

    def registries(self, task_id: str) -> list[Registry]:
        return self.task(task_id).registries()

    def task_ids(self) -> list[str]:
        """Every task the simulator has data for or a configured size of, sorted."""
        return sorted(self._tasks.keys() | self.config.task_sizes.keys())

    def find_registry(self, task_id: str, registry: str) -> Registry:
        """The registry of ``task_id`` with this id or exactly this name (any case).

        Raises ``UnknownRegistry`` (a ``KeyError``) when there is none: names are what people
        type at the demo's prompt, ids what scripts copy from the API.
        """
        data = self.task(task_id)
        row = data.row_of(registry) if len(registry) == 32 else None
        if row is not None:
            return data.registry_at(row)
        # The name search the API uses (a substring, any case), then only the exact name.
        _, candidates = data.query(Query(limit=max(1, len(data)), registry_name=registry))
        wanted = registry.casefold()
        for found in candidates:
            if found.registry_name.casefold() == wanted:
                return found
        raise UnknownRegistry(task_id, registry)

    def set_status(
        self, task_id: str, registry: str, status: str, reason: str | None = None
    ) -> Registry:
        """Give one registry (by id or exact name) ``status``; ``reason`` is its failed
        reason (None: the seeded one). Takes effect for the next API call."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        data = self.task(task_id)
        row = data.row_of(self.find_registry(task_id, registry).registry_id)
        if row is None:  # pragma: no cover (find_registry has just found it)
            raise UnknownRegistry(task_id, registry)
        return data.set_status(row, status, reason)

    def flip(self, task_id: str, count: int = 1) -> list[Registry]:
        """Give ``count`` random registries another status (seeded, so runs repeat)."""
        return self.task(task_id).flip_random(count, self._rng)

    def insert(self, task_id: str, count: int, at: int = 0) -> list[Registry]:
        return self.task(task_id).insert(count, at)

    def remove(self, task_id: str, count: int, at: int = 0) -> list[Registry]:
        return self.task(task_id).remove(count, at)

    def start_run(self, kind: str, *, duration: float | None = None) -> SimRun:
        """A run of ``kind`` (``auto`` or ``manual``) beginning now."""
        return self.runs.start(kind, self._clock(), duration=duration)

    def end_run(self, task_id: str, status: int) -> SimRun:
        """End a running run early: -1 stopped, -2 timed out, -3 error."""
        return self.runs.end(task_id, status, self._clock())

    def run_info(self, run: SimRun) -> dict[str, Any]:
        """``run`` as ListImageScanTask lists it now."""
        return run.info(self._clock())

    def listed_runs(self) -> list[dict[str, Any]]:
        """Every run ListImageScanTask lists now (at most 1000), newest first."""
        return self.runs.query(RunQuery(limit=LISTED_MAX), self._clock())[1]

    def is_missing(self, task_id: str) -> bool:
        prefix = self.config.missing_prefix
        return task_id in self.config.missing_tasks or bool(prefix and task_id.startswith(prefix))

    def stats(self) -> dict[str, Any]:
        calls, window, _ = self._limit
        return {
            "calls": dict(self.calls),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "throttled": self.throttled,
            "auth_failures": dict(self.auth_failures),
            "max_in_window": dict(self.max_in_window),
            "max_in_flight": self.max_in_flight,
            "rate_limit": {"calls": calls, "window": window},
            "apis": {api: counts.as_dict() for api, counts in self.apis.items()},
            "runs": len(self.runs),
            "next_scheduled_run": self.runs.next_scheduled_at(),
            "locked": sorted(ak for ak, t in self._locked_until.items() if t > self._clock()),
        }

    # -- the API ----------------------------------------------------------------------------

    def started(self) -> None:
        """The server took an API request; ``finished`` when its answer is sent."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(self) -> None:
        self.in_flight -= 1

    def handle(self, request: SimRequest) -> SimResponse:
        request_id = uuid.uuid4().hex
        try:
            response = self._handle(request, request_id)
        except _Reject as reject:
            response = reject.response
        self.by_status[response.status] += 1
        latency = self.faults.latency_ms / 1000
        return dataclasses.replace(response, delay=response.delay + latency)

    def _handle(self, request: SimRequest, request_id: str) -> SimResponse:
        now = self._clock()
        self._catch_up_flips(now)
        registries = _ROUTE.fullmatch(request.raw_path)
        runs = _RUNS_ROUTE.fullmatch(request.raw_path)
        match = registries or runs
        if request.method != "GET" or match is None:
            return _error(
                404, "APIGW.0101", "The API does not exist or has not been published.", request_id
            )
        ak = self._authenticate(request, now, request_id)
        project_id = unquote(match[1])
        if project_id != self.config.project_id or len(project_id) > PROJECT_ID_MAX:
            return _error(
                403, "APIGW.0302", "The IAM user is not authorized to access the API.", request_id
            )
        self._admit(REGISTRIES if registries else TASKS, ak, now, request_id)
        if registries is None:
            return self._runs_backend(request.raw_query, request_id, now)
        return self._backend(unquote(registries[2]), request.raw_query, request_id)

    def _backend(self, task_id: str, raw_query: str, request_id: str) -> SimResponse:
        fault = self._next_fault()
        if fault is not None and fault != "ok":
            return self._fault_response(fault, request_id)
        try:
            query = parse_query(parse_raw_query(raw_query))
            if not 1 <= len(task_id) <= TASK_ID_MAX:
                raise InvalidParameter(f"task_id must be 1-{TASK_ID_MAX} characters")
        except InvalidParameter as exc:
            return _error(400, "HSS.0001", f"Invalid parameter: {exc}", request_id)
        if self.is_missing(task_id):
            return _error(
                self.config.not_found_status, "HSS.0011", "The task does not exist.", request_id
            )
        total, page = self.task(task_id).query(query)
        payload = {"total_num": total, "data_list": [r.as_api_dict() for r in page]}
        return _json(200, payload, request_id)

    def _runs_backend(self, raw_query: str, request_id: str, now: float) -> SimResponse:
        fault = self._next_fault()
        if fault is not None and fault != "ok":
            return self._fault_response(fault, request_id)
        try:
            query = parse_run_query(parse_raw_query(raw_query))
        except InvalidParameter as exc:
            return _error(400, "HSS.0001", f"Invalid parameter: {exc}", request_id)
        total, page = self.runs.query(query, now)
        return _json(200, {"total_num": total, "data_list": page}, request_id)

    # -- signature --------------------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        return {**self.config.extra_keys, self.config.ak: self.config.sk}

    def _authenticate(self, request: SimRequest, now: float, request_id: str) -> str:
        headers = {k.lower(): v for k, v in request.headers.items()}
        match = _AUTH.fullmatch(headers.get("authorization", "").strip())
        ak = match[1] if match else "(none)"
        if self._locked_until.get(ak, 0.0) > now:
            # Rejected without counting towards a new lock-out: the lock does not grow.
            self.auth_failures[ak] += 1
            why = "The AK/SK is locked after repeated failures."
            raise _Reject(_error(401, "APIGW.0301", why, request_id))
        problem = self._signature_problem(request, headers, match, now)
        if problem:
            self._auth_failed(ak, now, request_id, problem)
        self._consecutive_401[ak] = 0
        return ak

    def _signature_problem(
        self,
        request: SimRequest,
        headers: Mapping[str, str],
        match: re.Match[str] | None,
        now: float,
    ) -> str | None:
        if match is None:
            return "Missing or malformed Authorization header."
        ak, names, sent = match[1], match[2].split(";"), match[3]
        sk = self._secrets().get(ak)
        if sk is None:
            return "Unknown AK."
        if any(n not in headers for n in names) or not {"host", "x-sdk-date"} <= set(names):
            return "A signed header is missing (Host and X-Sdk-Date must be signed)."
        token_problem = self._token_problem(ak, headers, names)
        if token_problem:
            return token_problem
        if not self._date_ok(headers["x-sdk-date"], now):
            return "X-Sdk-Date is missing, malformed or more than 15 minutes off."
        expected = self._expected_signature(request, headers, names, sk)
        return None if hmac.compare_digest(expected, sent) else "Incorrect signature."

    def _token_problem(self, ak: str, headers: Mapping[str, str], names: list[str]) -> str | None:
        wanted = self.config.security_token if ak == self.config.ak else None
        sent = headers.get("x-security-token")
        if wanted is None and sent is not None:
            return "X-Security-Token sent with permanent credentials."
        if wanted is not None and (sent != wanted or "x-security-token" not in names):
            return "X-Security-Token is missing, unsigned or wrong."
        return None

    def _date_ok(self, raw: str, now: float) -> bool:
        try:
            moment = datetime.strptime(raw, signer.DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return False
        return abs(moment.timestamp() - now) <= self.config.max_clock_skew

    @staticmethod
    def _expected_signature(
        request: SimRequest, headers: Mapping[str, str], names: Sequence[str], sk: str
    ) -> str:
        to_sign = signer.string_to_sign(
            method=request.method,
            canonical_path=signer.canonical_path_of(request.raw_path),
            query=signer.canonical_query(parse_raw_query(request.raw_query)),
            headers={n: headers[n] for n in names},
            body=request.body,
        )
        return signer.signature(sk, to_sign)

    def _auth_failed(self, ak: str, now: float, request_id: str, why: str) -> None:
        self.auth_failures[ak] += 1
        self._consecutive_401[ak] += 1
        limit = self.config.lockout_after
        if limit is not None and self._consecutive_401[ak] >= limit:
            self._locked_until[ak] = now + self.config.lockout_seconds
            self._consecutive_401[ak] = 0  # after the lock expires, five more failures to lock
        raise _Reject(
            _error(
                401, "APIGW.0301", f"Incorrect IAM authentication information: {why}", request_id
            )
        )

    # -- rate limit and faults --------------------------------------------------------------

    def _admit(self, api: str, ak: str, now: float, request_id: str) -> None:
        """A slot of ``api``'s own window (HSS counts each API apart), or a 429."""
        calls, window, retry_after = self._limit
        counts = self.apis[api]
        self.calls[ak] += 1
        counts.calls[ak] += 1
        attempts, admitted = self._attempts[api, ak], self._admitted[api, ak]
        for stamps in (attempts, admitted):
            while stamps and stamps[0] <= now - window:
                stamps.popleft()
        attempts.append(now)
        counts.max_in_window[ak] = max(counts.max_in_window[ak], len(attempts))
        self.max_in_window[ak] = max(self.max_in_window[ak], len(attempts))
        if len(admitted) < calls:
            admitted.append(now)
            return
        self.throttled += 1
        counts.throttled += 1
        headers = {}
        if retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(admitted[0] + window - now)))
        raise _Reject(
            _error(
                429,
                "APIGW.0308",
                "The throttling threshold has been reached.",
                request_id,
                **headers,
            )
        )

    def _next_fault(self) -> Scripted | None:
        if self._queue:
            return self._queue.popleft()
        f, roll = self.faults, self._rng.random()
        if roll < f.error_rate:
            return self._rng.choice(SERVER_ERRORS)
        if roll < f.error_rate + f.throttle_rate:
            return 429
        if roll < f.error_rate + f.throttle_rate + f.malformed_rate:
            return "malformed"
        return None

    def _fault_response(self, fault: Scripted, request_id: str) -> SimResponse:
        if fault == "malformed":
            body = b'{"total_num": 3, "data_list": [{"registry_id": "trunc'
            headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
            return SimResponse(status=200, body=body, headers=headers)
        if fault == "timeout":
            response = _error(504, "APIGW.0201", "Backend timeout.", request_id)
            return dataclasses.replace(response, delay=self.faults.timeout_seconds)
        if fault == 429:
            return _error(
                429, "APIGW.0308", "The throttling threshold has been reached.", request_id
            )
        return _error(int(fault), f"SIM.{fault}", "Injected failure.", request_id)

    def _catch_up_flips(self, now: float) -> None:
        """Periodic flips happen lazily, on the clock, so the simulator needs no timer."""
        every = self.config.flip_every
        if not every or not self._tasks:
            return
        while self._last_flip + every <= now:
            self._last_flip += every
            for task_id in sorted(self._tasks):
                self.flip(task_id, self.config.flip_count)
