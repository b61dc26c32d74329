"""The search's records in Optuna (autotransfer._search.record): the stored keys never change, so run
folders and shared studies written before read the same."""

from __future__ import annotations

import dataclasses

import optuna
from optuna.trial import TrialState, create_trial

from autotransfer._search.record import SCRATCH, SEARCH, StudyRecord, TrialRecord

# the keys studies written by earlier versions hold; a renamed field would make them unreadable
TRIAL_KEYS = ["role", "fixed", "baseline_source", "config", "source", "strategy", "provider", "precision",
              "input_size", "scratch_note", "train_items", "epoch_seconds", "planned_epochs", "cut_reason",
              "prune_reason", "fail_reason", "skipped", "seconds", "epochs_run", "best_epoch", "trainable_params",
              "total_params", "task_scores", "val_interval", "task_intervals"]
STUDY_KEYS = ["ranked", "top_k", "fingerprint", "epochs", "data", "primary", "estimators", "scores", "searched",
              "pruner", "architectures", "dataset", "sources", "probe_scores", "summary", "answer", "metric",
              "metric_reason", "test_confusion"]


def test_the_stored_keys_are_the_ones_earlier_studies_hold():
    assert [f.name for f in dataclasses.fields(TrialRecord)] == TRIAL_KEYS
    assert [f.name for f in dataclasses.fields(StudyRecord)] == STUDY_KEYS


def test_a_trial_record_stores_what_is_set_and_reads_back_the_same():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    TrialRecord(role=SCRATCH, baseline_source="a").save(trial)
    TrialRecord(epoch_seconds=1.5, planned_epochs=4).save(trial)  # a later write leaves the earlier ones
    trial.set_user_attr("mlflow_run", "x")  # another tool's key is left alone
    assert trial.user_attrs == {"role": "scratch", "baseline_source": "a", "epoch_seconds": 1.5,
                                "planned_epochs": 4, "mlflow_run": "x"}
    study.tell(trial, 0.5)
    record = TrialRecord.from_frozen(study.trials[0])
    assert record == TrialRecord(role=SCRATCH, baseline_source="a", epoch_seconds=1.5, planned_epochs=4)
    assert record.is_scratch and record.kind == SCRATCH
    assert TrialRecord().to_user_attrs() == {} and TrialRecord().kind == SEARCH  # nothing recorded yet: sampled


def test_a_study_written_with_literal_keys_reads_through_the_records():
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("sources", ["a"])  # a study from before the probes: no "ranked"
    study.set_user_attr("fingerprint", "f" * 64)
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.7, user_attrs={
        "role": "default", "fixed": {"source": "a", "strategy": "linear_probe"}, "best_epoch": 0}))
    attrs = StudyRecord.from_study(study)
    assert attrs.made and attrs.ranked is None and attrs.sources == ["a"] and attrs.fingerprint == "f" * 64
    assert not StudyRecord().made
    record = TrialRecord.from_frozen(study.trials[0])
    assert record.fixed == {"source": "a", "strategy": "linear_probe"} and record.best_epoch == 0
    StudyRecord(summary={"val_score": 0.7}, answer=0).save(study)
    assert study.user_attrs["answer"] == 0 and study.user_attrs["sources"] == ["a"]
