"""The search: an Optuna study over source × strategy × hyper-parameters with scratch baselines.

The public entry point is ``autotransfer.search`` (``runner.search``); the modules here are the
parts: ``config`` (the options) and ``plan`` (what they resolve to), ``runner`` (the study's
steps), ``trial`` (one trial), ``record`` (what trials and the study record in Optuna), ``choice``
and ``baselines`` (the top-k and their scratch baselines), ``stopping`` (when to stop asking),
``space``, ``pruner``, ``budget``, ``announce``, ``storage``, ``rundir`` and ``report``.
"""
