"""Resolving source specs: registered names, aliases and ``<prefix>:<rest>`` strings, through the plugins.

``resolve_source("timm:resnet18")`` asks the registries the plugin manager builds (registered sources
and ``Alias`` names first, then the ``SpecResolver`` of the prefix); ``resolve_sources`` keeps the ones
usable now; ``default_source_specs`` is the default zoo of a modality, which checks whether the hub can
be reached. ``file_sha256``, ``is_offline`` and ``split_spec_options`` are helpers for source plugins.

The contract a source plugin implements lives in ``autotransfer.source_contract`` (below the plugin
manager, so the manager can check what is registered without importing this module); its names are
re-exported here, so ``from autotransfer.sources import Source, SpecResolver`` keeps working.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._lazy import lazy_class as lazy_class  # re-exported for source plugins
from .console import note, warn
from .errors import AutotransferError, SourceError
from .memo import BoundedMemo
from .plugins import get_plugin_manager
from .registry import BUILTIN, Provider
from .source_contract import Backbone as Backbone
from .source_contract import Builder as Builder
from .source_contract import Source as Source
from .source_contract import SourceOptions as SourceOptions
from .source_contract import SpecResolver as SpecResolver


class Alias:
    """A name for a spec string, registered like a source: ``register(Alias("my-net", "timm:resnet18@/w.pth"))``.

    Nothing is read when it is registered. Asking for the name resolves ``spec`` (with ``options``
    added to its query) through the registered resolvers on first use, so a zoo plugin imports
    nothing from the plugin that owns the prefix. The source it gives is the resolver's own, with
    the alias's name, description and provider; its ``spec`` (what rebuilds it anywhere) is unchanged.
    """

    provider: Provider = BUILTIN  # set by the plugin manager at registration

    def __init__(self, name: str, spec: str, *, options: Mapping[str, Any] | None = None, description: str = "",
                 modality: str = "", default: bool = True, offline_zoo: bool = False):
        self.name = name  # the registered name, e.g. "digits-test_resnet"
        self.spec = spec  # what it stands for: "<prefix>:<rest>", or another registered name
        self.options = dict(options or {})  # spec options, added to spec's query, e.g. {"size": 16}
        self.description = description  # one line for ``autotransfer sources``
        self._modality = modality  # "image"/"text"; "" asks the spec's resolver, then the source
        self.default = default  # joins the default zoo of its modality (see ``Source.default``)
        self.offline_zoo = offline_zoo  # see ``Source.offline_zoo``
        self._sources: dict[str, Source] = {}

    @property
    def modality(self) -> str:
        if not self._modality:
            _, resolvers = _registries()
            prefix, sep, _ = self.spec.partition(":")
            declared = resolvers.get(prefix).modality if sep and prefix in resolvers else ""
            self._modality = declared or self.source().modality
        return self._modality

    def source(self, options: SourceOptions | None = None, query: Mapping[str, str] | None = None) -> Source:
        """The source this name stands for (one object per options and query), named like the alias."""

        options = options or SourceOptions()
        head, own = parse_query(self.spec)
        merged = {**own, **{k: _query_value(v) for k, v in self.options.items()}, **(query or {})}
        key = repr((options, sorted(merged.items())))
        if key not in self._sources:
            if head == self.name:
                raise SourceError(f"source alias {self.name!r} stands for itself; give it a spec such as "
                                  f"'timm:<model>@/path/weights.safetensors'")
            spec = head + ("?" + "&".join(f"{k}={v}" for k, v in merged.items()) if merged else "")
            src = copy.copy(resolve_source(spec, options))  # a copy: the spec may name a registered source
            src.name, src.provider = self.name, self.provider
            src.description = self.description or src.description
            self._sources[key] = src
        return self._sources[key]

    def describe(self) -> dict[str, Any]:
        try:
            return self.source().describe()
        except AutotransferError as exc:  # one broken alias must not break the listing
            return {"name": self.name, "modality": self._modality, "provider": str(self.provider),
                    "feature_dim": None, "offline_weights": False, "description": f"{self.spec}: {exc}"}

    def __repr__(self) -> str:
        return f"Alias({self.name!r}, {self.spec!r})"


def _query_value(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


# --- helpers for source plugins ------------------------------------------------------------

_file_hashes: BoundedMemo[str] = BoundedMemo(1024)  # (path, size, mtime) -> sha256 hex digest


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content, memoised on (path, size, mtime) so a big weights file is hashed once."""

    st = os.stat(path)
    return _file_hashes.get((str(Path(path).resolve()), st.st_size, st.st_mtime_ns), lambda: _sha256(path))


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# --- resolving spec strings (helpers used by rank/search/train) -------------------------


