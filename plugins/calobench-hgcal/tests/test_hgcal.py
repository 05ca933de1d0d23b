"""HGCAL plugin: simulator physics and determinism, architecture shapes, a smoke run."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import calobench
from calobench.observables import features
from calobench_hgcal.model import HGCALWGAN
from calobench_hgcal.simulator import MASK, HGCALSimulator
from calobench_hgcal.wgan import Constrainer, Critic, Generator

SIM = HGCALSimulator()


@pytest.fixture(scope="module")
def by_energy():
    out = {}
    for i, E in enumerate((20.0, 32.0, 50.0, 80.0, 90.0)):
        d = SIM.simulate(600, np.random.default_rng(i), energies=[E], energy_smear=0.0)
        out[E] = d
    return out


def test_deterministic_from_seed():
    a = SIM.simulate(50, np.random.default_rng(7))
    b = SIM.simulate(50, np.random.default_rng(7))
    np.testing.assert_array_equal(a.showers, b.showers)
    assert not np.array_equal(a.showers, SIM.simulate(50, np.random.default_rng(8)).showers)


def test_mask_threshold_and_low_mip_region(by_energy):
    x = np.concatenate([d.showers for d in by_energy.values()])
    assert x.shape[1:] == (12, 15, 7)
    assert (x[:, ~MASK] == 0).all()
    hits = x[x > 0]
    assert hits.min() >= 2.0
    assert ((hits >= 2) & (hits < 5)).mean() > 0.25  # the low-MIP region is populated
    assert (x > 0).mean() < 0.3  # sparse


def test_depth_grows_with_log_energy(by_energy):
    E = np.array(sorted(by_energy))
    depth = np.array([features(by_energy[e])["depth"].mean() for e in E])
    assert np.all(np.diff(depth) > 0)
    slope, intercept = np.polyfit(np.log(E), depth, 1)
    assert slope > 0.5  # X0 per e-fold, GFLASH: ~1
    assert np.abs(depth - (slope * np.log(E) + intercept)).max() < 0.15


def test_visible_energy_linear_within_few_percent(by_energy):
    resp = np.array([by_energy[e].showers.sum((1, 2, 3)).mean() / e for e in sorted(by_energy)])
    assert np.abs(resp / resp.mean() - 1).max() < 0.04
    # resolution improves with energy
    res = [by_energy[e].showers.sum((1, 2, 3)).std() / by_energy[e].showers.sum((1, 2, 3)).mean()
           for e in sorted(by_energy)]
    assert res[0] > res[-1]


def test_layers_are_correlated(by_energy):
    f = features(by_energy[50.0])
    assert np.corrcoef(f["E_layer_2"], f["E_layer_3"])[0, 1] > 0.3


def test_interpolation_split_params():
    d = SIM.simulate(20, np.random.default_rng(0), energies=[70.0], energy_smear=0.0)
    assert np.all(d.conditions["energy"] == 70.0)


def test_generator_shapes_follow_the_table():
    G = Generator(torch.as_tensor(MASK), width=1.0)
    z, lab = torch.rand(2, 10) * 2 - 1, torch.rand(2, 3)
    t = G.towers[0]
    h = t.dense(torch.cat([z, lab], 1))
    assert h.shape == (2, 192)
    shapes = []
    h = h.reshape(2, 16, 3, 4)
    for layer in t.up:
        h = layer(h)
        if isinstance(layer, (torch.nn.ConvTranspose2d, torch.nn.Conv2d)):
            shapes.append(tuple(h.shape[2:]))
    assert shapes == [(6, 8), (12, 16), (24, 32), (20, 27)]
    body = G.body(torch.cat([tw(torch.cat([z, lab], 1)) for tw in G.towers], 1))
    assert body.shape[2:] == (14, 17)
    out = G(z, lab)
    assert out.shape == (2, 12, 15, 7) and (out >= 0).all()
    assert (out[:, torch.as_tensor(~MASK)] == 0).all()
    assert sum(p.numel() for p in G.parameters()) == 1_252_992  # documented in the plugin README
    assert Critic(1.0)(out, lab).shape == (2, 1)
    assert Constrainer(2, 1.0)(out).shape == (2, 2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in Critic(1.0).modules())


def test_bad_conditions():
    info = calobench.DatasetInfo("hgcal", SIM.geometry(), SIM.condition_ranges())
    m = HGCALWGAN(info, HGCALWGAN.config_for("smoke"), torch.device("cpu"))
    with pytest.raises(calobench.CalobenchError, match="missing impact_x"):
        m.sample({"energy": np.array([50.0]), "x": np.array([0.0]), "impact_y": np.array([0.0])})
    with pytest.warns(UserWarning, match="energy outside the trained range"):
        m.sample({"energy": np.array([150.0]), "impact_x": np.array([0.0]), "impact_y": np.array([0.0])})
    m2 = HGCALWGAN(info, HGCALWGAN.config_for("smoke"), torch.device("cpu"))
    with pytest.warns(UserWarning, match="impact_x outside the beam spot"):
        m2.sample({"energy": np.array([50.0]), "impact_x": np.array([5.0]), "impact_y": np.array([0.0])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HGCALWGAN(info, HGCALWGAN.config_for("smoke"), torch.device("cpu")).sample(
            {"energy": np.array([20.0, 90.0]), "impact_x": np.array([-3.0, 3.0]), "impact_y": np.array([0.0, 2.5])})


EXE = shutil.which("calobench", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_smoke_run_end_to_end(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text(
        "hgcal:\n  simulator: hgcal\n  splits:\n"
        "    train: {n: 600, seed: 1}\n    validation: {n: 200, seed: 2}\n    test: {n: 300, seed: 3}\n"
        "    reference: {n: 300, seed: 4}\n"
        "    interp70: {n: 200, seed: 5, params: {energies: [70.0], energy_smear: 0.0}}\n")
    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache"), "CALOBENCH_DATASETS": str(small)}
    r = subprocess.run([EXE, "run", "--model", "hgcal_wgan", "--dataset", "hgcal", "--preset", "smoke", "--quiet",
                        "--metrics", "wasserstein,separation_power"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    run, = (tmp_path / "runs").glob("hgcal__hgcal_wgan__smoke-*__seed0")
    rec = json.loads((run / "record.json").read_text())
    assert rec["metrics"]["wasserstein"]["status"] == "ok" and "interp70" in rec["extra_splits"]
    for png in ("hgcal_per_energy.png", "hgcal_occupancy.png", "hgcal_constrainers.png", "hgcal_correlations.png",
                "hgcal_examples.png"):
        assert (run / "plots" / png).exists()
    assert not (tmp_path / "leaderboard").exists()  # a smoke run never reaches a board
    assert "record:" in r.stdout and "leaderboard:" not in r.stdout


def test_paper_checks_pass_real_vs_real_and_catch_a_miscalibration():
    from calobench.checks import CheckContext
    from calobench_hgcal.checks import HGCALPaperChecks

    info = calobench.DatasetInfo("hgcal", SIM.geometry(), SIM.condition_ranges())
    real, real2 = SIM.simulate(2500, np.random.default_rng(1)), SIM.simulate(2500, np.random.default_rng(2))
    h70, h70b = (SIM.simulate(400, np.random.default_rng(s), energies=[70.0], energy_smear=0.0) for s in (3, 4))
    check = HGCALPaperChecks()
    assert check.applies_to(info) is None
    assert check.applies_to(calobench.DatasetInfo("lcd", SIM.geometry(), {}))
    good = {e["name"]: e for e in (r.to_dict() for r in check.evaluate(CheckContext(info, real, real2,
                                                                                     {"interp70": (h70, h70b)})))}
    assert set(good) == {f"{q}_{E}GeV" for q in ("response", "resolution", "hits") for E in (20, 32, 50, 70, 80, 90)} \
        | {"w1_E_total"}
    assert all(e["pass"] for e in good.values()), [e for e in good.values() if not e["pass"]]
    e = good["response_50GeV"]
    sel = np.abs(real.conditions["energy"] - 50) < 2.5
    assert e["real"] == pytest.approx(features(real)["E_total"][sel].mean())
    hot = calobench.ShowerData(real2.array() * 1.06, real2.conditions, real2.geometry)  # +6 %: response fails
    bad = {e.name: e for e in check.evaluate(CheckContext(info, real, hot))}
    assert not any(k.endswith("70GeV") for k in bad)  # no hold-out split given: no hold-out entries
    assert all(not bad[f"response_{E}GeV"].passed for E in (20, 32, 50, 80, 90))
    assert all(abs(bad[f"response_{E}GeV"].value - 0.06) < 0.02 for E in (20, 32, 50, 80, 90))
