"""The plugin manager: the only module that touches pluggy.

Plugins come from the ``autotransfer`` entry-point group (built-ins included: they
get no shortcut), then from ``--plugins-dir`` / ``AUTOTRANSFER_PLUGINS_DIR`` folders
of ``*.py`` files. ``AUTOTRANSFER_DISABLE_PLUGINS=a,b`` blocks plugins by name;
``AUTOTRANSFER_TRACE_PLUGINS=1`` prints every hook call on stderr.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .console import note, warn
from .errors import AutotransferError, PluginError
from .registry import Provider, Registry
from .source_contract import SpecResolver

GROUP = "autotransfer"
KINDS = ("sources", "source_resolvers", "strategies", "estimators")  # register_<kind> hooks
_SINGULAR = {"sources": "source", "source_resolvers": "source prefix", "strategies": "strategy",
             "estimators": "estimator"}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, for ``autotransfer plugins``."""

    name: str  # entry-point name or file stem
    distribution: str  # distribution name, or the file path for --plugins-dir plugins
    version: str  # distribution version, "" for files
    origin: str  # "entry point" or "plugins dir"
    hooks: list[str] = field(default_factory=list)  # hook names the plugin implements
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> item names
    error: str | None = None  # why it was skipped, if it was

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.distribution, self.version)


def _env_list(var: str) -> list[str]:
    return [p.strip() for p in os.environ.get(var, "").split(",") if p.strip()]


