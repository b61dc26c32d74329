"""Warnings and notes for people: one line each, logged to ``logging.getLogger("autotransfer")``.

The latest warnings are also kept for reports (``seen_warnings``: at most ``KEPT_WARNINGS``, so a
notebook that runs for days does not hold every warning it ever gave). The ``autotransfer`` logger
comes with its own stderr handler and does not propagate (optuna's and transformers' choice): a
script or notebook with no logging set up still sees every message, and a ``logging.basicConfig``
elsewhere does not print them twice. Hide notes with ``logging.getLogger("autotransfer").setLevel(logging.WARNING)``;
route both through your own logging with ``log.handlers.clear(); log.propagate = True``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys

logger = logging.getLogger("autotransfer")
KEPT_WARNINGS = 1000
_seen: collections.deque[str] = collections.deque(maxlen=KEPT_WARNINGS)


class ConsoleHandler(logging.Handler):
    """``warning: message`` for warnings, the plain line for notes, on the current ``sys.stderr``.

    Written through ``tqdm.write`` so that a progress bar is cleared and redrawn below the line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            stream = sys.stderr  # looked up at each message: pytest's capsys and click's runner swap it
            from tqdm.auto import tqdm

            tqdm.write(text, file=stream)
            stream.flush()
        except Exception:
            self.handleError(record)


def use_console() -> None:
    """Show notes and warnings on stderr through exactly one ``ConsoleHandler`` (the CLI's set-up)."""
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(ConsoleHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


if not logger.handlers:  # a logger configured before autotransfer was imported is left as it is
    logger.addHandler(ConsoleHandler())
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def warn(message: str) -> None:
    """Log ``message`` as a warning (shown as ``warning: message``) and remember it."""
    _seen.append(message)
    logger.warning(message, stacklevel=2)


def note(message: str) -> None:
    """Log an informational line (shown as is)."""
    logger.info(message, stacklevel=2)


def seen_warnings() -> list[str]:
    """The warnings given so far in this process, oldest first: the latest ``KEPT_WARNINGS`` of them."""
    return list(_seen)


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load-report warnings and progress bars for one load or save."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
