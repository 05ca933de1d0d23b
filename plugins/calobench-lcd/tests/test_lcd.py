"""LCD plugin: simulator physics, the angle measurement, the 3DGAN file layout, the 3DGAN, a smoke run."""
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import calobench
from calobench.catalog import Catalog
from calobench.plugins import get_plugins
from calobench_lcd.layout import read_3dgan
from calobench_lcd.model import ThreeDGAN
from calobench_lcd.nets import Discriminator, Generator
from calobench_lcd.physics import barycentre_drift, layer_y_barycentres, measured_angle
from calobench_lcd.simulator import THRESHOLD_GEV, LCDSimulator

SIM = LCDSimulator()


@pytest.fixture(scope="module")
def sample():
    return SIM.simulate(384, np.random.default_rng(11))


def test_deterministic_and_shaped(sample):
    again = SIM.simulate(384, np.random.default_rng(11))
    np.testing.assert_array_equal(sample.showers, again.showers)
    assert sample.showers.shape == (384, 51, 51, 25) and sample.showers.dtype == np.float32
    e, th = sample.conditions["energy"], sample.conditions["theta"]
    assert 2 <= e.min() and e.max() <= 500 and np.radians(60) <= th.min() and th.max() <= np.radians(120)


def test_sampling_fraction_sparsity_dynamic_range(sample):
    x, e = sample.showers, sample.conditions["energy"]
    sf = x.sum((1, 2, 3)) / e
    assert 0.015 < sf.mean() < 0.025  # ~2 % as in the public files
    assert np.corrcoef(np.log(e), sf)[0, 1] < -0.3  # falls with E_p (more energy in the thick layers, leakage)
    spread = []
    for rng in ((2.0, 10.0), (300.0, 500.0)):
        d = SIM.simulate(150, np.random.default_rng(3), energy_range=rng)
        f = d.showers.sum((1, 2, 3)) / d.conditions["energy"]
        spread.append(f.std() / f.mean())
    assert spread[0] > 1.3 * spread[1]  # resolution improves with energy (measured: 9.3 % vs 5.8 %)
    occupancy = (x > 0).mean((1, 2, 3))
    assert occupancy.max() < 0.2 and occupancy.min() > 0
    hits = x[x > 0]
    assert hits.min() >= THRESHOLD_GEV
    assert np.log10(hits.max() / hits.min()) > 3.5  # many decades


def test_soft_photon_halo_occupancy_spectrum_and_energy(monkeypatch):
    """Version 2's halo: at 450-500 GeV a shower touches >= 10 % of the 65 025 cells (the paper: up to
    ~20 %; version 1: 2.4 %), with a smooth spectrum of deposits far below a MIP, most of them in the
    periphery; the visible sum is taken from the shower's own spots, so the sampling fraction stays
    within 3 % of the simulator without the halo."""
    import calobench_lcd.simulator as sim

    hi = SIM.simulate(32, np.random.default_rng(5), energy_range=(450.0, 500.0))
    occupancy = (hi.showers > 0).mean((1, 2, 3))
    assert occupancy.min() > 0.10 and occupancy.max() < 0.25
    hits = hi.showers[hi.showers > 0]
    assert (hits < 1e-5).mean() > 0.3 and (hits > 1e-3).sum() > 0  # soft deposits and the core's hot cells
    r = np.hypot(*np.meshgrid(np.arange(51) - 25, np.arange(51) - 25, indexing="ij"))
    per_cell = (hi.showers > 0).mean((0, 3))
    assert per_cell[r > 8].sum() > per_cell[r <= 8].sum()  # most hit cells lie beyond ~3.5 R_M
    lo = SIM.simulate(64, np.random.default_rng(6), energy_range=(2.0, 10.0))
    assert (lo.showers > 0).mean() < 0.03
    with_halo = hi.showers.sum((1, 2, 3)) / hi.conditions["energy"]
    monkeypatch.setattr(sim, "HALO_PER_GEV", 0.0)
    no_halo = SIM.simulate(32, np.random.default_rng(5), energy_range=(450.0, 500.0))
    assert (no_halo.showers > 0).mean() < 0.04
    ratio = with_halo.mean() / (no_halo.showers.sum((1, 2, 3)) / no_halo.conditions["energy"]).mean()
    assert abs(ratio - 1) < 0.03


