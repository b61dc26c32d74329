"""Warnings and notes for people: one line each, on stderr, also kept for reports."""

from __future__ import annotations

import sys

_seen: list[str] = []


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr and remember it."""
    _seen.append(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """Print an informational line on stderr."""
    print(message, file=sys.stderr, flush=True)


def seen_warnings() -> list[str]:
    """Every warning printed so far in this process (oldest first)."""
    return list(_seen)
