"""Physics acceptance checks: a dataset's claims that any generator on its board is judged by.

A plugin registers :class:`Check` subclasses (``register_checks``) for the datasets they apply
to (by name). After scoring, the runner evaluates every applicable check on the generated and
real test showers (and the extra splits, e.g. a hold-out energy) and writes the entries to the
record's ``physics`` section: ``{"name", "value", "target", "pass", ...}``. The board shows
"k/n" per row. Checks are not metrics: they are pass/fail statements of a paper's claims
(a response within 3 %, a resolution within 30 %), not a ranking.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CheckResult:
    """One entry: ``value`` (the measured quantity, e.g. gen/real - 1), ``target`` (in words,
    e.g. "|gen/real - 1| <= 0.03"), ``passed``; ``details`` (real and generated values...)."""

    name: str
    value: float | None
    target: str
    passed: bool
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        v = None if self.value is None or not np.isfinite(self.value) else float(self.value)
        return {"name": self.name, "value": v, "target": self.target, "pass": bool(self.passed and v is not None),
                **self.details}


@dataclass
class CheckContext:
    dataset: object  # DatasetInfo
    real: object  # ShowerData (test split)
    generated: object  # ShowerData
    extra: dict = field(default_factory=dict)  # split -> (real, generated), e.g. an interpolation hold-out
    metrics: dict = field(default_factory=dict)  # this run's MetricResults by name (artifacts included)


class Check:
    """Subclass, set ``name``, ``datasets`` (names) and ``description``; implement ``evaluate``,
    which returns a list of :class:`CheckResult` (one check may state a claim per energy).
    ``needs``: metric names whose results ``evaluate`` reads from ``ctx.metrics`` (e.g. a trained
    regressor's predictions); when one did not run, the check is one failed entry saying so."""

    name: str = ""
    description: str = ""
    datasets: tuple = ()
    tasks: tuple = ("generate", "refine")
    needs: tuple = ()

    def applies_to(self, dataset, task: str = "generate") -> str | None:
        if self.datasets and dataset.name not in self.datasets:
            return f"only for {', '.join(self.datasets)}"
        if task not in self.tasks:
            return f"only for {', '.join(self.tasks)} tasks"
        return None

    def evaluate(self, ctx: CheckContext) -> list:
        raise NotImplementedError


def relative(name: str, real: float, generated: float, tolerance: float, **details) -> CheckResult:
    """generated / real - 1 within +-tolerance."""
    value = generated / real - 1 if real else float("nan")
    return CheckResult(name, value, f"|gen/real - 1| <= {tolerance:g}", bool(abs(value) <= tolerance),
                       {"real": float(real), "generated": float(generated), **details})


def at_most(name: str, value: float, limit: float, **details) -> CheckResult:
    return CheckResult(name, value, f"<= {limit:g}", bool(value <= limit), details)


def absolute(name: str, real: float, generated: float, tolerance: float, unit: str = "", **details) -> CheckResult:
    """|generated - real| within tolerance (in the quantity's unit)."""
    value = generated - real
    return CheckResult(name, value, f"|gen - real| <= {tolerance:g}{(' ' + unit) if unit else ''}",
                       bool(abs(value) <= tolerance), {"real": float(real), "generated": float(generated), **details})


def run_checks(checks, ctx: CheckContext, step=None, warn=None, task: str = "generate") -> list:
    """Every applicable check's entries as dicts; a check that raises gives one failed entry
    with the reason (``step(what)`` turns its exception into a CalobenchError)."""
    from .errors import CalobenchError

    out = []
    for check in checks:
        if check.applies_to(ctx.dataset, task) is not None:
            continue
        missing = [m for m in check.needs if m not in ctx.metrics]
        if missing:
            out.append({"name": check.name, "value": None, "target": "", "pass": False,
                        "note": f"needs metric(s) {', '.join(missing)}, which did not run"})
            continue
        try:
            if step is None:
                results = check.evaluate(ctx)
            else:
                with step(f"check '{check.name}'"):
                    results = check.evaluate(ctx)
        except CalobenchError as exc:
            if warn:
                warn(str(exc))
            out.append({"name": check.name, "value": None, "target": "", "pass": False, "note": str(exc)})
            continue
        out.extend(r.to_dict() for r in results)
    return out


def summary(physics: list) -> str:
    """"k/n" passing entries."""
    return f"{sum(1 for e in physics if e.get('pass'))}/{len(physics)}"