class PluginManager:
    """Loads plugins one at a time, isolates their failures, and builds the registries."""

    def __init__(
        self,
        plugins_dirs: Iterable[str | os.PathLike] = (),
        *,
        strict: bool = False,
        disabled: Iterable[str] = (),
        load_entry_points: bool = True,
    ):
        self.strict = strict
        self.disabled = set(disabled) | set(_env_list("AUTOTRANSFER_DISABLE_PLUGINS"))
        dirs = [Path(d) for d in plugins_dirs]
        dirs += [Path(d) for d in os.environ.get("AUTOTRANSFER_PLUGINS_DIR", "").split(os.pathsep) if d]
        self.plugins_dirs = dirs
        self.trace = os.environ.get("AUTOTRANSFER_TRACE_PLUGINS", "") not in ("", "0")
        self._pm = pluggy.PluginManager(GROUP)
        self._pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] = {}
        if load_entry_points:
            self._load_entry_points()
        for d in self.plugins_dirs:
            self._load_dir(d)

    # --- loading ---

    def _fail(self, name: str, what: str, exc: BaseException) -> None:
        msg = f"plugin {name!r} {what}: {type(exc).__name__}: {exc}".replace("\n", " ")
        if self.strict:
            raise PluginError(f"{msg} (--strict-plugins is set; fix or uninstall the plugin, or drop the flag)")
        warn(f"{msg}; skipped")

    def _register(self, obj: Any, info: PluginInfo) -> None:
        try:
            self._pm.register(obj, name=info.name)
        except Exception as exc:  # e.g. a hookimpl whose name is no hook
            info.error = f"{type(exc).__name__}: {exc}"
            self.infos[info.name] = info
            self._fail(info.name, "could not be registered", exc)
            return
        info.hooks = sorted(
            {c.name for c in self._pm.get_hookcallers(obj) or []}
        )
        self.infos[info.name] = info

    def _load_entry_points(self) -> None:
        eps = importlib.metadata.entry_points(group=GROUP)
        seen: set[str] = set()
        for ep in sorted(eps, key=lambda e: (e.dist.name != "autotransfer" if e.dist else True, e.name)):
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else ""
            info = PluginInfo(ep.name, dist, version, "entry point")
            if ep.name in self.disabled:
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                info.error = f"{type(exc).__name__}: {exc}"
                self.infos[ep.name] = info
                self._fail(ep.name, "failed to import", exc)
                continue
            self._register(obj, info)

    def _load_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            raise PluginError(
                f"--plugins-dir {str(folder)!r} is not a folder; expected a folder of *.py plugin files"
            )
        for path in sorted(folder.glob("*.py")):
            name = path.stem
            if name in self.disabled or name.startswith("_"):
                continue
            info = PluginInfo(name, str(path.resolve()), "", "plugins dir")
            mod_name = f"autotransfer_dirplugin_{name}"
            try:
                spec = importlib.util.spec_from_file_location(mod_name, path)
                assert spec and spec.loader
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(mod_name, None)
                info.error = f"{type(exc).__name__}: {exc}"
                self.infos[name] = info
                self._fail(name, f"({path}) failed to import", exc)
                continue
            self._register(module, info)

    # --- calling hooks ---

    def _impls(self, hook_name: str) -> list[Any]:
        """Hook implementations in pluggy's call order (last registered first)."""
        return list(reversed(getattr(self._pm.hook, hook_name).get_hookimpls()))

    def _call(self, impl: Any, hook_name: str, **kwargs: Any) -> Any:
        if self.trace:
            note(f"trace: {hook_name}({', '.join(kwargs)}) -> plugin {impl.plugin_name!r}")
        start = time.perf_counter()
        out = impl.function(**{k: kwargs[k] for k in impl.argnames})
        if self.trace:
            note(f"trace: {hook_name} <- plugin {impl.plugin_name!r} ({time.perf_counter() - start:.3f}s)")
        return out

    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (one of ``KINDS``), built from its ``register_<kind>`` hook on first use."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind in self._registries:
            return self._registries[kind]
        reg: Registry = Registry(_SINGULAR[kind])
        self._registries[kind] = reg
        # registration order (built-ins first), so on a name clash the later plugin is the renamed one
        for impl in getattr(self._pm.hook, f"register_{kind}").get_hookimpls():
            info = self.infos[impl.plugin_name]
            added: list[str] = []

            def register(*args: Any, _info: PluginInfo = info, _added: list = added) -> None:
                if len(args) != 1:
                    raise TypeError(f"register() takes one {_SINGULAR[kind]}, got {len(args)} arguments")
                _check_item(kind, args[0])
                _added.append(reg.add(args[0], _info.provider))

            try:
                self._call(impl, f"register_{kind}", register=register)
            except PluginError:
                raise
            except Exception as exc:
                info.error = f"{type(exc).__name__}: {exc}"
                self._fail(info.name, f"raised in register_{kind}", exc)
            info.registered.setdefault(kind, []).extend(added)
        return reg

    def source_resolvers(self) -> Registry:
        """Spec-prefix resolvers (``timm``, ``hf`` ...) registered through ``register_source_resolvers``."""
        return self.registry("source_resolvers")

    def load_dataset(self, path: str, options: Mapping[str, Any]) -> Any | None:
        """Ask ``load_dataset`` implementations in order; the first non-None answer wins."""
        for impl in self._impls("load_dataset"):
            try:
                result = self._call(impl, "load_dataset", path=path, options=options)
            except AutotransferError:
                raise
            except Exception as exc:
                self._fail(impl.plugin_name, "raised in load_dataset", exc)
                continue
            if result is not None:
                return result
        return None

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a reporter hook on every plugin; a failing reporter is a warning, never fatal."""
        for impl in self._impls(hook_name):
            try:
                self._call(impl, hook_name, **kwargs)
            except Exception as exc:
                warn(f"plugin {impl.plugin_name!r} raised in {hook_name}: {type(exc).__name__}: {exc}")

    def load_all(self) -> None:
        """Build every registry (so failures show up, e.g. for ``autotransfer plugins``)."""
        for kind in KINDS:
            self.registry(kind)


def _check_item(kind: str, item: Any) -> None:
    """Resolvers and sources have a hook each: an item registered through the other one is a clear error."""
    if kind == "source_resolvers" and not isinstance(item, SpecResolver):
        raise TypeError(f"register_source_resolvers: register() takes an autotransfer.sources.SpecResolver, "
                        f"got {item!r}; register sources and aliases in register_sources")
    if kind == "sources" and isinstance(item, SpecResolver):
        raise TypeError(f"register_sources got the spec resolver {item.name!r}; register it in "
                        "register_source_resolvers(register) instead")


_manager: PluginManager | None = None
_config: dict[str, Any] = {}


def configure(plugins_dirs: Iterable[str] = (), strict: bool = False, disabled: Iterable[str] = ()) -> None:
    """Set options for the process-wide manager (the CLI's global flags); resets it."""
    global _manager
    _config.clear()
    _config.update(plugins_dirs=list(plugins_dirs), strict=strict, disabled=list(disabled))
    _manager = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager(
            _config.get("plugins_dirs", ()),
            strict=_config.get("strict", False),
            disabled=_config.get("disabled", ()),
        )
    return _manager


def get_registry(kind: str) -> Registry:
    """Shortcut for ``get_plugin_manager().registry(kind)``."""
    return get_plugin_manager().registry(kind)


Callback = Callable[..., None]
