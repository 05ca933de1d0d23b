"""Datasets: the declarative entries of datasets.yaml (and plugins, and the user's own file).

An entry is either simulated (``simulator`` + ``params`` + per-split ``n``/``seed``) or read
from files (``layout`` + per-split ``files`` with ``url`` + ``sha256`` or ``md5``, or ``path``;
the layout's reader gets the entry's ``params``). A file split may instead be carved from
another one: ``{subset_of: train, n: 10000}`` takes ``n`` rows of ``train`` chosen by a seeded
permutation (the parent's ``carve_seed``, default 0); the parent then holds the rest. Several
subsets of one parent take consecutive blocks of that permutation, in the order the entry
lists them. Splits are prepared once into the cache and then read lazily.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import yaml

from .data import ConcatArray, H5Writer, RowsArray, ShowerData, cache_dir, read_hdf5
from .errors import CalobenchError, plugin_step, unknown
from .io import remove_stale_temps

USER_FILE_ENV = "CALOBENCH_DATASETS"
BUILTIN_FILE = Path(__file__).with_name("datasets.yaml")

ENTRY_KEYS = {"description", "version", "counterpart", "simulator", "params", "layout", "splits", "conditions",
              "source"}
SIM_SPLIT_KEYS = {"n", "seed", "params"}
FILE_SPLIT_KEYS = {"files", "n", "subset_of", "carve_seed"}
FILE_KEYS = {"url", "sha256", "md5", "path", "size"}
REQUIRED_SPLITS = ("train", "test")


def _is_hex(x, n: int) -> bool:
    return isinstance(x, str) and len(x) == n and all(c in "0123456789abcdefABCDEF" for c in x)


def _is_sha256(x) -> bool:
    return _is_hex(x, 64)


def checksum(spec: dict):
    """(algorithm, hex digest) a file entry declares, or None."""
    for alg in ("sha256", "md5"):
        if spec.get(alg):
            return alg, spec[alg].lower()
    return None


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
    conds = entry.get("conditions", {})
    if not isinstance(conds, dict) or any(not isinstance(v, (list, tuple)) or len(v) != 2
                                          or not all(isinstance(x, (int, float)) for x in v) for v in conds.values()):
        _fail(w, "'conditions' maps each condition to its [low, high] range")
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
            if "subset_of" in s:
                parent = s["subset_of"]
                if set(s) - {"subset_of", "n"}:
                    _fail(ws, "a subset split takes only 'subset_of' and 'n'")
                if parent not in splits or parent == sname or "subset_of" in (splits[parent] or {}):
                    _fail(ws, f"'subset_of' must name another split with files, got {parent!r}")
                n = s.get("n")
                if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                    _fail(ws, f"a subset needs a positive integer 'n', got {n!r}")
                continue
            if "carve_seed" in s and (not isinstance(s["carve_seed"], int) or s["carve_seed"] < 0):
                _fail(ws, f"'carve_seed' must be a non-negative integer, got {s['carve_seed']!r}")
            files = s.get("files")
            if not isinstance(files, list) or not files:
                _fail(ws, "needs a non-empty 'files' list")
            for f in files:
                if not isinstance(f, dict) or set(f) - FILE_KEYS or not ({"url", "path"} & set(f)):
                    _fail(ws, f"each file needs 'url' (with 'sha256' or 'md5') or 'path', got {f!r}")
                if "url" in f and not (f.get("sha256") or f.get("md5")):
                    _fail(ws, f"file {f['url']} needs a 'sha256' or an 'md5'")
                if "sha256" in f and not _is_hex(f["sha256"], 64):
                    _fail(ws, f"'sha256' must be a string of 64 hex digits (quote it), got {f['sha256']!r}")
                if "md5" in f and not _is_hex(f["md5"], 32):
                    _fail(ws, f"'md5' must be a string of 32 hex digits (quote it), got {f['md5']!r}")
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
    def reader(self):
        return self.registry.get("layout", self.entry["layout"])

    @property
    def geometry(self):
        """The geometry; for file datasets the layout's own ``reader.geometry(**params)`` when it has one
        (no download), else read from the test split."""
        if self.simulator is not None:
            return self.simulator.geometry(**self.entry["params"])
        known = getattr(self.reader, "geometry", None)
        if callable(known):
            with plugin_step(f"layout '{self.entry['layout']}' describing {self.name}"):
                return known(**self.entry["params"])
        return self.load("test").geometry

    def condition_ranges(self) -> dict:
        if self.simulator is not None:
            return {k: tuple(map(float, v)) for k, v in self.simulator.condition_ranges(**self.entry["params"]).items()}
        if self.entry.get("conditions"):
            return {k: (float(v[0]), float(v[1])) for k, v in self.entry["conditions"].items()}
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
        if self.simulator is not None:
            return self.split_path(split).exists()
        return all(p.exists() for p, _ in self.file_paths(split))

    def _file_split(self, split: str) -> str:
        """The split whose files hold ``split`` (itself, or the parent of a subset)."""
        return self.entry["splits"][split].get("subset_of", split)

    def file_paths(self, split: str) -> list:
        """[(local path, file spec)] of a file split: the given path, or where its download goes."""
        out = []
        for f in self.entry["splits"][self._file_split(split)]["files"]:
            if "path" in f:
                out.append((Path(os.path.expanduser(f["path"])), f))
            else:
                out.append((self.download_dir() / f["url"].rstrip("/").split("/")[-1], f))
        return out

    def download_dir(self) -> Path:
        return cache_dir() / "downloads" / self.name

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

    def _files(self, split: str, progress: bool = True) -> list:
        return [fetch(f, self.download_dir(), progress=progress)
                for f in self.entry["splits"][self._file_split(split)]["files"]]

    def carved_rows(self, split: str, n_parent: int) -> np.ndarray:
        """Rows (increasing) of the parent file split that ``split`` holds: subsets take consecutive
        blocks of one permutation seeded by the parent's ``carve_seed``, the parent keeps the rest."""
        parent = self._file_split(split)
        spec = self.entry["splits"]
        subsets = [(name, s["n"]) for name, s in spec.items() if s.get("subset_of") == parent]
        if not subsets:
            return np.arange(n_parent)
        need = sum(n for _, n in subsets)
        if need >= n_parent:
            raise CalobenchError(f"dataset '{self.name}': subsets of '{parent}' need {need} showers, "
                                 f"'{parent}' has {n_parent}")
        perm = np.random.default_rng(int(spec[parent].get("carve_seed", 0))).permutation(n_parent)
        start = 0
        for name, n in subsets:
            if name == split:
                return np.sort(perm[start:start + n])
            start += n
        return np.sort(perm[start:])

    # -- reading -------------------------------------------------------------
    def load(self, split: str, lazy: bool = True, progress: bool = False) -> ShowerData:
        self._check_split(split)
        self.prepare([split], progress=progress)
        if self.simulator is not None:
            return read_hdf5(self.split_path(split), lazy=lazy)
        reader, params = self.reader, self.entry["params"]
        with plugin_step(f"layout '{self.entry['layout']}' reading {self.name}/{split}"):
            parts = [reader(p, **params) if params else reader(p) for p in self._files(split, progress)]
        data = parts[0] if len(parts) == 1 else concat(parts)
        rows = self.carved_rows(split, len(data))
        if len(rows) != len(data):
            data = subset(data, rows)
        n = self.entry["splits"][split].get("n") if "subset_of" not in self.entry["splits"][split] else None
        data = data.head(n) if n else data
        return data if lazy else data.load()

    def info(self) -> dict:
        """What the dataset is, without simulating or downloading anything."""
        d = {"name": self.name, "description": self.entry["description"], "defined_in": self.source,
             "kind": "simulated" if self.entry.get("simulator") else f"files ({self.entry['layout']})",
             "key": self.key}
        if self.entry.get("source"):
            d["source"] = self.entry["source"]
        splits = {}
        for s in self.splits:
            spec = self.entry["splits"][s]
            if self.simulator is not None or "files" in spec:
                splits[s] = {"n": spec.get("n")}
            else:
                splits[s] = {"n": spec["n"], "carved_from": spec["subset_of"],
                             "carve_seed": self.entry["splits"][spec["subset_of"]].get("carve_seed", 0)}
        d["splits"] = splits
        try:
            g = self.geometry
            d["shape"] = list(g.shape)
            d["energy_unit"] = g.energy_unit
            d["n_layers"] = g.n_layers
            if g.binning is not None:
                d["binning"] = _binning_groups(g.binning)
            d["threshold"] = g.threshold
            if self.simulator is not None or self.entry.get("conditions"):
                d["conditions"] = self.condition_ranges()
        except CalobenchError as exc:
            d["unavailable"] = str(exc)
        if self.simulator is not None:
            d["cache"] = str(cache_dir() / self.key)
            d["prepared"] = {s: self.is_prepared(s) for s in self.splits}
        else:
            files, fetch_list = [], []
            for s in self.splits:
                if "files" not in self.entry["splits"][s]:
                    continue
                for path, f in self.file_paths(s):
                    alg = checksum(f)
                    row = {"split": s, "file": path.name, "url": f.get("url"), "path": str(path),
                           "checksum": f"{alg[0]}:{alg[1]}" if alg else None, "present": path.exists()}
                    if f.get("size"):
                        row["size"] = f["size"]
                    files.append({k: v for k, v in row.items() if v is not None})
                    if not path.exists() and f.get("url"):
                        fetch_list.append(f["url"])
            d["files"] = files
            d["download_would_fetch"] = fetch_list
        return d


