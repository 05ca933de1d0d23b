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
    plots: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)  # "<dataset>/<model>" -> Reference
    owner: dict = field(default_factory=dict)  # (kind, name) -> plugin name
    failed: dict = field(default_factory=dict)  # plugin name -> why it was not loaded (whole)
    warnings: list = field(default_factory=list)  # contributions skipped, each naming its plugin

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


HOOK_KINDS = {  # registering hook -> kind of object
    "register_simulators": "simulator",
    "register_datasets": "dataset",
    "register_layouts": "layout",
    "register_models": "model",
    "register_metrics": "metric",
    "register_plots": "plot",
    "register_checks": "check",
    "register_references": "reference",
}


class _PluginError(Exception):
    """A plugin broke the registration contract: the whole plugin is unloaded."""


def _check_item(kind: str, args: tuple):
    """(name, value) of one registration, or _PluginError naming what is wrong."""
    from .checks import Check
    from .metric import Metric
    from .model import Model
    from .plots import Plot
    from .simulator import Simulator

    if kind in ("simulator", "model", "metric", "plot", "check"):
        if len(args) != 1:
            raise _PluginError(f"register() of a {kind} takes one argument, got {len(args)}")
        obj = args[0]
        base = {"simulator": Simulator, "model": Model, "metric": Metric, "plot": Plot, "check": Check}[kind]
        ok = isinstance(obj, base) if kind == "simulator" else isinstance(obj, type) and issubclass(obj, base)
        if not ok:
            want = f"an instance of calobench.{base.__name__}" if kind == "simulator" else \
                f"a subclass of calobench.{base.__name__}"
            raise _PluginError(f"registered {obj!r} as a {kind}: expected {want}")
        name = getattr(obj, "name", "")
        if not isinstance(name, str) or not name.strip():
            raise _PluginError(f"{kind} {obj!r} has no name")
        return name, obj
    if kind == "reference":
        from .reference import Reference

        if len(args) != 1 or not isinstance(args[0], Reference):
            raise _PluginError("register() of a reference takes one calobench.Reference")
        return f"{args[0].dataset}/{args[0].model}", args[0]
    if kind == "layout":
        if len(args) != 2 or not isinstance(args[0], str) or not callable(args[1]):
            raise _PluginError("register() of a layout takes (name, reader callable)")
        return args
    if len(args) == 2 and isinstance(args[0], str):  # dataset: (name, entry)
        return args
    raise _PluginError("register() of a dataset takes (name, entry dict), or one path to a datasets YAML file")


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
        spec_names = {n for n in dir(hookspecs) if not n.startswith("_") and callable(getattr(hookspecs, n))
                      and hasattr(getattr(hookspecs, n), f"{GROUP}_spec")}
        impls = [n for n in dir(obj) if hasattr(getattr(obj, n, None), f"{GROUP}_impl")]
        bad = [n for n in impls if n not in spec_names]
        if bad:
            import difflib

            close = difflib.get_close_matches(bad[0], spec_names, n=1)
            self.failed[name] = f"unknown hook '{bad[0]}'" + (f" (did you mean {close[0]}?)" if close else "")
            return
        try:
            self.pm.register(obj, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self.failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            return
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

    def _contributions(self, name: str, plugin) -> list:
        """[(kind, key, value)] that ``plugin`` registers, or _PluginError."""
        from .catalog import read_entries, validate_entry

        staged = []
        for hook, kind in HOOK_KINDS.items():
            impl = getattr(plugin, hook, None)
            if impl is None or not hasattr(impl, f"{GROUP}_impl"):
                continue

            def register(*args, _kind=kind):
                if _kind == "dataset" and len(args) == 1:  # a datasets YAML file shipped by the plugin
                    for n, e in read_entries(args[0]).items():
                        staged.append((_kind, n, e))
                    return
                key, value = _check_item(_kind, args)
                if _kind == "dataset":
                    try:
                        value = validate_entry(key, value, f"plugin {name}")
                    except CalobenchError as exc:
                        self.registry_warnings.append(f"{exc}; entry skipped")
                        return
                staged.append((_kind, key, value))

            try:
                impl(register=register)
            except _PluginError as exc:
                raise _PluginError(f"{hook}: {exc}") from None
            except Exception as exc:
                raise _PluginError(f"{hook} failed: {type(exc).__name__}: {exc}") from None
        return staged

    def _collect(self) -> Registry:
        reg = Registry()
        self.registry_warnings = reg.warnings
        for name in list(self.infos):
            plugin = self.pm.get_plugin(name)
            try:
                staged = self._contributions(name, plugin)
            except _PluginError as exc:  # unloaded whole: none of its hooks runs later
                self.failed[name] = str(exc)
                self.pm.unregister(name=name)
                del self.infos[name]
                continue
            for kind, key, value in staged:
                if (kind, key) in reg.owner:
                    reg.warnings.append(f"plugin '{name}' registers {kind} '{key}', already registered by plugin "
                                        f"'{reg.owner[(kind, key)]}'; ignored")
                    continue
                if kind == "model":
                    problem = _check_presets(value)
                    if problem:
                        reg.warnings.append(f"plugin '{name}': model '{key}' skipped: {problem}")
                        continue
                getattr(reg, kind + "s")[key] = value
                reg.owner[(kind, key)] = name
        reg.failed = dict(self.failed)
        return reg

    def plugin_of(self, kind: str, name: str) -> PluginInfo:
        return self.infos[self.registry.owner[(kind, name)]]

    def versions(self) -> dict[str, str]:
        return {n: i.version for n, i in self.infos.items()}


def _check_presets(model_cls) -> str | None:
    for preset, values in model_cls.presets.items():
        for dataset in [None, *((values or {}).get("per_dataset") or {})]:
            try:
                model_cls.resolve(preset, dataset=dataset)
            except CalobenchError as exc:
                return f"preset '{preset}'{f' on {dataset}' if dataset else ''}: {exc}"
    return None


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
