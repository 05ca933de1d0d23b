"""The hooks a calobench plugin may implement.

Every hook receives a ``register`` callback (as in simonw/llm): a plugin calls it once
per object it contributes. Built-in plugins use exactly these hooks.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("calobench")


@hookspec
def register_simulators(register):
    """Register parametric simulators: ``register(simulator)`` with a :class:`calobench.Simulator`."""


@hookspec
def register_datasets(register):
    """Register dataset entries: ``register(name, entry)`` with a dict in the datasets.yaml schema."""


@hookspec
def register_layouts(register):
    """Register HDF5 file layouts: ``register(name, reader)``; ``reader(path) -> ShowerData`` (lazily read where it can)."""


@hookspec
def register_models(register):
    """Register model classes: ``register(ModelSubclass)``."""


@hookspec
def register_metrics(register):
    """Register metric classes: ``register(MetricSubclass)``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``calobench`` group: ``cli.add_command(...)``."""


@hookspec
def register_checks(register):
    """Register physics acceptance checks: ``register(CheckSubclass)`` (see :class:`calobench.Check`)."""


@hookspec
def register_plots(register):
    """Register plot classes: ``register(PlotSubclass)`` (see :class:`calobench.Plot`)."""


@hookspec
def register_references(register):
    """Register published results shown beside a board's rows: ``register(calobench.Reference(...))``."""
