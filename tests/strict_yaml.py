"""A small, strict reader for the YAML subset of ``manifest.yaml``, ``compose.yaml`` and the
Kubernetes manifest: block mappings and sequences, quoted and plain scalars, booleans and
integers. PyYAML is not a dependency of the project, and a reader that refuses anything
outside the subset cannot read a file differently from what its author meant.
``tests/test_manifest.py`` tests it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class ManifestSyntaxError(ValueError):
    pass


@dataclass(slots=True)
class _Line:
    number: int
    indent: int
    text: str


_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*):(?: (.*)|)$")
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")


def read_manifest(text: str) -> Any:
    """Block mappings and sequences, quoted and plain scalars, booleans, integers, comments.

    Rejects tabs, flow collections, anchors, tags, block scalars, trailing comments, duplicate
    keys and unexpected indentation rather than guessing.
    """
    lines: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise ManifestSyntaxError(f"line {number}: tab")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        lines.append(_Line(number, len(raw) - len(raw.lstrip(" ")), stripped))
    if not lines or lines[0].indent != 0:
        raise ManifestSyntaxError("the document must start with a top-level mapping")
    value, end = _block(lines, 0, 0)
    if end != len(lines):
        raise ManifestSyntaxError(f"line {lines[end].number}: unexpected indentation")
    return value


def _block(lines: list[_Line], i: int, indent: int) -> tuple[Any, int]:
    if lines[i].text == "-" or lines[i].text.startswith("- "):
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


def _mapping(lines: list[_Line], i: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i].indent == indent:
        line = lines[i]
        match = _KEY.fullmatch(line.text)
        if match is None:
            raise ManifestSyntaxError(f"line {line.number}: expected 'key: value'")
        key, rest = match.group(1), match.group(2)
        if key in out:
            raise ManifestSyntaxError(f"line {line.number}: duplicate key {key!r}")
        if rest is None or not rest.strip():
            i += 1
            if i == len(lines) or lines[i].indent <= indent:
                raise ManifestSyntaxError(f"line {line.number}: {key!r} has no value")
            out[key], i = _block(lines, i, lines[i].indent)
        else:
            out[key] = _scalar(rest.strip(), line.number)
            i += 1
    if i < len(lines) and lines[i].indent > indent:
        raise ManifestSyntaxError(f"line {lines[i].number}: unexpected indentation")
    return out, i


def _sequence(lines: list[_Line], i: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and lines[i].indent == indent and lines[i].text.startswith("- "):
        line = lines[i]
        item = line.text[2:].strip()
        if _KEY.fullmatch(item):
            # "- key: value" opens a mapping whose keys line up with "key".
            lines[i] = _Line(line.number, indent + 2, item)
            value, i = _mapping(lines, i, indent + 2)
            out.append(value)
        else:
            out.append(_scalar(item, line.number))
            i += 1
    if i < len(lines) and lines[i].indent > indent:
        raise ManifestSyntaxError(f"line {lines[i].number}: unexpected indentation")
    return out, i


def _scalar(text: str, number: int) -> str | bool | int:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise ManifestSyntaxError(f"line {number}: unterminated string")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestSyntaxError(f"line {number}: bad string ({exc})") from exc
        if not isinstance(value, str):
            raise ManifestSyntaxError(f"line {number}: bad string")
        return value
    if text.startswith("'"):
        inner = text[1:-1]
        if len(text) < 2 or not text.endswith("'") or re.search(r"(?<!')'(?!')", inner):
            raise ManifestSyntaxError(f"line {number}: bad single-quoted string")
        return inner.replace("''", "'")
    if text[0] in "[]{}&*!|>%@`-?,#" or " #" in text or ": " in text or text.endswith(":"):
        raise ManifestSyntaxError(f"line {number}: unsupported value {text!r}; quote it")
    if text in ("true", "false"):
        return text == "true"
    if text.lower() in ("null", "~", "yes", "no", "on", "off", "true", "false"):
        raise ManifestSyntaxError(f"line {number}: ambiguous value {text!r}; quote it")
    if _INT.fullmatch(text):
        return int(text)
    return text
