"""The committed leaderboard: every record is a real, ranked run of committed code in the current
schema; every board regenerates byte-identically from its records; a committed floor recomputes
from the dataset (simulated afresh into an empty cache) with the current metric code: bit for bit
on a CPU with the instruction set that made the record, else within its uncertainty (numpy's
vectorised exp/log differ in the last bit between AVX-512 and AVX2 builds of the same version;
one flipped threshold decision in the simulator reshuffles the rest of its random stream, which
gives an equivalent, not identical, sample)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from calobench.leaderboard import render
from calobench.plugins import Plugins, set_plugins
from calobench.runner import RECORD_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "leaderboard"
RECORDS = sorted((BOARD / "records").glob("*.json"))


def load(path):
    return json.loads(path.read_text())


def test_there_are_committed_records():
    assert RECORDS, "leaderboard/records holds no committed record"


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_record_is_a_ranked_run_of_committed_code(path):
    rec = load(path)
    assert rec["schema"] == RECORD_SCHEMA and rec["kind"] == "run" and rec["ranked"] is True
    assert rec["preset"] != "smoke"
    assert rec["code"]["dirty"] is False and len(rec["code"]["revision"]) == 40
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", rec["code"]["revision"] + "^{commit}"],
                           capture_output=True)
    if (ROOT / ".git").exists() and not (ROOT / ".git" / "shallow").exists():
        assert known.returncode == 0, f"revision {rec['code']['revision']} is not in this repository's history"
    assert path.name == f"{rec['dataset']}__{rec['model']}__{rec['config_hash']}__seed{rec['seed']}.json"
    for name, m in rec["metrics"].items():
        assert m["status"] in ("ok", "n/a", "skipped", "failed"), name


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_record_is_on_the_current_dataset_definition(path):
    """A new simulator version (or any change of a dataset's definition) changes its key: the
    records made on the old one must leave the board, not linger beside the new ones."""
    from calobench import load_dataset

    set_plugins(Plugins())
    rec = load(path)
    assert load_dataset(rec["dataset"]).dataset.key == rec["dataset_key"], \
        f"{path.name} was made on {rec['dataset_key']}; the dataset is now {load_dataset(rec['dataset']).dataset.key}"
    if rec.get("target_key"):
        assert load_dataset(rec["target"]).dataset.key == rec["target_key"]


def test_boards_regenerate_byte_identically(tmp_path):
    shutil.copytree(BOARD, tmp_path / "board")
    boards = sorted(p.name for p in BOARD.glob("*.md"))
    for p in (tmp_path / "board").glob("*.md"):
        p.unlink()
    written = render(tmp_path / "board")
    assert sorted(Path(p).name for p in written) == boards
    for name in boards:
        assert (tmp_path / "board" / name).read_bytes() == (BOARD / name).read_bytes(), name


CHEAP = ("wasserstein", "separation_power", "mre")  # floors that recompute in seconds


def hgcal_record():
    found = [p for p in RECORDS if load(p)["dataset"] == "hgcal"]
    return load(found[0]) if found else None


@pytest.mark.skipif(hgcal_record() is None, reason="no committed hgcal record")
def test_committed_hgcal_floors_recompute_exactly(tmp_path, monkeypatch):
    from calobench import load_dataset, registry
    from calobench.metric import MetricContext
    from calobench.runner import compute_floor, select_metrics

    set_plugins(Plugins())  # the installed plugins, not the toy one
    monkeypatch.setenv("CALOBENCH_CACHE", str(tmp_path / "fresh-cache"))
    rec = hgcal_record()
    ds = load_dataset("hgcal")
    assert ds.dataset.key == rec["dataset_key"], "the hgcal dataset definition changed since the record"
    real, reference = ds.load("test"), ds.load("reference")
    ctx = MetricContext(dataset=ds.info, seed=rec["seed"], device="cpu")
    checked = 0
    for metric in select_metrics(registry(), list(CHEAP)):
        entry = rec["metrics"][metric.name]
        if entry["version"] != metric.version:  # the record predates this definition: nothing to recompute
            continue
        checked += 1
        f = compute_floor(metric, real, reference, ctx, rec["dataset_key"], entry["floor_n"])
        # the ± is comparable only when the record's uncertainty method is this metric's
        same_unc = entry.get("uncertainty_version", 1) == getattr(metric, "uncertainty_version", 1)
        if f["value"] == pytest.approx(entry["floor"], rel=1e-12, abs=0):  # the same sample: bit for bit
            if same_unc:
                assert f["uncertainty"] == pytest.approx(entry["floor_uncertainty"], rel=1e-9, abs=1e-15), metric.name
        else:  # an equivalent sample (another instruction set): the same floor within its uncertainty
            sigma = (f["uncertainty"] ** 2 + entry["floor_uncertainty"] ** 2) ** 0.5
            assert abs(f["value"] - entry["floor"]) <= 3 * sigma, (metric.name, f, entry["floor"])
            if same_unc:
                assert 0.5 < f["uncertainty"] / entry["floor_uncertainty"] < 2, metric.name
    assert checked >= 2
