"""The one path a finished trial is announced on: ``Announcer``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna

from ..console import warn
from ..plugins import get_plugin_manager
from .optuna_private import storage_of, trial_id


class Announcer:
    """Tells every listener that a trial finished (complete, pruned or failed), after its reports
    are written: the plugins' ``trial_finished`` hook with the trial's trials.csv row, then each
    Optuna-style ``callback(study, frozen_trial)`` the search was given.

    The trial is already told and written, so a listener that raises loses nothing. A plugin is
    warned about by the plugin manager; a callback is warned about once (its later errors are
    silent: a logging service that is down fails every trial) and still called for the next
    trials. An interrupt (Ctrl-C) is not caught.
    """

    def __init__(self, callbacks: Sequence[Callable[[Any, Any], None]] = ()):
        self.callbacks = tuple(callbacks)
        self.failed: set[int] = set()  # the callbacks already warned about

    def finished(self, study: optuna.Study, trial: optuna.Trial, rows: list[dict[str, Any]]) -> None:
        """Announce ``trial``; ``rows`` are the trials.csv rows just written."""
        get_plugin_manager().notify("trial_finished",
                                    trial_row=next((r for r in rows if r["trial"] == trial.number), {}))
        if not self.callbacks:
            return
        frozen = storage_of(study).get_trial(trial_id(trial))
        for i, callback in enumerate(self.callbacks):
            try:
                callback(study, frozen)
            except Exception as exc:
                if i not in self.failed:
                    self.failed.add(i)
                    name = getattr(callback, "__qualname__", None) or type(callback).__name__
                    warn(f"search callback {name} raised {type(exc).__name__}: {exc}; the search goes on "
                         "(its later errors are not shown)")
