"""The search: an Optuna study over source × strategy × hyper-parameters with scratch baselines.

The public entry point is ``autotransfer.search`` (``runner.search``); the modules here are the
parts: ``runner`` (the study's steps), ``space``, ``pruner``, ``budget``, ``storage``, ``rundir``
and ``report``.
"""
