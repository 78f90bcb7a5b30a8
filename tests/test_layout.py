"""The package's layers (``bot/__init__.py``): imports point down, and only ``cli`` reaches
into the sandbox, lazily."""

from __future__ import annotations

import ast
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot"

#: Bottom first. A module may import modules of its own layer or of a layer below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "bot",
            "bot.errors",
            "bot.models",
            "bot.runs",
            "bot.mirror",
            "bot.config",
            "bot.retry_after",
            "bot.storage.redis_url",
        ),
    ),
    ("instrumentation", ("bot.ops", "bot.ops.logs", "bot.ops.metrics")),
    ("storage", ("bot.storage*",)),
    ("hss", ("bot.hss*",)),
    ("lookup", ("bot.lookup", "bot.runs_service", "bot.kept_questions", "bot.runtime")),
    (
        "slack views",
        (
            "bot.slack",
            "bot.slack.text",
            "bot.slack.blocks",
            "bot.slack.words",
            "bot.slack.tasks_command",
            "bot.slack.command",
            "bot.slack.watch_command",
            "bot.slack.run_watch_command",
            "bot.slack.watch_text",
            "bot.slack.watch_form",
            "bot.slack.action_value",
            "bot.slack.run_text",
            "bot.slack.render",
            "bot.slack.render_tasks",
            "bot.slack.home",
        ),
    ),
    ("alerting", ("bot.alerting*",)),
    ("slack handlers", ("bot.slack.*",)),
    ("process", ("bot.ops.*",)),
    ("cli", ("bot.cli", "bot.cli_tasks", "bot.table")),
    ("sandbox", ("bot.sandbox*",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(BOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(BOT.rglob("*.py"))}


def layer(module: str) -> int:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatchcase(module, p) for p in patterns):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and bot/__init__.py")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported bot module, imported inside a function) for each import of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lazy |= {id(n) for n in ast.walk(node)}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from bot.x import y`` may import a module ``bot.x.y`` or a name of ``bot.x``.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        found += [(n, id(node) in lazy) for n in names if n == "bot" or n.startswith("bot.")]
    return found


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    for imported, lazily in imports(MODULES[module]):
        assert imported in MODULES, f"{module} imports {imported}, which does not exist"
        if module == "bot.cli" and lazily and imported.startswith("bot.sandbox"):
            continue  # the one way up, checked below
        mine, theirs = layer(module), layer(imported)
        assert theirs <= mine, (
            f"{module} ({LAYERS[mine][0]}) imports {imported} ({LAYERS[theirs][0]}), "
            "a layer above it"
        )


def test_only_cli_reaches_the_sandbox_and_only_lazily() -> None:
    for module, path in MODULES.items():
        if module.startswith("bot.sandbox"):
            continue
        for imported, lazily in imports(path):
            if imported.startswith("bot.sandbox"):
                assert module == "bot.cli" and lazily, f"{module} imports {imported}"


def test_every_package_says_what_lives_there_and_what_it_may_import() -> None:
    for init in sorted(BOT.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "import" in doc, f"{init.parent.name}/__init__.py: say what it may import"


def test_the_rule_can_fail() -> None:
    # A guard against a test that cannot fail: an upward import is caught.
    assert layer("bot.cli") > layer("bot.lookup") > layer("bot.errors")
    assert layer("bot.slack.app") > layer("bot.alerting.pipeline") > layer("bot.slack.render")


def test_no_test_module_imports_another() -> None:
    # Shared helpers live in tests/support.py, tests/plugins or fixtures (issue 8).
    for path in sorted(BOT.parent.joinpath("tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n.startswith("tests.test_")]
            assert not bad, f"{path.name} imports {bad}: move what it needs to tests/support.py"
