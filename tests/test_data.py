import h5py
import numpy as np
import pytest

from calobench import CalobenchError, Geometry, ShowerData, read_hdf5, write_hdf5
from calobench.data import SCHEMA_VERSION


def make(n=50, seed=0):
    rng = np.random.default_rng(seed)
    g = Geometry(shape=(3, 4, 5), cell_size=(1, 2, 3), mask=np.ones((3, 4, 5), bool))
    return ShowerData(rng.random((n, 3, 4, 5), dtype=np.float32), {"energy": rng.random(n)}, g)


def test_hdf5_roundtrip_is_lazy_chunked_compressed(tmp_path):
    d = make()
    write_hdf5(tmp_path / "a.h5", d)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert f["showers"].chunks is not None and f["showers"].compression == "gzip"
    back = read_hdf5(tmp_path / "a.h5")
    assert isinstance(back.showers, h5py.Dataset)  # lazy
    np.testing.assert_array_equal(back.array(), d.showers)
    np.testing.assert_array_equal(back.conditions["energy"], d.conditions["energy"])
    assert back.geometry.shape == (3, 4, 5) and back.geometry.cell_size == (1, 2, 3)
    assert back.geometry.mask.all()


def test_take_from_lazy_file_keeps_order(tmp_path):
    d = make()
    write_hdf5(tmp_path / "a.h5", d)
    back = read_hdf5(tmp_path / "a.h5")
    idx = np.array([7, 3, 3, 40])
    np.testing.assert_array_equal(back.take(idx).showers, d.showers[idx])
    np.testing.assert_array_equal(back.take(idx).conditions["energy"], d.conditions["energy"][idx])


def test_truncated_file_is_a_clear_error(tmp_path):
    write_hdf5(tmp_path / "a.h5", make(2000))
    raw = (tmp_path / "a.h5").read_bytes()
    (tmp_path / "t.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CalobenchError, match="corrupt or truncated"):
        read_hdf5(tmp_path / "t.h5").array()


def test_garbage_file_is_a_clear_error(tmp_path):
    (tmp_path / "g.h5").write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(CalobenchError, match="not a readable HDF5 file"):
        read_hdf5(tmp_path / "g.h5")


def test_condition_shape_mismatch():
    with pytest.raises(CalobenchError, match="condition 'energy'"):
        ShowerData(np.zeros((3, 2, 2), np.float32), {"energy": np.zeros(4)})


def test_failed_write_leaves_no_file(tmp_path):
    class Boom(Exception):
        pass

    d = make()
    from calobench.data import H5Writer

    with pytest.raises(Boom):
        with H5Writer(tmp_path / "x.h5", len(d), d.geometry, ["energy"]) as w:
            w.append(d.head(10))
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_multi_file_split_stays_lazy(tmp_path):
    from calobench.catalog import concat
    from calobench.data import ConcatArray

    a, b = make(30, 1), make(20, 2)
    write_hdf5(tmp_path / "a.h5", a)
    write_hdf5(tmp_path / "b.h5", b)
    both = concat([read_hdf5(tmp_path / "a.h5"), read_hdf5(tmp_path / "b.h5")])
    assert isinstance(both.showers, ConcatArray) and len(both) == 50
    full = np.concatenate([a.showers, b.showers])
    np.testing.assert_array_equal(both.array(), full)
    idx = np.array([45, 2, 29, 30, 2])
    np.testing.assert_array_equal(both.take(idx).showers, full[idx])
    np.testing.assert_array_equal(both.take(slice(25, 35)).showers, full[25:35])
    np.testing.assert_array_equal([c.showers.shape[0] for c in both.chunks(16)], [16, 16, 16, 2])
    np.testing.assert_array_equal(both.conditions["energy"], np.concatenate([a.conditions["energy"],
                                                                              b.conditions["energy"]]))
