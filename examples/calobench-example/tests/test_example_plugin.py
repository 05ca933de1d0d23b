"""The example plugin, installed by pip, found through its entry point, run end to end."""
import json
import os
import shutil
import subprocess
import sys

import pytest

EXE = shutil.which("calobench", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_example_plugin_runs_end_to_end(tmp_path):
    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([EXE, "plugins"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert "example" in [p["name"] for p in json.loads(out.stdout)]
    r = subprocess.run([EXE, "run", "--model", "percell_baseline", "--dataset", "toy", "--preset", "default",
                        "--quiet", "--no-timing", "--leaderboard", "lb"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run, = (tmp_path / "runs").glob("toy__percell_baseline__default-*__seed0")
    rec = json.loads((run / "record.json").read_text())
    assert rec["model_plugin"] == {"name": "example", "version": "0.1.0"}
    assert "percell_baseline" in (tmp_path / "lb/toy.md").read_text()


def test_baseline_reproduces_cell_marginals():
    import numpy as np
    import torch

    import calobench
    from calobench_example import PerCellBaseline, ToyCalorimeter

    sim = ToyCalorimeter()
    data = sim.simulate(3000, np.random.default_rng(0))
    info = calobench.DatasetInfo("toy", sim.geometry(), sim.condition_ranges())
    model = PerCellBaseline(info, PerCellBaseline.config_for("default"), torch.device("cpu"))
    model.fit(data, calobench.Trainer(progress=False))
    torch.manual_seed(0)
    gen = model.sample(data.conditions)
    # per-cell means match; total-energy spread shrinks (no correlations): what a baseline should show
    np.testing.assert_allclose(gen.mean(0), data.showers.mean(0), rtol=0.1, atol=0.05)
    assert gen.sum((1, 2, 3)).std() < data.showers.sum((1, 2, 3)).std()


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
@pytest.mark.parametrize("kill_after", [0.8, 2.0, 4.0, 7.0])
def test_sigkill_leaves_no_half_file_and_resume_finishes(tmp_path, kill_after):
    """Kill -9 a run at some moment (data, training, samples, metrics or writing), then check that
    every file that exists is whole and that --resume completes the run."""
    import signal
    import time

    import h5py
    import torch

    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [EXE, "run", "--model", "percell_baseline", "--dataset", "toy", "--preset", "smoke", "--quiet",
           "--no-timing"]
    p = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    p.send_signal(signal.SIGKILL)
    p.wait()
    for f in tmp_path.rglob("*"):
        if not f.is_file() or f.name.endswith(".tmp"):
            continue
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".h5":
            with h5py.File(f) as h:
                h["showers"][-1:]
        elif f.suffix == ".pt":
            torch.load(f, weights_only=True)
    r = subprocess.run(cmd + ["--resume"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run, = (tmp_path / "runs").glob("toy__percell_baseline__smoke-*__seed0")
    assert (run / "record.json").exists()
