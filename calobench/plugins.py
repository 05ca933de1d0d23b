"""Plugin discovery: a pluggy manager fed by the ``calobench`` entry-point group.

Built-in plugins are registered the same way as external ones (as pytest does).
``CALOBENCH_PLUGINS=a,b`` restricts which external plugins load (``none`` for none).
A plugin that fails to import is reported by name and the rest still work.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from . import hookspecs
from .errors import CalobenchError, unknown

GROUP = "calobench"
BUILTINS = ("calobench.builtin",)
ENV_RESTRICT = "CALOBENCH_PLUGINS"

hookimpl = pluggy.HookimplMarker(GROUP)


@dataclass
class PluginInfo:
    name: str
    version: str
    hooks: list[str]
    builtin: bool
    module: str


@dataclass
class Registry:
    """Everything the installed plugins contributed, each item tagged with its plugin."""

    simulators: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    layouts: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    owner: dict = field(default_factory=dict)  # (kind, name) -> plugin name
    failed: dict = field(default_factory=dict)  # plugin name -> error text

    def get(self, kind: str, name: str):
        table = getattr(self, kind + "s")
        if name not in table:
            raise unknown(kind, name, table)
        return table[name]


def _version_of(module_name: str, dist_name: str | None) -> str:
    if dist_name:
        try:
            return metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            pass
    mod = sys.modules.get(module_name.split(".")[0])
    return getattr(mod, "__version__", "unknown")


class Plugins:
    """The plugin manager plus the registry built from its hooks."""

    def __init__(self, extra=(), load_entrypoints: bool = True):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failed: dict[str, str] = {}
        for modname in BUILTINS:
            self._add(importlib.import_module(modname), "calobench", builtin=True, dist=GROUP)
        if load_entrypoints:
            self._load_entrypoints()
        for obj in extra:
            self._add(obj, getattr(obj, "__name__", type(obj).__name__), builtin=False, dist=None)
        self.registry = self._collect()

    def _add(self, obj, name, builtin, dist):
        self.pm.register(obj, name=name)
        modname = getattr(obj, "__name__", type(obj).__module__)
        hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
        self.infos[name] = PluginInfo(name, _version_of(modname, dist), hooks, builtin, modname)

    def _load_entrypoints(self):
        allowed = os.environ.get(ENV_RESTRICT)
        allow = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}
        for ep in metadata.entry_points(group=GROUP):
            if allow is not None and ep.name not in allow:
                continue
            if ep.name in self.infos:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.failed[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            self._add(obj, ep.name, builtin=False, dist=ep.dist.name if ep.dist else None)

    def _collect(self) -> Registry:
        reg = Registry(failed=dict(self.failed))
        kinds = {
            "register_simulators": ("simulator", lambda s: (s.name, s)),
            "register_datasets": ("dataset", lambda n, e: (n, e)),
            "register_layouts": ("layout", lambda n, r: (n, r)),
            "register_models": ("model", lambda m: (m.name, m)),
            "register_metrics": ("metric", lambda m: (m.name, m)),
        }
        for hook, (kind, key_of) in kinds.items():
            table = getattr(reg, kind + "s")
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                owner = impl.plugin_name

                def register(*args, _owner=owner, _kind=kind, _key_of=key_of, _table=table):
                    key, value = _key_of(*args)
                    if key in _table:
                        prev = reg.owner[(_kind, key)]
                        raise CalobenchError(
                            f"{_kind} '{key}' registered twice (by plugins '{prev}' and '{_owner}')"
                        )
                    _table[key] = value
                    reg.owner[(_kind, key)] = _owner

                try:
                    impl.function(register=register)
                except CalobenchError:
                    raise
                except Exception as exc:  # report by name, keep the others
                    reg.failed[owner] = f"{hook} failed: {type(exc).__name__}: {exc}"
        return reg

    def plugin_of(self, kind: str, name: str) -> PluginInfo:
        return self.infos[self.registry.owner[(kind, name)]]

    def versions(self) -> dict[str, str]:
        return {n: i.version for n, i in self.infos.items()}


_current: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _current
    if _current is None:
        _current = Plugins()
    return _current


def set_plugins(plugins: Plugins | None) -> None:
    """Replace the process-wide plugin set (tests register in-process plugins this way)."""
    global _current
    _current = plugins
