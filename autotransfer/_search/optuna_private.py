"""Every use of an Optuna private name, behind one public function each.

Written against Optuna 5.0 and checked against 5.1.0. Optuna keeps these names private, so an
upgrade may rename them; then only this module changes. ``tests/test_house.py`` fails if any other
module reads a ``._name`` of an Optuna object.

- ``Study._storage``: the study's ``BaseStorage``. Heartbeats, failing a stale or orphaned trial,
  and setting a waiting trial RUNNING are storage calls, and ``Study`` exposes no storage.
- ``Trial._trial_id`` / ``FrozenTrial._trial_id``: the storage's key of a trial, which every storage
  call takes (``number`` counts within a study only).
- ``_CachedStorage._backend``: ``create_study`` wraps an ``RDBStorage`` in this cache; the heartbeat
  table is read through the RDB storage's engine.
- ``Study._thread_local.cached_all_trials``: the study's per-thread cache of its trials.
  ``Study.ask`` clears it before it hands out a trial, so the sampler sees every trial finished
  since; ``start_waiting`` does the same when it starts a chosen waiting trial.
- ``optuna.Trial(study, trial_id)``: Optuna's docs ask callers not to build a ``Trial`` themselves
  (``Study.ask`` does); ``start_waiting`` does, for the waiting trial the search chose.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState


def storage_of(study: Any) -> Any:
    """The storage behind ``study`` (an ``optuna.storages.BaseStorage``)."""
    return study._storage


def trial_id(trial: Any) -> int:
    """The storage's id of ``trial`` (an ``optuna.Trial`` or a ``FrozenTrial``)."""
    return trial._trial_id


def rdb_of(study: Any) -> Any:
    """The ``RDBStorage`` under the study's storage cache, or the storage itself when it is not cached."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage)


def start_waiting(study: Any, frozen: Any) -> optuna.Trial | None:
    """``frozen`` (a WAITING trial of ``study``) set RUNNING and returned as a ``Trial``, as ``Study.ask``
    does with the first trial of its queue; None when another worker started it first.

    Raises ``optuna.exceptions.UpdateFinishedTrialError`` when another worker already finished it.
    """
    if not storage_of(study).set_trial_state_values(trial_id(frozen), TrialState.RUNNING):
        return None
    study._thread_local.cached_all_trials = None
    return optuna.Trial(study, trial_id(frozen))
