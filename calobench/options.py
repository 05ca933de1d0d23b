"""Typed configuration: a model's ``Options``, the runner's ``RunSettings``, and ``--set`` parsing.

A model declares its options as a pydantic model (``class Options(calobench.Options)``,
every field typed and defaulted); its presets are dicts of overrides. The runner's own
settings (generation batch, timing, fast paths, checkpoint and log intervals, how many
test showers are scored) are a separate validated group. A preset or ``--set`` may name keys
of either group; the effective configuration is the two groups, validated, with every default
filled in, before any data are prepared.

``--set KEY=VALUE`` parsing: VALUE is read as JSON when it parses (``5``, ``1e-3``, ``true``,
``null``, ``[1, 100]``, ``"text"``), otherwise it is the plain string.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal

import pydantic
from pydantic import ConfigDict, NonNegativeFloat, PositiveFloat, PositiveInt

from .errors import CalobenchError, unknown


class Options(pydantic.BaseModel):
    """Base of every model's options: unknown keys are refused, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class RunSettings(Options):
    """The runner's settings; any preset or ``--set`` may give them."""

    generation_batch: PositiveInt = 1000  # showers per call of sample/refine when the runner generates
    timing_batches: list[PositiveInt] = [1, 100, 10_000]  # batch sizes whose showers/s go in the record
    timing_budget_s: PositiveFloat = 20.0  # a batch size is timed only if one call is projected to fit this
    generation_amp: Literal["bf16"] | None = None  # bfloat16 autocast during generation
    generation_compile: bool = False  # torch.compile the inference networks (in place)
    channels_last: bool = False  # channels-last memory format for the inference networks' convolutions
    cudnn_benchmark: bool = False  # cuDNN autotuning (CUDA only)
    checkpoint_every_s: NonNegativeFloat = 120.0  # 0: after every step
    log_every: PositiveInt = 10
    n_eval: PositiveInt | None = None  # score only the first N test showers (None: the whole split)
    stop_after_steps: PositiveInt | None = None  # end this session after N steps in all, checkpointed (--resume)


# Runner settings that change how fast or how verbosely a run goes, never its result: they are
# left out of the config hash (the record's identity) and may differ on --resume.
SPEED_ONLY = ("timing_batches", "timing_budget_s", "generation_compile", "channels_last", "cudnn_benchmark",
              "checkpoint_every_s", "log_every", "stop_after_steps")


def parse_set(pairs) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (JSON when it parses, else the string)."""
    out = {}
    for item in pairs:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise CalobenchError(f"--set expects KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _one_line(exc: pydantic.ValidationError, owner: str) -> str:
    parts = []
    for e in exc.errors():
        msg = e["msg"].rstrip(".").removeprefix("Value error, ")
        if not e["loc"]:  # a check across options
            parts.append(f"{owner}: {msg}")
            continue
        where = ".".join(str(x) for x in e["loc"])
        got = e.get("input")
        got = "" if isinstance(got, dict) else f" (got {json.dumps(got, default=str)})"
        parts.append(f"option '{where}' of {owner}: {msg}{got}")
    return "; ".join(parts)


def resolve(options_cls, owner: str, values: dict) -> tuple[Options, RunSettings]:
    """Split ``values`` between the model's options and the runner's settings, validate both;
    one-line CalobenchError on an unknown key or a bad value."""
    model_keys, run_keys = set(options_cls.model_fields), set(RunSettings.model_fields)
    both = model_keys & run_keys
    if both:
        raise CalobenchError(f"{owner} declares option(s) {sorted(both)} that are runner settings; rename them")
    for k in values:
        if k not in model_keys and k not in run_keys:
            hint = str(unknown("option", k, model_keys | run_keys)).split(" (", 1)[1]
            raise CalobenchError(f"unknown option '{k}' for {owner} ({hint}")
    try:
        opts = options_cls(**{k: v for k, v in values.items() if k in model_keys})
    except pydantic.ValidationError as exc:
        raise CalobenchError(_one_line(exc, owner)) from None
    try:
        settings = RunSettings(**{k: v for k, v in values.items() if k in run_keys})
    except pydantic.ValidationError as exc:
        raise CalobenchError(_one_line(exc, "the runner")) from None
    return opts, settings


def config_hash(model: str, options: dict, settings: dict) -> str:
    """12 hex digits identifying what a run computes: the model, its effective options and the
    runner settings that affect results (``SPEED_ONLY`` ones are left out)."""
    blob = json.dumps({"model": model, "options": options,
                       "runner": {k: v for k, v in settings.items() if k not in SPEED_ONLY}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
