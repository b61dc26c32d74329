"""The plugin contract: every hook a plugin may implement.

Plugins are ordinary modules (or objects) whose functions are decorated with
``autotransfer.hookimpl`` and named exactly like a hook below. They are found
through the ``autotransfer`` entry-point group, ``--plugins-dir`` folders, or
``AUTOTRANSFER_PLUGINS_DIR``. Registration hooks receive a ``register`` callback
and return nothing; each call of ``register`` adds one item, and the plugin
manager records which plugin provided it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("autotransfer")
hookimpl = pluggy.HookimplMarker("autotransfer")


# --- registries: called once per process, when the registry is first needed ---


@hookspec
def register_sources(register: Callable[[Any], None]) -> None:
    """Register source models (pretrained backbones that can be ranked and fine-tuned) by name.

    Args:
        register: call ``register(item)`` once per name, where ``item`` is an
            ``autotransfer.sources.Source`` instance, or an ``autotransfer.sources.Alias``
            giving a name to a spec string handled by a resolver, e.g.
            ``register(Alias("my-net", "timm:resnet18@/path/w.safetensors", options={"size": 64}))``.
            An alias reads nothing when registered; its spec is resolved on first use.

    Returns:
        Nothing; the return value is ignored.

    Called: the first time the source registry is needed (``autotransfer sources``,
    ``rank``, ``search``, ``train``).
    """


@hookspec
def register_source_resolvers(register: Callable[[Any], None]) -> None:
    """Register spec resolvers, which build sources from spec strings ``<prefix>:<rest>``.

    Args:
        register: call ``register(resolver)`` once per prefix, with an
            ``autotransfer.sources.SpecResolver`` instance; its ``name`` (such as ``"timm"``)
            claims the prefix, so ``timm:<model>`` is built by ``resolver.resolve("<model>", options)``.

    Returns:
        Nothing; the return value is ignored.

    Called: the first time a spec string is resolved or sources are listed (together with
    ``register_sources``).
    """


@hookspec
def register_strategies(register: Callable[[Any], None]) -> None:
    """Register transfer strategies (linear probe, partial fine-tuning, ...).

    Args:
        register: call ``register(strategy)`` once per strategy, an
            ``autotransfer.strategies.Strategy`` instance.

    Returns:
        Nothing; the return value is ignored.

    Called: the first time the strategy registry is needed (``autotransfer
    strategies``, ``train``, ``search``).
    """


@hookspec
def register_estimators(register: Callable[[Any], None]) -> None:
    """Register transferability estimators (LogME, H-score, ...).

    Args:
        register: call ``register(estimator)`` once per estimator, an
            ``autotransfer.estimators.Estimator`` instance.

    Returns:
        Nothing; the return value is ignored.

    Called: the first time the estimator registry is needed (``autotransfer
    estimators``, ``autotransfer.estimate``, ``rank``, ``search``).
    """


# --- data ---


@hookspec(firstresult=True)
def load_dataset(path: str, options: Mapping[str, Any]) -> Any | None:
    """Load the dataset at ``path`` if this plugin recognises its layout.

    Args:
        path: the ``--data`` argument, an existing file or folder.
        options: loader options from the command line: ``text_col`` (str | None),
            ``label_col`` (list[str] | None), ``split`` (tuple of 3 fractions),
            ``seed`` (int).

    Returns:
        An ``autotransfer.data.Dataset``, or ``None`` when the layout is not this
        plugin's, so the next plugin is asked. Raise ``autotransfer.DataError``
        when the layout is yours but the content is wrong.

    Called: once per command that takes ``--data``; the first non-``None`` answer wins.
    """


# --- reporters: plain data in, nothing out ---


@hookspec
def trial_finished(trial_row: Mapping[str, Any]) -> None:
    """Observe one finished search trial (complete, pruned or failed).

    Args:
        trial_row: the row written to ``trials.csv`` for this trial, as a plain dict
            (``trial``, ``state``, ``source``, ``strategy``, ``val_score``, ...).

    Returns:
        Nothing. Exceptions are reported as a warning and never stop the search.

    Called: after each trial of ``autotransfer search`` ends.
    """


@hookspec
def search_finished(result: Mapping[str, Any]) -> None:
    """Observe the end of a search.

    Args:
        result: the ``summary.csv`` row as a plain dict plus ``out_dir`` (str).

    Returns:
        Nothing. Exceptions are reported as a warning.

    Called: once, after the leaderboards of ``autotransfer search`` are written.
    """
