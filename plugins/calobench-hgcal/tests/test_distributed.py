"""Multi-process training (DDP, gloo on CPU): 2 processes follow the 1-process loss trajectory,
and a checkpoint written by 2 processes resumes in 1."""
import json
import os
import shutil
import subprocess
import sys

import pytest

EXE = shutil.which("calobench", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
COMMON = ["run", "--model", "hgcal_wgan", "--dataset", "hgcal", "--preset", "smoke", "--quiet", "--no-timing",
          "--no-plots", "--metrics", "wasserstein", "--set", "log_every=1",
          "--set", "checkpoint_every_s=0"]
KEYS = ("critic", "generator", "wasserstein", "constrainer")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    small = tmp / "small.yaml"
    small.write_text("hgcal:\n  simulator: hgcal\n  splits:\n    train: {n: 600, seed: 1}\n"
                     "    validation: {n: 200, seed: 2}\n    test: {n: 200, seed: 3}\n    reference: {n: 200, seed: 4}\n")
    e = {**os.environ, "CALOBENCH_CACHE": str(tmp / "cache"), "CALOBENCH_DATASETS": str(small),
         "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return tmp, e


def _run(tmp, env, out, *extra, code=0):
    r = subprocess.run([EXE, *COMMON, "--out", str(tmp / out), *extra], capture_output=True, text=True, env=env,
                       cwd=tmp, timeout=600)
    assert r.returncode == code, r.stderr
    if code:
        return r
    record, = (tmp / out).glob("hgcal__hgcal_wgan__smoke-*__seed*/record.json")
    return json.loads(record.read_text())


def _close(a, b):
    assert [(h["phase"], h["step"]) for h in a] == [(h["phase"], h["step"]) for h in b]
    for ha, hb in zip(a, b):
        if ha["phase"] == "calibrate":  # the response factors: every rank calibrates on the same showers
            assert ha.keys() == hb.keys() and any(k.startswith("factor_") for k in ha)
            for k in ha.keys() - {"phase", "step"}:
                assert ha[k] == pytest.approx(hb[k], rel=1e-4), (k, ha[k], hb[k])
            continue
        for k in KEYS:
            # identical global batches and noise (every rank trains the constrainers on the whole global
            # batch); the sums are reduced in another order. Another seed: 0.1-0.5
            assert ha[k] == pytest.approx(hb[k], rel=0.01, abs=0.01), (ha["step"], k, ha[k], hb[k])


def test_two_processes_follow_one(env):
    tmp, e = env
    one = _run(tmp, e, "one", "--set", "steps=6")
    two = _run(tmp, e, "two", "--set", "steps=6", "--nproc", "2")
    assert one["train"]["processes"] == 1 and two["train"]["processes"] == 2
    assert [h["phase"] for h in one["train"]["history"]] == ["train"] * 6 + ["calibrate"]
    _close(one["train"]["history"], two["train"]["history"])
    # a different trajectory would not pass: another seed differs by far more than the tolerance
    other = _run(tmp, e, "other", "--set", "steps=6", "--seed", "1")
    with pytest.raises(AssertionError):
        _close(one["train"]["history"], other["train"]["history"])


def test_two_process_checkpoint_resumes_in_one(env):
    tmp, e = env
    one = _run(tmp, e, "one_b", "--set", "steps=6")
    r = _run(tmp, e, "mixed", "--set", "steps=6", "--set", "stop_after_steps=3", "--nproc", "2", code=130)
    assert "stopped after 3 steps" in r.stderr and "--resume" in r.stderr
    resumed = _run(tmp, e, "mixed", "--set", "steps=6", "--resume")
    assert resumed["train"]["resumed_from"] == 3 and resumed["train"]["processes"] == 1
    _close(one["train"]["history"], resumed["train"]["history"])


def test_a_failing_rank_is_one_clear_line(env):
    tmp, e = env
    r = subprocess.run([EXE, "run", "--model", "hgcal_wgan", "--dataset", "hgcal", "--preset", "smoke", "--quiet",
                        "--nproc", "2", "--set", "batch=15", "--out", str(tmp / "bad")], capture_output=True,
                       text=True, env=e, cwd=tmp, timeout=600)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "does not divide over 2 processes" in r.stderr