def concat(parts) -> ShowerData:
    """One ShowerData of several; lazily read parts stay on disk."""
    if all(isinstance(p.showers, np.ndarray) for p in parts):
        showers = np.concatenate([p.showers for p in parts])
    else:
        showers = ConcatArray([p.showers for p in parts])
    conds = {k: np.concatenate([p.conditions[k] for p in parts]) for k in parts[0].conditions}
    return ShowerData(showers, conds, parts[0].geometry)


def _binning_groups(binning) -> list:
    """Consecutive layers binned alike, as one entry each (a 45-layer binning reads in one line)."""
    groups = []
    for b in binning:
        last = groups[-1] if groups else None
        if last and last["r_edges"] == b["r_edges"] and last["n_alpha"] == b["n_alpha"]:
            last["ids"].append(b["layer"])
        else:
            groups.append({"ids": [b["layer"]], "r_edges": b["r_edges"], "n_alpha": b["n_alpha"],
                           "voxels_per_layer": b["n_voxels"]})
    for g in groups:
        ids = g.pop("ids")
        g["layers"] = str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"
    return [{"layers": g["layers"], **{k: v for k, v in g.items() if k != "layers"}} for g in groups]


def subset(data: ShowerData, rows) -> ShowerData:
    """The rows ``rows`` (increasing) of ``data``; lazily read showers stay on disk."""
    rows = np.asarray(rows, dtype=np.int64)
    showers = data.showers[rows] if isinstance(data.showers, np.ndarray) else RowsArray(data.showers, rows)
    return ShowerData(showers, {k: v[rows] for k, v in data.conditions.items()}, data.geometry, dict(data.attrs))


