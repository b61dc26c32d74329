"""Numeric options checked where they are made: the config dataclasses' ``__post_init__`` and the
CLI's option callbacks call ``check_number``, so a value an option cannot mean (negative, zero
where it counts, not finite, not a whole number) is one line naming the option, before any work."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from .errors import AutotransferError

MAX_SEED = 2**63 - 1  # torch, numpy and Python's random all take 0 .. 2**63 - 1


@dataclass(frozen=True)
class Rule:
    """What one numeric option accepts."""

    whole: bool  # a whole number (int), or any finite number
    least: float  # the smallest value it accepts ...
    strict: bool = False  # ... unless strict: then only values above ``least``
    most: float | None = None  # the largest (None: no limit but finiteness)

    def expected(self) -> str:
        kind = "a whole number" if self.whole else "a finite number"
        if self.most is not None:
            return f"{kind} from {self.least:g} to {self.most}"
        if self.strict:
            return f"{kind} more than {self.least:g}"
        return f"{kind} that cannot be negative" if self.least == 0 else f"{kind}, at least {self.least:g}"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.whole else Real):
            return False
        if not math.isfinite(value) or value < self.least or (self.strict and value == self.least):
            return False
        return self.most is None or value <= self.most


COUNT = Rule(whole=True, least=1)  # trials, epochs, patience, batch size ...
COUNT0 = Rule(whole=True, least=0)  # warm-up epochs, stall trials, loader workers
POSITIVE = Rule(whole=False, least=0, strict=True)  # seconds, learning rates
NONNEGATIVE = Rule(whole=False, least=0)  # weight decay
SEED = Rule(whole=True, least=0, most=MAX_SEED)


def check_number(name: str, value: Any, rule: Rule, default: Any = None) -> None:
    """A one-line ``AutotransferError`` unless ``value`` fits ``rule``; ``name`` is the field name
    (``warmup_epochs``), shown as the option (``--warmup-epochs``)."""
    if rule.accepts(value):
        return
    flag = "--" + name.replace("_", "-")
    fallback = "" if default is None else f" ({default})"
    raise AutotransferError(f"{flag} {value!r} is not allowed; expected {rule.expected()} — leave {flag} out "
                            f"for the default{fallback}")


def check_fields(config: Any, rules: Mapping[str, Rule], optional: tuple[str, ...] = ()) -> None:
    """``check_number`` on each field of a config dataclass named in ``rules``; a field in
    ``optional`` may also be None (its default is decided later)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, rule in rules.items():
        value = getattr(config, name)
        if value is None and name in optional:
            continue
        check_number(name, value, rule, defaults[name])


def split_options(cls: type, config: Any, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The one pattern of ``SearchConfig.from_options`` and ``TrainConfig.split_options``: the base config
    (``config``, or ``cls``'s defaults), the ``options`` that name its fields, and the options that do not.
    A ``config`` of another type is one line."""
    if config is not None and not isinstance(config, cls):
        raise AutotransferError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    return (config or cls(), {k: v for k, v in options.items() if k in names},
            {k: v for k, v in options.items() if k not in names})
