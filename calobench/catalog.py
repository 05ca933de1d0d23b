"""Datasets: the declarative entries of datasets.yaml (and plugins, and the user's own file).

An entry is either simulated (``simulator`` + ``params`` + per-split ``n``/``seed``) or read
from files (``layout`` + per-split ``files`` with ``url``+``sha256`` or ``path``). Splits
are prepared once into the cache and then read lazily.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import yaml

from .data import ConcatArray, H5Writer, ShowerData, cache_dir, read_hdf5
from .errors import CalobenchError, plugin_step, unknown
from .io import remove_stale_temps

USER_FILE_ENV = "CALOBENCH_DATASETS"
BUILTIN_FILE = Path(__file__).with_name("datasets.yaml")

ENTRY_KEYS = {"description", "version", "counterpart", "simulator", "params", "layout", "splits"}
SIM_SPLIT_KEYS = {"n", "seed", "params"}
FILE_SPLIT_KEYS = {"files", "n"}
FILE_KEYS = {"url", "sha256", "path"}
REQUIRED_SPLITS = ("train", "test")


def _is_sha256(x) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdefABCDEF" for c in x)


def _fail(where: str, msg: str):
    raise CalobenchError(f"{where}: {msg}")


def validate_entry(name: str, entry, where: str) -> dict:
    """Check one entry against the schema; return it with defaults filled in."""
    w = f"{where}: dataset '{name}'"
    if not isinstance(entry, dict):
        _fail(w, "must be a mapping")
    extra = set(entry) - ENTRY_KEYS
    if extra:
        _fail(w, f"unknown key(s) {sorted(extra)} (allowed: {sorted(ENTRY_KEYS)})")
    sim, layout = entry.get("simulator"), entry.get("layout")
    if (sim is None) == (layout is None):
        _fail(w, "needs exactly one of 'simulator' or 'layout'")
    splits = entry.get("splits")
    if not isinstance(splits, dict) or not splits:
        _fail(w, "needs a non-empty 'splits' mapping")
    for req in REQUIRED_SPLITS:
        if req not in splits:
            _fail(w, f"needs a '{req}' split")
    if not isinstance(entry.get("params", {}), dict):
        _fail(w, "'params' must be a mapping")
    version = entry.get("version", 1)
    if not isinstance(version, int) or version < 1:
        _fail(w, f"'version' must be a positive integer, got {version!r}")
    for sname, s in splits.items():
        ws = f"{w} split '{sname}'"
        if not isinstance(s, dict):
            _fail(ws, "must be a mapping")
        allowed = SIM_SPLIT_KEYS if sim else FILE_SPLIT_KEYS
        extra = set(s) - allowed
        if extra:
            _fail(ws, f"unknown key(s) {sorted(extra)} (allowed: {sorted(allowed)})")
        if sim:
            n, seed = s.get("n"), s.get("seed")
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                _fail(ws, f"'n' must be a positive integer, got {n!r}")
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                _fail(ws, f"'seed' must be a non-negative integer, got {seed!r}")
            if not isinstance(s.get("params", {}), dict):
                _fail(ws, "'params' must be a mapping")
        else:
            files = s.get("files")
            if not isinstance(files, list) or not files:
                _fail(ws, "needs a non-empty 'files' list")
            for f in files:
                if not isinstance(f, dict) or set(f) - FILE_KEYS or not ({"url", "path"} & set(f)):
                    _fail(ws, f"each file needs 'url' (with 'sha256') or 'path', got {f!r}")
                if "url" in f and not f.get("sha256"):
                    _fail(ws, f"file {f['url']} needs a 'sha256'")
                if "sha256" in f and not _is_sha256(f["sha256"]):
                    _fail(ws, f"'sha256' must be a string of 64 hex digits (quote it), got {f['sha256']!r}")
    return {"params": {}, "version": 1, "description": "", **entry}


def read_entries(path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise CalobenchError(f"{path}: is a folder, not a datasets YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalobenchError(f"{path}: no such datasets file") from None
    except UnicodeDecodeError as exc:
        raise CalobenchError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise CalobenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CalobenchError(f"{path}: not valid YAML{where}: {what}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CalobenchError(f"{path}: must map dataset names to entries")
    return {name: validate_entry(name, e, str(path)) for name, e in raw.items()}


class Dataset:
    """One catalog entry, bound to the plugins that can produce or read it."""

    def __init__(self, name: str, entry: dict, registry, source: str):
        self.name, self.entry, self.registry, self.source = name, entry, registry, source

    # -- description ---------------------------------------------------------
    @property
    def simulator(self):
        name = self.entry.get("simulator")
        if name is None:
            return None
        if name not in self.registry.simulators:
            raise CalobenchError(
                f"dataset '{self.name}' needs simulator '{name}', which no installed plugin provides"
            )
        return self.registry.simulators[name]

    @property
    def splits(self) -> list:
        return list(self.entry["splits"])

    @property
    def counterpart(self):
        return self.entry.get("counterpart")

    def split_params(self, split: str) -> dict:
        return {**self.entry["params"], **self.entry["splits"][split].get("params", {})}

    @property
    def geometry(self):
        if self.simulator is not None:
            return self.simulator.geometry(**self.entry["params"])
        return self.load("test").geometry

    def condition_ranges(self) -> dict:
        if self.simulator is not None:
            return {k: tuple(map(float, v)) for k, v in self.simulator.condition_ranges(**self.entry["params"]).items()}
        data = self.load("train")
        return {k: (float(v.min()), float(v.max())) for k, v in data.conditions.items()}

    @property
    def key(self) -> str:
        """Cache key: changes whenever the entry or the simulator's version changes."""
        sim = self.simulator
        blob = json.dumps([self.entry, sim.version if sim else None], sort_keys=True, default=str)
        return f"{self.name}-v{self.entry['version']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def _check_split(self, split):
        if split not in self.entry["splits"]:
            raise unknown(f"split of dataset '{self.name}'", split, self.entry["splits"])

    # -- preparation ---------------------------------------------------------
    def split_path(self, split: str) -> Path:
        return cache_dir() / self.key / f"{split}.h5"

    def is_prepared(self, split: str) -> bool:
        return self.simulator is None or self.split_path(split).exists()

    def prepare(self, splits=None, progress: bool = False, error_log=None) -> None:
        """Simulate (or fetch) the splits not yet in the cache; an exception inside the simulator is
        one CalobenchError line naming it (its traceback appended to ``error_log``)."""
        for split in splits or self.splits:
            self._check_split(split)
            if self.simulator is not None and not self.split_path(split).exists():
                remove_stale_temps(self.split_path(split).parent)
                owner = self.registry.owner.get(("simulator", self.simulator.name), "?")
                with plugin_step(f"simulator '{self.simulator.name}' (plugin {owner}) preparing {self.name}/{split}",
                                 error_log):
                    self._simulate(split, progress)
            elif self.simulator is None:
                self._files(split)

    def simulate_blocks(self, n: int, seed: int, params: dict):
        """Yield ``n`` showers of the simulator in blocks of ``block_size``, each from its own
        child seed of ``seed``: the scheme every simulated split is made with."""
        sim = self.simulator
        shape = tuple(sim.geometry(**params).shape)
        blocks = [min(sim.block_size, n - i) for i in range(0, n, sim.block_size)]
        for m, ss in zip(blocks, np.random.SeedSequence(seed).spawn(len(blocks))):
            block = sim.simulate(m, np.random.default_rng(ss), **params)
            if len(block) != m or tuple(block.geometry.shape) != shape:
                raise CalobenchError(f"simulator '{sim.name}' returned a block of the wrong size or shape")
            yield block

    def _simulate(self, split: str, progress: bool):
        sim, spec = self.simulator, self.entry["splits"][split]
        params = self.split_params(split)
        n, geometry = spec["n"], sim.geometry(**params)
        names = list(sim.condition_ranges(**params))
        attrs = {"dataset": self.name, "split": split, "simulator": sim.name,
                 "simulator_version": sim.version, "seed": spec["seed"], "params": params}
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"simulating {self.name}/{split}", unit="shower", disable=not progress)
        with H5Writer(self.split_path(split), n, geometry, names, attrs) as w:
            for block in self.simulate_blocks(n, spec["seed"], params):
                w.append(block)
                bar.update(len(block))
        bar.close()

    def _files(self, split: str) -> list:
        out = []
        for f in self.entry["splits"][split]["files"]:
            out.append(fetch(f, cache_dir() / "downloads" / self.name))
        return out

    # -- reading -------------------------------------------------------------
    def load(self, split: str, lazy: bool = True, progress: bool = False) -> ShowerData:
        self._check_split(split)
        self.prepare([split], progress=progress)
        if self.simulator is not None:
            return read_hdf5(self.split_path(split), lazy=lazy)
        layout = self.entry["layout"]
        reader = self.registry.get("layout", layout)
        parts = [reader(p) for p in self._files(split)]
        data = parts[0] if len(parts) == 1 else concat(parts)
        n = self.entry["splits"][split].get("n")
        return data.head(n) if n else data

    def info(self) -> dict:
        d = {"name": self.name, "description": self.entry["description"], "defined_in": self.source,
             "kind": "simulated" if self.entry.get("simulator") else f"files ({self.entry['layout']})",
             "splits": {s: self.entry["splits"][s].get("n") for s in self.splits}}
        try:
            g = self.geometry
            d["shape"] = list(g.shape)
            d["energy_unit"] = g.energy_unit
            d["conditions"] = self.condition_ranges()
            d["cache"] = str(cache_dir() / self.key)
            d["prepared"] = {s: self.is_prepared(s) for s in self.splits}
        except CalobenchError as exc:
            d["unavailable"] = str(exc)
        return d


