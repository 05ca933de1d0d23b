import hashlib

import numpy as np
import pytest

from calobench import CalobenchError
from calobench.catalog import Catalog
from calobench.plugins import get_plugins


def catalog(*files):
    return Catalog(get_plugins().registry, files)


def test_simulated_dataset_is_deterministic_and_cached(tmp_path):
    ds = catalog().get("tiny")
    a = ds.load("train").array()
    assert ds.split_path("train").exists()
    ds.split_path("train").unlink()
    b = ds.load("train").array()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (200, 4, 4, 3) and a.dtype == np.float32
    assert not np.array_equal(a, ds.load("test").array()[:80].repeat(3, 0)[:200])


def test_split_params_override(tmp_path):
    ds = catalog().get("tiny")
    assert ds.load("hot").array().sum() / len(ds.load("hot")) > ds.load("test").array().sum() / 80


@pytest.mark.parametrize("body,msg", [
    ("d: {simulator: tiny, splits: {train: {n: 3, seed: 1}, test: {n: 3, seed: 2}}, colour: red}", "unknown key"),
    ("d: {simulator: tiny, splits: {train: {n: -3, seed: 1}, test: {n: 3, seed: 2}}}", "'n' must be a positive"),
    ("d: {simulator: tiny, splits: {train: {n: 3, seed: 1}}}", "needs a 'test' split"),
    ("d: {simulator: tiny, layout: calobench, splits: {train: {n: 3, seed: 1}, test: {n: 3, seed: 1}}}",
     "exactly one of"),
    ("d: {layout: calobench, splits: {train: {files: [{url: 'http://x/y.h5'}]}, test: {files: [{path: a}]}}}",
     "needs a 'sha256'"),
    ("d: [1, 2", "not valid YAML"),
    ("d: {layout: calobench, splits: {train: {files: [{path: a, sha256: 0000000000000000000000000000000000000000000000000000000000000000}]}, test: {files: [{path: a}]}}}",
     "64 hex digits"),
])
def test_bad_entries_are_clear_errors(tmp_path, body, msg):
    f = tmp_path / "mine.yaml"
    f.write_text(body)
    with pytest.raises(CalobenchError, match=msg):
        catalog(f)


def test_user_file_adds_dataset_and_env_var(tmp_path, monkeypatch):
    f = tmp_path / "mine.yaml"
    f.write_text("small: {simulator: tiny, splits: {train: {n: 10, seed: 7}, test: {n: 5, seed: 8}}}\n")
    assert "small" in catalog(f).names()
    monkeypatch.setenv("CALOBENCH_DATASETS", str(f))
    assert len(catalog().get("small").load("train")) == 10


def test_file_dataset_with_checksum(tmp_path):
    src = catalog().get("tiny").load("test")
    from calobench import write_hdf5

    write_hdf5(tmp_path / "t.h5", src)
    digest = hashlib.sha256((tmp_path / "t.h5").read_bytes()).hexdigest()
    good = tmp_path / "good.yaml"
    good.write_text(f"f: {{layout: calobench, splits: {{train: {{files: [{{path: {tmp_path}/t.h5, sha256: {digest}}}]}},"
                    f" test: {{files: [{{path: {tmp_path}/t.h5}}], n: 20}}}}}}\n")
    ds = catalog(good).get("f")
    assert len(ds.load("train")) == 80 and len(ds.load("test")) == 20
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace(digest, "ab" * 32))
    with pytest.raises(CalobenchError, match="checksum mismatch"):
        catalog(bad).get("f").load("train")


def test_unknown_dataset_suggests_close_match():
    with pytest.raises(CalobenchError, match="did you mean: tiny"):
        catalog().get("tinny")


def test_url_dataset_downloads_once_with_checksum(tmp_path):
    """A real download through pooch, from a server on the loopback interface."""
    import functools
    import http.server
    import threading

    from calobench import write_hdf5

    served = tmp_path / "srv"
    served.mkdir()
    write_hdf5(served / "t.h5", catalog().get("tiny").load("test"))
    digest = hashlib.sha256((served / "t.h5").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/t.h5"
    try:
        good = tmp_path / "good.yaml"
        good.write_text(f"web: {{layout: calobench, splits: {{train: {{files: [{{url: '{url}', sha256: '{digest}'}}]}},"
                        f" test: {{files: [{{url: '{url}', sha256: '{digest}'}}]}}}}}}\n")
        assert len(catalog(good).get("web").load("train")) == 80
        bad = tmp_path / "bad.yaml"
        bad.write_text(good.read_text().replace("web:", "web2:").replace(digest, "cd" * 32))
        with pytest.raises(CalobenchError, match="checksum mismatch"):
            catalog(bad).get("web2").load("train")
    finally:
        server.shutdown()
    assert len(catalog(good).get("web").load("test")) == 80  # cached: no server needed
