"""ShowerData (showers + conditions + geometry) and its HDF5 form.

The calobench HDF5 layout (schema version 1):
  /showers            float32 [N, *shape], chunked, gzip-compressed
  /conditions/<name>  float32 [N]
  attrs: schema_version, geometry (JSON), plus free provenance attributes
Files are opened lazily: ``ShowerData.showers`` may be an ``h5py.Dataset``; slicing it
reads only what is asked for.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .errors import CalobenchError
from .io import _jsonable, atomic_path

SCHEMA_VERSION = 1
CACHE_ENV = "CALOBENCH_CACHE"


@dataclass
class Geometry:
    """What a physicist needs to interpret a shower array.

    ``layer_axis`` is the longitudinal (or time) axis of each shower, None for 2-D patterns.
    ``cell_size`` is per axis in ``length_unit``; ``layer_positions`` are the layer depths
    (e.g. in X0); ``mask`` marks active cells (None: all active).

    ``binning`` describes a cylindrical readout instead of a grid (the CaloChallenge
    geometries): a list of layers ``{"layer": id, "r_edges": [...], "n_alpha": k}`` in file
    order; the showers are then flat ``[n_voxels]``, layer after layer, inside a layer angular
    bin after angular bin, inside an angular bin radial bin after radial bin (the challenge's
    order: ``reshape(n_alpha, n_r)`` per layer). Alpha bins are equal slices of (-pi, pi].
    """

    shape: tuple
    cell_size: tuple = ()
    layer_axis: int | None = -1
    layer_positions: list | None = None
    layer_unit: str = "layer"
    length_unit: str = "mm"
    energy_unit: str = "a.u."
    threshold: float = 0.0
    mask: np.ndarray | None = None
    axes: tuple = ()
    binning: list | None = None

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        self.cell_size = tuple(float(c) for c in self.cell_size) or (1.0,) * len(self.shape)
        if not self.axes:
            self.axes = ("x", "y", "z", "t")[: len(self.shape)]
        self.axes = tuple(self.axes)
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=bool)
            if self.mask.shape != self.shape:
                raise CalobenchError(f"geometry mask shape {self.mask.shape} != shape {self.shape}")
        if self.layer_axis is not None:
            self.layer_axis = self.layer_axis % len(self.shape)
        if self.binning is not None:
            self.binning = [_check_layer_bins(b) for b in self.binning]
            if not self.binning:
                raise CalobenchError("geometry binning: needs at least one layer")
            n = sum(b["n_voxels"] for b in self.binning)
            if self.shape != (n,):
                raise CalobenchError(f"geometry binning holds {n} voxels, shape is {self.shape} (expected ({n},))")
            if self.layer_axis is not None:
                raise CalobenchError("geometry binning: showers are flat, layer_axis must be None")
            if self.layer_positions is not None and len(self.layer_positions) != len(self.binning):
                raise CalobenchError(f"geometry: {len(self.layer_positions)} layer positions for "
                                     f"{len(self.binning)} binned layers")

    @property
    def n_layers(self) -> int:
        if self.binning is not None:
            return len(self.binning)
        return 1 if self.layer_axis is None else self.shape[self.layer_axis]

    def layer_index(self) -> np.ndarray:
        """int array of ``shape``: the layer (0 .. n_layers-1) each cell belongs to."""
        if self.binning is not None:
            return np.repeat(np.arange(len(self.binning)), [b["n_voxels"] for b in self.binning])
        if self.layer_axis is None or len(self.shape) == 1:
            return np.zeros(self.shape, dtype=np.int64)
        other = tuple(i for i in range(len(self.shape)) if i != self.layer_axis)
        return np.broadcast_to(np.expand_dims(np.arange(self.shape[self.layer_axis]), other), self.shape).copy()

    def voxel_centres(self) -> dict:
        """Binned geometries: per voxel (flat order) ``layer`` (0-based position), ``r`` (the radial bin's
        mid-point), ``alpha`` (the angular bin's mid-point), ``x = r cos(alpha)``, ``y = r sin(alpha)``."""
        if self.binning is None:
            raise CalobenchError("voxel_centres() needs a binned (cylindrical) geometry")
        parts = {k: [] for k in ("layer", "r", "alpha")}
        for i, b in enumerate(self.binning):
            edges = np.asarray(b["r_edges"], dtype=np.float64)
            r_mid = (edges[:-1] + edges[1:]) / 2
            a_edges = np.linspace(-np.pi, np.pi, b["n_alpha"] + 1)
            a_mid = (a_edges[:-1] + a_edges[1:]) / 2
            parts["layer"].append(np.full(b["n_voxels"], i))
            parts["r"].append(np.tile(r_mid, b["n_alpha"]))  # alpha outer, r inner
            parts["alpha"].append(np.repeat(a_mid, len(r_mid)))
        out = {k: np.concatenate(v) for k, v in parts.items()}
        out["x"] = out["r"] * np.cos(out["alpha"])
        out["y"] = out["r"] * np.sin(out["alpha"])
        return out

    def layer_depths(self) -> np.ndarray:
        if self.layer_positions is not None:
            return np.asarray(self.layer_positions, dtype=np.float64)
        return np.arange(self.n_layers, dtype=np.float64)

    def to_json(self) -> str:
        d = asdict(self)
        d["mask"] = None if self.mask is None else self.mask.astype(int).tolist()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "Geometry":
        d = json.loads(text)
        return cls(**d)


def _check_layer_bins(b) -> dict:
    if not isinstance(b, dict) or set(b) - {"layer", "r_edges", "n_alpha", "n_voxels"}:
        raise CalobenchError(f"geometry binning: each layer is {{layer, r_edges, n_alpha}}, got {b!r}")
    try:
        edges = [float(e) for e in b["r_edges"]]
        n_alpha, layer = int(b["n_alpha"]), int(b["layer"])
    except (KeyError, TypeError, ValueError):
        raise CalobenchError(f"geometry binning: each layer is {{layer, r_edges, n_alpha}}, got {b!r}") from None
    if len(edges) < 2 or any(b2 <= b1 for b1, b2 in zip(edges, edges[1:])) or n_alpha < 1:
        raise CalobenchError(f"geometry binning: layer {layer} needs increasing r_edges and n_alpha >= 1")
    return {"layer": layer, "r_edges": edges, "n_alpha": n_alpha, "n_voxels": (len(edges) - 1) * n_alpha}


@dataclass
class ShowerData:
    """``showers`` float32 ``[N, *shape]`` and ``conditions`` ``{name: float32[N]}``."""

    showers: object  # np.ndarray or a lazy h5py.Dataset
    conditions: dict = field(default_factory=dict)
    geometry: Geometry | None = None
    attrs: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # derived quantities (observables)

    def __post_init__(self):
        n = len(self.showers)
        self.conditions = {k: np.asarray(v, dtype=np.float32) for k, v in self.conditions.items()}
        for k, v in self.conditions.items():
            if v.shape != (n,):
                raise CalobenchError(f"condition '{k}' has shape {v.shape}, expected ({n},)")
        if self.geometry is None:
            self.geometry = Geometry(shape=self.showers.shape[1:])
        if tuple(self.showers.shape[1:]) != self.geometry.shape:
            raise CalobenchError(
                f"showers have shape {tuple(self.showers.shape[1:])}, geometry says {self.geometry.shape}"
            )

    def __len__(self) -> int:
        return len(self.showers)

    @property
    def shape(self) -> tuple:
        return self.geometry.shape

    def take(self, index) -> "ShowerData":
        """An in-memory subset: a slice, or sorted/unsorted integer indices."""
        if isinstance(index, slice):
            showers = np.asarray(self.showers[index], dtype=np.float32)
            conds = {k: v[index] for k, v in self.conditions.items()}
        else:
            index = np.asarray(index)
            order = np.argsort(index, kind="stable")
            sorted_idx = index[order]
            if isinstance(self.showers, np.ndarray):
                showers = self.showers[index]
            else:  # h5py wants increasing, unique indices
                uniq, inverse = np.unique(sorted_idx, return_inverse=True)
                block = np.asarray(self.showers[uniq], dtype=np.float32)[inverse]
                showers = np.empty_like(block)
                showers[order] = block
            conds = {k: v[index] for k, v in self.conditions.items()}
        return ShowerData(np.asarray(showers, dtype=np.float32), conds, self.geometry, dict(self.attrs))

    def head(self, n: int) -> "ShowerData":
        return self.take(slice(0, min(n, len(self))))

    def load(self) -> "ShowerData":
        """The same data fully in memory."""
        return self.take(slice(None))

    def chunks(self, size: int | None = None):
        """Iterate over in-memory blocks of at most ``size`` showers (default: ~16 M cells a block)."""
        size = size or max(1, 2**24 // max(1, int(np.prod(self.geometry.shape))))
        for start in range(0, len(self), size):
            yield self.take(slice(start, start + size))

    def array(self) -> np.ndarray:
        return np.asarray(self.showers[...] if not isinstance(self.showers, np.ndarray) else self.showers,
                          dtype=np.float32)


class _LazyRows:
    """What :class:`ShowerData` asks of a lazy array: ``len``, ``shape``, ``[...]``, step-1 slices and
    integer indices; subclasses set ``shape`` and implement ``_rows(indices)``."""

    shape: tuple = ()
    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if index is Ellipsis:
            index = slice(None)
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError(f"{type(self).__name__} supports step-1 slices only")
            index = np.arange(start, stop)
        return self._rows(np.asarray(index, dtype=np.int64))


class ConcatArray(_LazyRows):
    """Several lazily read ``[n_i, *shape]`` arrays seen as one (a dataset split over many files).

    Supports what :class:`ShowerData` asks of a lazy array: ``len``, ``shape``, ``[...]``,
    step-1 slices and increasing integer indices."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]),) + tuple(self.parts[0].shape[1:])

    def _rows(self, index):
        part = np.searchsorted(self.offsets, index, side="right") - 1
        out = [np.asarray(self.parts[k][index[part == k] - self.offsets[k]], dtype=np.float32)
               for k in np.unique(part)]
        return np.concatenate(out) if out else np.zeros((0,) + self.shape[1:], np.float32)


class RowsArray(_LazyRows):
    """The rows ``rows`` (increasing) of a lazily read ``[N, *shape]`` array, seen as one array: a split
    carved out of another (``subset_of``) stays on disk. Same access as :class:`ConcatArray`."""

    def __init__(self, base, rows):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows),) + tuple(base.shape[1:])

    def _rows(self, index):
        rows = self.rows[index]
        if len(rows) == 0:
            return np.zeros((0,) + self.shape[1:], np.float32)
        if isinstance(self.base, np.ndarray):
            return np.asarray(self.base[rows], dtype=np.float32)
        # h5py wants increasing unique indices; read contiguous runs as slices (fast for blocks)
        order = np.argsort(rows, kind="stable")
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        pieces = [np.asarray(self.base[int(run[0]):int(run[-1]) + 1], dtype=np.float32)
                  for run in np.split(uniq, breaks)]
        block = np.concatenate(pieces)[inverse]
        out = np.empty_like(block)
        out[order] = block
        return out


def cache_dir() -> Path:
    """Where simulated and downloaded datasets are cached (``CALOBENCH_CACHE`` overrides)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("calobench"))


def _chunk_shape(n: int, shape: tuple) -> tuple:
    per = max(1, int(2**20 // (4 * int(np.prod(shape)))))  # ~1 MiB chunks
    return (max(1, min(n, per)),) + tuple(shape)


class H5Writer:
    """Streams showers into a calobench HDF5 file in blocks; the file appears atomically on close."""

    def __init__(self, path, n: int, geometry: Geometry, condition_names, attrs=None):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self.f = h5py.File(tmp, "w")
        self.f.attrs["schema_version"] = SCHEMA_VERSION
        self.f.attrs["geometry"] = geometry.to_json()
        for k, v in (attrs or {}).items():
            v = v.item() if isinstance(v, np.generic) else v
            self.f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v, default=_jsonable)
        self.showers = self.f.create_dataset(
            "showers", shape=(n,) + geometry.shape, dtype="f4",
            chunks=_chunk_shape(n, geometry.shape) if n else None, compression="gzip", compression_opts=4,
            shuffle=True,
        )
        grp = self.f.create_group("conditions")
        self.conds = {c: grp.create_dataset(c, shape=(n,), dtype="f4") for c in condition_names}
        self.pos, self.n = 0, n

    def append(self, block: ShowerData):
        m = len(block)
        self.showers[self.pos : self.pos + m] = block.array()
        for c, ds in self.conds.items():
            ds[self.pos : self.pos + m] = block.conditions[c]
        self.pos += m

    def close(self, ok: bool = True):
        self.f.close()
        ok = ok and self.pos == self.n
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("incomplete"), None)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        self.close(ok=et is None)
        return False


def write_hdf5(path, data: ShowerData, attrs=None) -> Path:
    """Write ``data`` atomically in the calobench layout."""
    with H5Writer(path, len(data), data.geometry, list(data.conditions), {**data.attrs, **(attrs or {})}) as w:
        for block in data.chunks():
            w.append(block)
    return Path(path)


def _open(path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise CalobenchError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise CalobenchError(f"{path}: not a readable HDF5 file (corrupt or truncated?)") from None


def read_hdf5(path, lazy: bool = True, geometry: Geometry | None = None) -> ShowerData:
    """Read a calobench-layout file; ``lazy`` keeps showers on disk until sliced."""
    f = _open(path)
    try:
        if "showers" not in f:
            raise CalobenchError(f"{path}: no 'showers' dataset (is it a calobench HDF5 file?)")
        version = int(f.attrs.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise CalobenchError(f"{path}: schema version {version} is newer than this calobench ({SCHEMA_VERSION})")
        sh = f["showers"]
        if not isinstance(sh, h5py.Dataset) or sh.ndim < 2:
            raise CalobenchError(f"{path}: 'showers' must be an array [N, *shape], got "
                                 f"{'a group' if not isinstance(sh, h5py.Dataset) else f'{sh.ndim}-D'}")
        if sh.dtype.kind != "f":
            raise CalobenchError(f"{path}: 'showers' must hold floating-point energies, got {sh.dtype}")
        if geometry is None and "geometry" in f.attrs:
            try:
                geometry = Geometry.from_json(f.attrs["geometry"])
            except (TypeError, ValueError, json.JSONDecodeError) as exc:
                raise CalobenchError(f"{path}: unreadable 'geometry' attribute ({str(exc).splitlines()[0]})") from None
        if "conditions" in f and not isinstance(f["conditions"], h5py.Group):
            raise CalobenchError(f"{path}: 'conditions' must be a group of 1-D datasets, one per condition")
        conds = {k: np.asarray(v[...]) for k, v in f.get("conditions", {}).items()}
        attrs = {k: v for k, v in f.attrs.items() if k not in ("geometry", "schema_version")}
        showers = f["showers"]
        if not lazy:
            showers = _read_all(path, showers)
        data = ShowerData(showers, conds, geometry, attrs)
        if lazy and len(data):  # touch first and last chunk: a truncated file fails here, not mid-run
            _read_all(path, showers, (slice(0, 1),))
            _read_all(path, showers, (slice(len(data) - 1, len(data)),))
        return data
    except CalobenchError:
        f.close()
        raise
    except (OSError, KeyError, ValueError) as exc:
        f.close()
        raise CalobenchError(f"{path}: unreadable HDF5 content (corrupt or truncated?): {exc}") from None
    finally:
        if not lazy:
            f.close()


def _read_all(path, ds, index=(Ellipsis,)):
    try:
        return np.asarray(ds[index[0]], dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise CalobenchError(f"{path}: unreadable HDF5 content (corrupt or truncated?): {exc}") from None