def concat(parts) -> ShowerData:
    """One ShowerData of several; lazily read parts stay on disk."""
    if all(isinstance(p.showers, np.ndarray) for p in parts):
        showers = np.concatenate([p.showers for p in parts])
    else:
        showers = ConcatArray([p.showers for p in parts])
    conds = {k: np.concatenate([p.conditions[k] for p in parts]) for k in parts[0].conditions}
    return ShowerData(showers, conds, parts[0].geometry)


def fetch(spec: dict, folder: Path) -> Path:
    """A local path (checked against ``sha256`` if given) or a URL downloaded once by pooch."""
    import pooch

    if "path" in spec:
        path = Path(os.path.expanduser(spec["path"]))
        if not path.exists():
            raise CalobenchError(f"{path}: no such file")
        if spec.get("sha256"):
            got = pooch.file_hash(str(path), alg="sha256")
            if got != spec["sha256"].lower():
                raise CalobenchError(f"{path}: checksum mismatch (expected sha256 {spec['sha256']}, got {got})")
        return path
    fname = spec["url"].rstrip("/").split("/")[-1]
    try:
        return Path(pooch.retrieve(spec["url"], known_hash=f"sha256:{spec['sha256']}", fname=fname,
                                   path=folder, progressbar=True))
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        raise CalobenchError(f"{fname}: checksum mismatch ({msg})") from None
    except Exception as exc:
        raise CalobenchError(f"{fname}: download failed: {type(exc).__name__}: {exc}") from None


class Catalog:
    """All datasets: the packaged datasets.yaml, plugin entries, then the user's file(s)."""

    def __init__(self, registry, extra_files=()):
        self.registry = registry
        self.entries: dict[str, tuple[dict, str]] = {}
        for name, e in read_entries(BUILTIN_FILE).items():
            self.entries[name] = (e, "datasets.yaml")
        for name, e in registry.datasets.items():  # validated when the plugin registered them
            self.entries[name] = (e, f"plugin {registry.owner[('dataset', name)]}")
        user = [p for p in os.environ.get(USER_FILE_ENV, "").split(os.pathsep) if p]
        for path in [*user, *extra_files]:
            for name, e in read_entries(path).items():
                self.entries[name] = (e, str(path))

    def names(self) -> list:
        return sorted(self.entries)

    def get(self, name: str) -> Dataset:
        if name not in self.entries:
            raise unknown("dataset", name, self.entries)
        entry, source = self.entries[name]
        return Dataset(name, entry, self.registry, source)
