"""The two private Optuna attributes the search needs, behind one name each.

Checked against Optuna 5.0.0: ``Study._storage`` (the ``BaseStorage``; heartbeats, and setting a
stale trial's state, need it) and ``Trial._trial_id`` / ``FrozenTrial._trial_id`` (the storage's
key of a trial; ``number`` is per study). If an Optuna upgrade renames either, only this module changes.
"""

from __future__ import annotations

from typing import Any


def storage_of(study: Any) -> Any:
    """The storage behind ``study`` (an ``optuna.storages.BaseStorage``)."""
    return study._storage


def trial_id(trial: Any) -> int:
    """The storage's id of ``trial`` (an ``optuna.Trial`` or a ``FrozenTrial``)."""
    return trial._trial_id