def test_image_centred_and_angle_measured(sample):
    x = sample.showers.astype(np.float64)
    w = x.sum((2, 3))
    xbar = (w * (np.arange(51) + 0.5)).sum(1) / w.sum(1)
    assert np.median(np.abs(xbar - 25.5)) < 0.05 and np.abs(xbar - 25.5).max() < 1.5  # tails leave the window
    ang = measured_angle(torch.as_tensor(x)).numpy()
    th = sample.conditions["theta"]
    good = sample.conditions["energy"] > 20
    assert np.corrcoef(ang[good], th[good])[0, 1] > 0.9
    assert np.degrees(np.abs(ang[good] - th[good])).mean() < 4


def test_measured_angle_on_a_hand_made_track():
    """One cell per layer drifting by k cells per layer: m = k, angle = pi/2 - atan(k) in every layer but
    the barycentre's own (z = z_ref = 12.5, zproj -> eps, m = 0, 90 deg: the paper's formula keeps it),
    weighted by z = i + 0.5 (sum 312.5): 90 - (90 - a) (1 - 12.5 / 312.5)."""
    for k, a in ((0, 90.0), (1, 45.0), (-1, 135.0)):
        expected = 90 - (90 - a) * (1 - 12.5 / 312.5)
        img = torch.zeros(1, 51, 51, 25, dtype=torch.float64)
        for z in range(25):
            img[0, 25, 25 + k * (z - 12), z] = 1.0
        assert math.degrees(float(measured_angle(img)[0])) == pytest.approx(expected, abs=1e-6)
    assert torch.isnan(measured_angle(torch.zeros(1, 51, 51, 25)))[0]


