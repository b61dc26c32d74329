"""One error family. The CLI prints any of these as a single ``error: ...`` line, exit code 2."""

from __future__ import annotations


class AutotransferError(Exception):
    """A user-facing problem: the message names the input, what was expected and the fix."""

    exit_code = 2


class DataError(AutotransferError):
    """The dataset cannot be read or does not make sense."""


class PluginError(AutotransferError):
    """A plugin failed to load or to register (fatal only under --strict-plugins)."""


class SourceError(AutotransferError):
    """A source model spec is wrong or its weights are not available."""


class EstimatorError(AutotransferError):
    """An estimator cannot score the given arrays."""


class Diverged(AutotransferError):
    """Training made weights or outputs non-finite (nan or inf): the run fails rather than save or use them."""


class NotApplicable(EstimatorError):
    """An estimator needs an input this source cannot provide (e.g. LEEP without a source head)."""