class ResumableDownload:
    """A pooch downloader that keeps what it received in ``<file>.part`` and continues from there with
    an HTTP range request next time (a server that ignores the range restarts the file); a progress
    bar shows the bytes. pooch checks the checksum of the finished file and keeps it only if it matches."""

    def __init__(self, part: Path, progress: bool = True, chunk: int = 1 << 20, timeout: float = 60.0):
        self.part, self.progress, self.chunk, self.timeout = Path(part), progress, chunk, timeout

    def __call__(self, url, output_file, pooch_obj=None, check_only=False):
        import shutil

        import requests
        from tqdm.auto import tqdm

        have = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if have and r.status_code == 416:  # nothing left to send: the part is the whole file
                pass
            else:
                r.raise_for_status()
                if have and r.status_code != 206:
                    have = 0
                size = r.headers.get("content-length")
                total = have + int(size) if size else None
                with open(self.part, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=self.part.name[:-5],
                             disable=not self.progress) as bar:
                    for block in r.iter_content(self.chunk):
                        f.write(block)
                        bar.update(len(block))
        shutil.move(str(self.part), str(output_file))


def fetch(spec: dict, folder: Path, progress: bool = True) -> Path:
    """A local path (checked against ``sha256``/``md5`` if given) or a URL downloaded once by pooch
    (resumable, checked against its checksum)."""
    import pooch

    alg = checksum(spec)
    if "path" in spec:
        path = Path(os.path.expanduser(spec["path"]))
        if not path.exists():
            raise CalobenchError(f"{path}: no such file")
        if alg:
            got = pooch.file_hash(str(path), alg=alg[0])
            if got != alg[1]:
                raise CalobenchError(f"{path}: checksum mismatch (expected {alg[0]} {alg[1]}, got {got})")
        return path
    fname = spec["url"].rstrip("/").split("/")[-1]
    folder = Path(folder)
    target = folder / fname
    if target.exists():  # pooch would re-download a file whose hash changed; say so instead
        got = pooch.file_hash(str(target), alg=alg[0])
        if got != alg[1]:
            raise CalobenchError(f"{target}: checksum mismatch (expected {alg[0]} {alg[1]}, got {got}); "
                                 "delete it to download it again")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    pooch.get_logger().setLevel("WARNING")  # the progress bar says what is downloading
    try:
        return Path(pooch.retrieve(spec["url"], known_hash=f"{alg[0]}:{alg[1]}", fname=fname, path=folder,
                                   downloader=ResumableDownload(folder / (fname + ".part"), progress)))
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        raise CalobenchError(f"{fname}: checksum mismatch ({msg})") from None
    except Exception as exc:
        import requests

        if isinstance(exc, requests.ConnectionError):
            why = "no network connection (or the host is unreachable)"
        elif isinstance(exc, requests.HTTPError):
            why = f"HTTP {exc.response.status_code if exc.response is not None else '?'}"
        else:
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        part = folder / (fname + ".part")
        kept = f"; {part.stat().st_size:,} bytes kept, the next try resumes" if part.exists() and \
            part.stat().st_size else ""
        raise CalobenchError(f"{fname}: download from {spec['url']} failed: {why}{kept}") from None


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