def test_barycentre_drift_on_hand_made_tracks():
    """A track drifting k cells per layer has slope k, whatever its energy profile along the layers;
    two cells per layer at y and y + 2 count as their barycentre; fewer than 4 non-empty layers: NaN."""
    img = torch.zeros(4, 51, 51, 25, dtype=torch.float64)
    for z in range(25):
        img[0, 25, 25 + (z - 12), z] = 1.0 + z  # k = 1, energy rising with depth
        img[1, 25, 12 + z // 2, z] = 3.0  # k = 1/2 in steps: the least-squares slope of floor(z / 2)
        img[2, 25, 30, z], img[2, 25, 32, z] = 1.0, 1.0  # k = 0, barycentre at 31.5
    img[3, 25, 25, :3] = 1.0
    slope = barycentre_drift(img)
    z = np.arange(25)
    assert float(slope[0]) == pytest.approx(1.0, abs=1e-12)
    assert float(slope[1]) == pytest.approx(np.polyfit(z, z // 2, 1)[0], abs=1e-12)
    assert float(slope[2]) == pytest.approx(0.0, abs=1e-12) and torch.isnan(slope[3])


def test_layer_y_barycentres_by_hand():
    """Layer 0: one cell at y index 3 (centre 3.5); layer 1 empty (0, off); layer 2: 1 GeV at y index 1
    and 3 GeV at y index 5 spread over two x columns: (1 x 1.5 + 3 x 5.5) / 4 = 4.5."""
    img = torch.zeros(1, 4, 8, 3)
    img[0, 0, 3, 0] = 2.0
    img[0, 1, 1, 2], img[0, 0, 5, 2], img[0, 2, 5, 2] = 1.0, 1.5, 1.5
    y_mid, on = layer_y_barycentres(img)
    assert y_mid.dtype == torch.float64 and y_mid.tolist() == [[3.5, 0.0, 4.5]]
    assert on.tolist() == [[True, False, True]]


def _write_3dgan(path, n, seed, degrees=False):
    d = SIM.simulate(n, np.random.default_rng(seed))
    with h5py.File(path, "w") as f:
        f["ECAL"] = d.showers
        f["energy"] = d.conditions["energy"].reshape(-1, 1)
        f["theta"] = np.degrees(d.conditions["theta"]) if degrees else d.conditions["theta"]
        f["eta"] = -np.log(np.tan(d.conditions["theta"] / 2))
    return d


def test_3dgan_layout_reads_lazily_and_through_the_catalog(tmp_path, monkeypatch):
    a = _write_3dgan(tmp_path / "EleEscan_RandomAngle_1_1.h5", 20, 1)
    b = _write_3dgan(tmp_path / "EleEscan_RandomAngle_1_2.h5", 12, 2)
    d = read_3dgan(tmp_path / "EleEscan_RandomAngle_1_1.h5")
    assert isinstance(d.showers, h5py.Dataset) and d.conditions["energy"].shape == (20,)
    np.testing.assert_array_equal(d.take([3, 1]).showers, a.showers[[3, 1]])
    sha = hashlib.sha256((tmp_path / "EleEscan_RandomAngle_1_2.h5").read_bytes()).hexdigest()
    (tmp_path / "ds.yaml").write_text(
        "lcd_files:\n  layout: lcd_3dgan\n  splits:\n"
        f"    train: {{files: [{{path: {tmp_path}/EleEscan_RandomAngle_1_1.h5}}, "
        f"{{path: {tmp_path}/EleEscan_RandomAngle_1_2.h5, sha256: '{sha}'}}]}}\n"
        f"    test: {{files: [{{path: {tmp_path}/EleEscan_RandomAngle_1_2.h5}}]}}\n")
    monkeypatch.setenv("CALOBENCH_CACHE", str(tmp_path / "cache"))
    cat = Catalog(get_plugins().registry, [tmp_path / "ds.yaml"])
    train = cat.get("lcd_files").load("train")
    assert len(train) == 32 and not isinstance(train.showers, np.ndarray)  # two files, still on disk
    np.testing.assert_array_equal(train.take([25, 2, 19, 20]).showers, np.concatenate([b.showers[[5]], a.showers[[2, 19]], b.showers[[0]]]))
    np.testing.assert_array_equal(train.head(22).showers[20:], b.showers[:2])
    np.testing.assert_allclose(train.conditions["energy"], np.concatenate([a.conditions["energy"], b.conditions["energy"]]))
    assert ThreeDGAN.supports(calobench.DatasetInfo("lcd_files", train.geometry, {"energy": (2, 500), "theta": (1, 2)})) is None


def test_3dgan_layout_errors(tmp_path):
    with h5py.File(tmp_path / "nokey.h5", "w") as f:
        f["ECAL"] = np.zeros((2, 51, 51, 25), np.float32)
    with pytest.raises(calobench.CalobenchError, match="no 'energy', 'theta' dataset"):
        read_3dgan(tmp_path / "nokey.h5")
    with h5py.File(tmp_path / "shape.h5", "w") as f:
        f["ECAL"], f["energy"], f["theta"] = np.zeros((2, 25, 25, 25)), np.ones(2), np.ones(2)
    with pytest.raises(calobench.CalobenchError, match="expected \\(N, 51, 51, 25\\)"):
        read_3dgan(tmp_path / "shape.h5")
    _write_3dgan(tmp_path / "deg.h5", 3, 0, degrees=True)
    with pytest.raises(calobench.CalobenchError, match="looks like degrees"):
        read_3dgan(tmp_path / "deg.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(calobench.CalobenchError, match="not a readable HDF5"):
        read_3dgan(tmp_path / "junk.h5")


def test_networks_follow_the_paper_table():
    G, D = Generator(), Discriminator()
    assert G.grid == (8, 9, 9, 8) and G.dense.out_features == 5184
    shapes, h = [], G.dense(torch.randn(2, 256)).reshape(2, *G.grid)
    for layer in G.body:
        h = layer(h)
        if isinstance(layer, (torch.nn.Conv3d, torch.nn.Upsample)):
            shapes.append(tuple(h.shape[2:]))
    assert shapes == [(54, 54, 48), (49, 49, 41), (50, 50, 38), (51, 51, 35), (52, 52, 32), (52, 52, 28),
                      (52, 52, 26), (51, 51, 25)]
    assert (h >= 0).all()
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bns) == 5 and all(m.eps == 1e-6 for m in bns)
    assert sum(p.numel() for p in G.parameters()) == 1_364_983  # documented in the plugin README
    logit, aux = D(torch.rand(2, 51, 51, 25))
    assert logit.shape == aux.shape == (2,) and D.fake.in_features == 8 * 19 * 18 * 7
    assert sum(isinstance(m, torch.nn.AvgPool3d) for m in D.modules()) == 1
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in D.modules()) == 4
    assert Generator(0.5, (25, 25, 25))(torch.randn(1, 256)).shape == (1, 25, 25, 25)


def test_model_rejects_other_geometries_and_missing_conditions():
    hg = calobench.DatasetInfo("hgcal", calobench.Geometry(shape=(12, 15, 7)), {"energy": (20, 90)})
    assert "needs 51x51x25" in ThreeDGAN.supports(hg)
    info = calobench.DatasetInfo("lcd", SIM.geometry(), SIM.condition_ranges())
    m = ThreeDGAN(info, ThreeDGAN.config_for("smoke"), torch.device("cpu"))
    with pytest.raises(calobench.CalobenchError, match="missing theta"):
        m.sample({"energy": np.array([50.0])})
    out = m.sample({"energy": np.array([50.0, 400.0]), "theta": np.radians([70.0, 110.0])})
    assert out.shape == (2, 51, 51, 25) and (out[:, :13] == 0).all()  # the 25-cell crop, padded back
    with pytest.raises(calobench.CalobenchError, match="crop must be"):
        ThreeDGAN(info, ThreeDGAN.config_for("smoke", {"crop": 24}), torch.device("cpu"))


EXE = shutil.which("calobench", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_smoke_run_end_to_end(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("lcd:\n  simulator: lcd\n  splits:\n    train: {n: 96, seed: 1}\n"
                     "    validation: {n: 16, seed: 2}\n    test: {n: 48, seed: 3}\n    reference: {n: 48, seed: 4}\n")
    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache"), "CALOBENCH_DATASETS": str(small)}
    r = subprocess.run([EXE, "run", "--model", "3dgan", "--dataset", "lcd", "--preset", "smoke", "--quiet",
                        "--metrics", "wasserstein,mre"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run, = (tmp_path / "runs").glob("lcd__3dgan__smoke-*__seed0")
    rec = json.loads((run / "record.json").read_text())
    assert rec["metrics"]["mre"]["status"] == "ok" and rec["train"]["phases"] == {"train": 2, "calibrate_hits": 1, "calibrate": 1}
    for png in ("lcd_sampling_fraction.png", "lcd_shower_shapes.png", "lcd_cell_spectrum_sparsity.png",
                "lcd_measured_angle.png", "lcd_correlations.png", "lcd_projections.png"):
        assert (run / "plots" / png).exists()
    assert not (tmp_path / "leaderboard").exists()


def test_paper_checks_pass_real_vs_real_and_catch_a_miscalibration():
    from calobench.checks import CheckContext
    from calobench_lcd.checks import LCDPaperChecks

    info = calobench.DatasetInfo("lcd", SIM.geometry(), SIM.condition_ranges())
    real, real2 = SIM.simulate(1500, np.random.default_rng(1)), SIM.simulate(1500, np.random.default_rng(2))
    good = [r.to_dict() for r in LCDPaperChecks().evaluate(CheckContext(info, real, real2))]
    names = {e["name"] for e in good}
    assert {"sampling_fraction_2-52GeV", "hits_450-500GeV", "sampling_fraction_theta90", "angle_mae"} <= names
    assert len(names) == 10 * 2 + 3 + 1
    assert all(e["pass"] for e in good), [e for e in good if not e["pass"]]
    low = calobench.ShowerData(real2.array() * 0.9, real2.conditions, real2.geometry)  # -10 % energy
    bad = {r.name: r for r in LCDPaperChecks().evaluate(CheckContext(info, real, low))}
    assert not any(r.passed for k, r in bad.items() if k.startswith("sampling_fraction"))
    assert bad["angle_mae"].passed  # a pure energy scale does not move the angle


def test_paper_preset_trains_the_papers_two_stages():
    """Khattak et al. 2021, training section: 130 epochs on 100-200 GeV, then 30 epochs on the
    full 2-500 GeV range from those weights; full 51 x 51 x 25 images, batch 64."""
    from calobench_lcd.model import ThreeDGAN

    c = ThreeDGAN.config_for("paper")
    assert [(s["energy"], s["epochs"]) for s in c["stages"]] == [((100.0, 200.0), 130), (None, 30)]
    assert c["crop"] is None and c["batch"] == 64 and c["width"] == 1.0 and c["select_every"] == "epoch"


def test_sampling_calibration_recovers_a_known_miscalibration():
    """SamplingCalibration: generated sampling fractions off by a smooth factor of (E_p, theta) (here x(0.6 +
    0.1 log E) x (1 + 0.3 (theta - 90 deg))) are brought back to the real ones by the ratio of the two fits."""
    from calobench_lcd.model import SamplingCalibration

    rng = np.random.default_rng(0)
    e, th = rng.uniform(2, 500, 4000), np.radians(rng.uniform(60, 120, 4000))
    sf_real = 0.02 * (1 + 0.02 * rng.standard_normal(4000))
    off = (0.6 + 0.1 * np.log(e)) * (1 + 0.3 * (th - math.pi / 2))
    cal = SamplingCalibration()
    np.testing.assert_array_equal(cal.factor(e[:3], th[:3]), 1.0)  # not set: the identity
    cal.set((e[:1000], th[:1000], sf_real[:1000]), (e, th, sf_real * off))
    np.testing.assert_allclose(cal.factor(e, th) * off, 1.0, rtol=0.03)


def test_3dgan_calibrate_response_matches_the_validation_sampling_fraction():
    """calibrate_response: after training, the factor found on validation showers brings the generated
    sampling fraction per E_p bin onto theirs; it is saved with the weights and applied in sample()."""
    from calobench_lcd.model import _sf_error

    info = calobench.DatasetInfo("lcd", SIM.geometry(), SIM.condition_ranges())
    val = SIM.simulate(200, np.random.default_rng(5))
    m = ThreeDGAN(info, ThreeDGAN.config_for("smoke", {"calibrate_response": True}), torch.device("cpu"))
    found = m.calibrate(val, torch.Generator().manual_seed(0))
    assert found["sf_error_after"] < 0.5 * found["sf_error_before"]
    e, th = val.conditions["energy"], val.conditions["theta"]
    sf_real = val.array().sum((1, 2, 3)) / e
    torch.manual_seed(1)
    sf_gen = m.sample(val.conditions).sum((1, 2, 3)) / e
    assert _sf_error(e, sf_real, e, sf_gen) < 0.5 * found["sf_error_before"]
    state = m.state_dict()
    assert any(k.startswith("calibration.") for k in state)
    m2 = ThreeDGAN(info, ThreeDGAN.config_for("smoke", {"calibrate_response": True}), torch.device("cpu"))
    m2.load_state_dict(state)
    np.testing.assert_allclose(m2.nets["calibration"].factor(e, th), m.nets["calibration"].factor(e, th))


def _blobs(theta, k, X=25, Y=25, Z=25):
    """Hand-made showers: per layer a Gaussian spot (sigma 1.5 cells) whose y centre drifts by
    k cot(theta) cells per layer about the middle layer; energy falling with depth."""
    x, y, z = np.arange(X) + 0.5, np.arange(Y) + 0.5, np.arange(Z)
    cot = 1 / np.tan(np.asarray(theta))
    yc = Y / 2 + cot[:, None] * k * (z - (Z - 1) / 2)  # [N, Z]
    gx = np.exp(-0.5 * ((x - X / 2) / 1.5) ** 2)
    gy = np.exp(-0.5 * ((y[None, :, None] - yc[:, None, :]) / 1.5) ** 2)  # [N, Y, Z]
    return torch.as_tensor(gx[None, :, None, None] * gy[:, None] * np.exp(-z / 10)[None, None, None], dtype=torch.float32)


def test_tilt_measures_the_drift_and_shears_a_vertical_shower_onto_it():
    """tilt: the shear is the identity until measured; measured on hand-made showers drifting 0.75
    cot(theta) cells per layer it finds k = 0.75 (and no offset), and applied to vertical showers it
    gives them that drift, so the paper's measured angle follows theta; gradients pass through."""
    from calobench_lcd.model import Tilt

    theta = np.radians(np.linspace(62, 118, 40))
    tilted, vertical = _blobs(theta, 0.75), _blobs(np.full(40, np.pi / 2), 0.75)
    t = Tilt()
    th = torch.as_tensor(theta, dtype=torch.float32)
    torch.testing.assert_close(t(vertical, th), vertical)
    found = t.measure(tilted, theta)
    assert found["tilt_k"] == pytest.approx(0.75, rel=0.02) and abs(found["tilt_b"]) < 0.05
    assert found["tilt_corr"] > 0.99
    out = t(vertical, th)
    drift = barycentre_drift(out).numpy()
    np.testing.assert_allclose(drift, 0.75 / np.tan(theta), atol=0.03)
    np.testing.assert_allclose(out.numpy(), tilted.numpy(), atol=0.06)  # linear interpolation smooths a peak of 1 by < 6 %
    u = vertical.clone().requires_grad_(True)
    t(u, th).sum().backward()
    assert u.grad is not None and float(u.grad.abs().sum()) > 0


def test_3dgan_tilt_is_measured_in_fit_and_saved_with_the_weights():
    info = calobench.DatasetInfo("lcd", SIM.geometry(), SIM.condition_ranges())
    cfg = ThreeDGAN.config_for("smoke", {"tilt": True})
    m = ThreeDGAN(info, cfg, torch.device("cpu"))
    trainer = calobench.Trainer(progress=False, seed=0)
    trainer.bind(m)
    train = SIM.simulate(64, np.random.default_rng(3))
    m.fit(train, trainer, validation=SIM.simulate(16, np.random.default_rng(4)))
    k = float(m.nets["tilt"].k)
    assert 0.5 < k < 1.0  # the simulator drifts ~0.75 cot(theta) cells per layer (benchmarks/inclination.py)
    assert any("tilt_k" in h for h in trainer.history)
    m2 = ThreeDGAN(info, cfg, torch.device("cpu"))
    m2.load_state_dict(m.state_dict())
    assert float(m2.nets["tilt"].k) == k
    assert m2.sample({"energy": np.array([50.0]), "theta": np.array([1.2])}).shape == (1, 51, 51, 25)


def test_hit_offset_by_hand():
    """find_delta: five showers with non-zero cells at u = 0.05, 0.1, ..., 0.5 (network scale) and a hit
    threshold 0.3: at delta 0 each has 4 hits (0.35 .. 0.5); 6 hits needs 0.3 and 0.25 to cross, a delta
    just over 0.05; 2 hits, 0.4 and 0.35 to fall under, a delta just over -0.15. The net moves only the
    non-zero cells, never below 0."""
    from calobench_lcd.model import HitCalibration

    u = torch.zeros(5, 4, 4, 4, dtype=torch.float64)
    u.view(5, -1)[:, :10] = torch.arange(1, 11, dtype=torch.float64) * 0.05
    def hits(d):
        return float(((u > 0) & (u + d > 0.3)).sum()) / len(u)

    for target, expected in ((6.0, 0.05), (2.0, -0.15)):
        d = HitCalibration.find_delta(u, 0.3, target)
        assert abs(d - expected) < 1e-9 and hits(d) == target and hits(d - 1e-6) < target
    assert HitCalibration.find_delta(u, 0.3, 5.5) == HitCalibration.find_delta(u, 0.3, 6.0)  # a mean target
    assert HitCalibration.find_delta(u, 0.3, 50.0) == 0.3  # more than the non-zero cells: the cap
    h = HitCalibration(2)
    energy = torch.tensor([10.0, 100.0, 1000.0])
    torch.testing.assert_close(h(u[:3], energy), u[:3])  # not set: the identity
    h.set([10.0, 100.0], [0.1, -0.1])
    out = h(u[:3], energy)
    assert float(out[0].view(-1)[0]) == pytest.approx(0.15) and float(out[0].view(-1)[-1]) == 0  # zero stays zero
    assert float(out[1].view(-1)[1]) == pytest.approx(0.0) and float(out[1].view(-1)[9]) == pytest.approx(0.4)
    assert float(out[2].view(-1)[0]) == 0  # beyond the last knot: its delta, clamped at 0


def test_3dgan_calibrate_hits_matches_the_validation_hits_and_travels_with_the_weights():
    """A stand-in generator that returns each validation label's own shower at 0.4 of its energy (so it
    lacks the 0.2-0.5 MeV hits): the calibration finds a positive offset per energy bin, and sample()
    then has the validation hit count within a few per cent; the offsets are saved with the weights."""
    from calobench_lcd.checks import HIT_THRESHOLD_GEV

    info = calobench.DatasetInfo("lcd", SIM.geometry(), SIM.condition_ranges())
    cfg = ThreeDGAN.config_for("smoke", {"calibrate_hits": True, "hit_bins": 2, "calibrate_response": False,
                                         "calibrate_spread": False})
    m = ThreeDGAN(info, cfg, torch.device("cpu"))
    val = SIM.simulate(64, np.random.default_rng(5))
    faint = m.to_net(torch.as_tensor(m.crop(val.array() * 0.4)))
    energy = val.conditions["energy"]
    m.generate_net = lambda e, th, generator=None: faint[[int(np.argmin(np.abs(energy - v))) for v in e.tolist()]]
    found = m.calibrate_hits(val, torch.Generator().manual_seed(0))
    deltas = [v for k, v in found.items() if k.startswith("delta_")]
    assert len(deltas) == 2 and all(d > 0 for d in deltas)
    real = (val.array() > HIT_THRESHOLD_GEV).sum((1, 2, 3)).astype(float)
    before = (m.from_net(faint) > HIT_THRESHOLD_GEV).sum((1, 2, 3)).double().mean().item()
    after = (m.sample(val.conditions) > HIT_THRESHOLD_GEV).sum((1, 2, 3)).mean()
    assert before < 0.9 * real.mean() and abs(after / real.mean() - 1) < 0.05
    m2 = ThreeDGAN(info, cfg, torch.device("cpu"))
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.nets["hits"].delta, m.nets["hits"].delta)


def test_spread_calibration_maps_generated_totals_onto_the_real_quantiles():
    """SpreadCalibration: real ratios to the mean 1 + w(E) z with a width falling from 10 % at 2 GeV to 3 % at
    500 GeV, generated ones log-normal with sigma 0.5 (skewed, ~10x wider): mapped through the quantiles they
    have the real width and mean in every E_p slice, each shower keeps its rank, and until set (or for an
    empty shower) the factor is 1."""
    from calobench_lcd.model import SpreadCalibration

    rng = np.random.default_rng(0)
    n = 40_000
    e = np.exp(rng.uniform(np.log(2), np.log(500), n))
    width = 0.10 - 0.07 * np.log(e / 2) / np.log(250)
    real = 1 + width * rng.standard_normal(n)
    gen = np.exp(0.5 * rng.standard_normal(n) - 0.125)
    cal = SpreadCalibration(8)
    np.testing.assert_array_equal(cal.factor(e[:3], gen[:3]), 1.0)
    cal.set((e, real), (e, gen))
    fresh = np.exp(0.5 * rng.standard_normal(n) - 0.125)  # other generated showers than those fitted
    mapped = cal.mapped(e, fresh)
    for lo, hi in ((2, 4), (20, 30), (300, 500)):
        s = (e >= lo) & (e < hi)
        assert mapped[s].mean() == pytest.approx(1.0, abs=0.01)
        assert mapped[s].std() == pytest.approx(width[s].mean(), rel=0.15)
        at = cal.mapped(np.full(n, (lo * hi) ** 0.5), np.sort(fresh))
        assert np.all(np.diff(at) >= 0)  # at one E_p the map is monotone: each shower keeps its rank
    np.testing.assert_allclose(cal.factor(e, fresh) * fresh, mapped)
    assert cal.factor([10.0], [0.0])[0] == 1.0


def test_3dgan_calibrate_spread_narrows_the_generated_totals_and_travels_with_the_weights():
    """A stand-in generator that returns each validation label's own shower scaled by a log-normal factor
    (sigma 0.4, several times the real sampling-fraction spread): calibrate() with calibrate_spread reports
    the spread before and after, sample() then has the validation spread within 30 % and its mean sampling
    fraction within a few per cent; the maps are saved with the weights."""
    info = calobench.DatasetInfo("lcd", SIM.geometry(), SIM.condition_ranges())
    cfg = ThreeDGAN.config_for("smoke", {"calibrate_spread": True, "spread_bins": 2, "calibrate_hits": False,
                                         "calibrate_draws": 8})
    m = ThreeDGAN(info, cfg, torch.device("cpu"))
    val = SIM.simulate(200, np.random.default_rng(5))
    energy = val.conditions["energy"]
    showers = torch.as_tensor(m.crop(val.array()))
    rng = np.random.default_rng(1)

    def stand_in(e, th, generator=None):
        idx = [int(np.argmin(np.abs(energy - v))) for v in e.tolist()]
        scale = torch.as_tensor(np.exp(0.4 * rng.standard_normal(len(idx))), dtype=showers.dtype)
        return m.to_net(showers[idx] * scale.reshape(-1, 1, 1, 1))

    m.generate_net = stand_in
    found = m.calibrate(val, torch.Generator().manual_seed(0))
    assert found["spread_before"] > 3 and found["spread_after"] < 1.3
    sf_real = val.array().sum((1, 2, 3)) / energy
    sf_gen = m.sample(val.conditions).sum((1, 2, 3)) / energy
    assert sf_gen.std() / sf_real.std() < 1.3 and abs(sf_gen.mean() / sf_real.mean() - 1) < 0.05
    with pytest.raises(Exception, match="calibrate_spread"):
        ThreeDGAN(info, ThreeDGAN.config_for("smoke", {"calibrate_spread": True, "calibrate_response": False}),
                  torch.device("cpu"))
    m2 = ThreeDGAN(info, cfg, torch.device("cpu"))
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.nets["spread"].q_real, m.nets["spread"].q_real)