def is_offline(options: SourceOptions | None = None) -> bool:
    """Whether the network must not be touched: ``options.offline`` or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``."""

    if options is not None and options.offline:
        return True
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def parse_query(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"<rest>?k=v&k2=v2"`` into ``("<rest>", {"k": "v", "k2": "v2"})``.

    Only a trailing ``?`` followed by ``key=value`` pairs counts as a query, so a path with
    a ``?`` in it is left alone.
    """
    head, sep, query = spec.rpartition("?")
    if not sep or not query:
        return spec, {}
    pairs = [p for p in query.split("&") if p]
    if not pairs or not all("=" in p and p.split("=", 1)[0].isidentifier() for p in pairs):
        return spec, {}
    return head, dict(p.split("=", 1) for p in pairs)


def split_spec_options(prefix: str, rest: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``parse_query`` plus the check every resolver needs: only ``allowed`` option names."""

    body, query = parse_query(rest.strip())
    bad = sorted(set(query) - set(allowed))
    if bad:
        raise SourceError(f"unknown option(s) {', '.join(bad)} in source spec '{prefix}:{rest}'; "
                          f"expected any of {', '.join(allowed)}")
    return body, query


def _registries():
    pm = get_plugin_manager()
    return pm.registry("sources"), pm.source_resolvers()


def resolve_source(spec: str, options: SourceOptions | None = None) -> Source:
    """The source for ``spec``: a registered source name (``minilm-l6``) or ``<prefix>:<rest>``
    handled by a registered resolver (``timm:resnet18``, ``hf:./my-bert``).

    Raises ``SourceError`` naming close matches when nothing matches.
    """

    options = options or SourceOptions()
    spec = spec.strip()
    sources, resolvers = _registries()
    head, query = parse_query(spec)
    if spec in sources:
        head, query = spec, {}
    if head in sources:  # a registered name, maybe with options: "efficientnet-lite0?size=64"
        item = sources.get(head)
        if isinstance(item, Alias):
            return item.source(options, query)
        return item.with_options(query) if query else item
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in resolvers:
        if not rest:
            raise SourceError(f"source spec {spec!r} names no model after {prefix + ':'!r}; "
                              f"expected e.g. {_example(resolvers.get(prefix))}")
        return resolvers.get(prefix).resolve(rest, options)
    if sep:  # a mistyped prefix: keep the rest, fix the prefix
        close = [f"{p}:{rest}" for p in difflib.get_close_matches(prefix, resolvers.names(), n=2, cutoff=0.5)]
    else:  # a mistyped registered name, or a bare model name that a resolver's zoo has
        close = difflib.get_close_matches(spec, sources.names(), n=3, cutoff=0.5)
        close += [d for _, r in resolvers.items() for d in r.defaults() if d.split(":", 1)[-1] == spec]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    forms = ", ".join(f"{p}:<model>" for p in resolvers.names()) or "no prefix resolvers"
    registered = ", ".join(sources.names()) or "none"
    raise SourceError(
        f"unknown source {spec!r}{hint} (registered sources: {registered}; spec forms: {forms}); "
        "run 'autotransfer sources' to list them"
    )


def source_from_export(export: Mapping[str, Any], folder: Path, name: str, spec: str,
                       options: SourceOptions | None = None) -> Source:
    """Rebuild an exported source (see ``Source.export``) through the resolver it names."""

    _, resolvers = _registries()
    prefix = str(export.get("resolver", ""))
    if prefix not in resolvers:
        raise SourceError(
            f"the model in {str(folder)!r} was exported by source resolver {prefix!r}, which is not loaded "
            f"(loaded: {', '.join(resolvers.names()) or 'none'}); install or enable the plugin that provides it"
        )
    return resolvers.get(prefix).from_export(export, folder, name, spec, options or SourceOptions(offline=True))


def _example(resolver: SpecResolver) -> str:
    zoo = resolver.defaults()
    return repr(zoo[0]) if zoo else repr(f"{resolver.name}:<model>")


def resolve_sources(
    specs: list[str] | tuple[str, ...],
    options: SourceOptions | None = None,
    modality: str | None = None,
) -> list[Source]:
    """Resolve ``specs`` and keep the sources usable now.

    A bad spec raises ``SourceError``. Sources of another modality than ``modality`` and
    sources whose pretrained weights are unavailable (offline and not cached) are skipped
    with one warning line each kind, naming every skipped source and how to provide its
    weights locally. Raises ``SourceError`` when nothing usable is left.
    """

    options = options or SourceOptions()
    usable: list[Source] = []
    wrong_modality: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()
    for spec in specs:
        src = resolve_source(spec, options)
        if src.name in seen:
            continue
        seen.add(src.name)
        if modality and src.modality != modality:
            wrong_modality.append(f"{src.name} ({src.modality})")
            continue
        try:
            ok, why = src.available()
        except SourceError as exc:  # e.g. a corrupt weights file: skipped like a missing one
            ok, why = False, str(exc)
        if ok:
            usable.append(src)
        else:
            missing.append((src.name, why))
    if wrong_modality:
        warn(f"skipped {len(wrong_modality)} source(s) that do not take {modality} input: "
             + ", ".join(wrong_modality))
    if missing:
        warn(f"skipped {len(missing)} source(s) whose pretrained weights are not available: "
             + "; ".join(f"{name}: {why}" for name, why in missing))
    if not usable:
        asked = ", ".join(specs) or "none"
        raise SourceError(
            f"no usable source among {asked}"
            + (f" for {modality} data" if modality else "")
            + "; give local weights, e.g. --sources timm:<model>@/path/weights.safetensors or "
            "hf:/path/to/model-folder, or run online once so the hub cache has them"
        )
    return usable


HUB_HOST = ("huggingface.co", 443)  # where hub zoos download from
_reachable: dict[tuple[str, int], bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection now (False when offline mode is on); memoised."""

    if is_offline():
        return False
    if HUB_HOST not in _reachable:
        try:
            socket.create_connection(HUB_HOST, timeout=timeout).close()
            _reachable[HUB_HOST] = True
        except OSError:
            _reachable[HUB_HOST] = False
    return _reachable[HUB_HOST]


def default_source_specs(modality: str, options: SourceOptions | None = None) -> list[str]:
    """The default zoo for ``modality``: every resolver's ``defaults()`` of that modality, then
    registered sources of that modality (no duplicates, in registration order).

    When the hub cannot be reached (offline mode, or no network), zoo entries whose weights are
    not in the local cache are dropped; if none is left, the registered sources marked
    ``offline_zoo`` (real weights that ship in a package, e.g. ``efficientnet-lite0``) are the zoo.
    """

    sources, resolvers = _registries()
    out: list[str] = []
    for _, resolver in resolvers.items():
        if resolver.modality in ("", modality):
            out += [s for s in resolver.defaults() if s not in out]
    for key, src in sources.items():
        if src.default and key not in out and src.modality == modality:
            out.append(key)
    if not out or (not is_offline(options) and hub_reachable()):
        return out
    local = SourceOptions(offline=True, trust_remote_code=bool(options and options.trust_remote_code))
    cached = [s for s in out if _available_offline(s, local)]
    shipped = [key for key, src in sources.items() if src.offline_zoo and src.modality == modality]
    if cached or not shipped:
        return cached or out
    note(f"the model hub cannot be reached and no {modality} model of the default zoo is cached: "
         f"using the models that ship offline ({', '.join(shipped)})")
    return shipped


def _available_offline(spec: str, options: SourceOptions) -> bool:
    try:
        return bool(resolve_source(spec, options).available()[0])
    except Exception:  # a zoo entry that cannot even resolve is not usable
        return False


def display_source(name: str) -> str:
    """A source as a reader wants it: a local path in its name shortened to the file or folder name.

    ``timm:resnet18@/home/me/w/r18.safetensors?size=32`` -> ``timm:resnet18@r18.safetensors?size=32``;
    ``hf:/models/my-bert`` -> ``hf:my-bert``. The leaderboards of a search and a model's result.json
    show this; the full name stays in the study's attributes and transferability.csv.
    """
    prefix, colon, rest = name.partition(":")
    if not colon:
        return name
    head, at, path = rest.rpartition("@") if "@" in rest else ("", "", rest)
    path, q, query = path.partition("?")
    if not path.startswith(("/", "~", ".")) and "\\" not in path:
        return name
    return f"{prefix}:{head}{at}{Path(path).name or path}{q}{query}"
