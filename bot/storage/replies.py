"""What redis-py hands back. The bot's clients do not decode responses (the mirror's chunks
are zlib bytes), so a key, member or field read back is ``bytes``; a value a caller passed
in, or read through a decoding client, may already be ``str``."""

from __future__ import annotations


def as_str(value: bytes | str) -> str:
    """A reply as text (UTF-8, as Redis was given it)."""
    return value.decode() if isinstance(value, bytes) else value
