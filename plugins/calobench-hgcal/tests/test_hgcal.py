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


def conv_shapes(layers, h):
    out = []
    for layer in layers:
        h = layer(h)
        if isinstance(layer, (torch.nn.ConvTranspose2d, torch.nn.Conv2d, torch.nn.Conv3d)):
            out.append((layer.out_channels, *h.shape[2:]))
    return out, h


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_generator_follows_our_reading_of_the_table():
    """The paper's generator table as the plugin README reads it (width 1): per tower dense 10,
    dense 192, reshape 16 x 3 x 4, three transposed convs kernel 3 stride 2 with 16 / 32 / 64 maps
    (6 x 8, 12 x 16, 24 x 32); after the concatenation the 5 x 6 valid conv (20 x 27), then
    (3,5), (3,5), (3,3) valid convs and the locally connected 3 x 3 layer to 12 x 15 x 7."""
    G = Generator(torch.as_tensor(MASK), width=1.0)
    z, lab = torch.rand(2, 10) * 2 - 1, torch.rand(2, 3)
    t = G.towers[0]
    assert [m.out_features for m in t.dense if isinstance(m, torch.nn.Linear)] == [10, 192]
    ups = [m for m in t.up if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.kernel_size, m.stride) for m in ups] == [((3, 3), (2, 2))] * 3
    shapes, h = conv_shapes(t.up, t.dense(torch.cat([z, lab], 1)).reshape(2, 16, 3, 4))
    assert shapes == [(16, 6, 8), (32, 12, 16), (64, 24, 32)]
    shapes, h = conv_shapes(G.body, torch.cat([tw(torch.cat([z, lab], 1)) for tw in G.towers], 1))
    assert G.body[0].in_channels == 7 * 64 and G.body[0].kernel_size == (5, 6)
    assert shapes == [(64, 20, 27), (64, 18, 23), (32, 16, 19), (16, 14, 17)]
    out = G(z, lab)
    assert out.shape == (2, 12, 15, 7) and (out >= 0).all()
    assert (out[:, torch.as_tensor(~MASK)] == 0).all()
    assert n_params(G) == 1_333_760  # documented in the plugin README


def test_bounded_output_never_exceeds_its_ceiling():
    G = Generator(torch.as_tensor(MASK), width=0.25, output="bounded")
    G.u_max.fill_(1.5)
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(50)  # a wildly saturated generator
        out = G(torch.rand(64, 10) * 2 - 1, torch.rand(64, 3))
    assert out.max() <= 1.5 and out.min() >= 0 and out.max() > 1.4


def test_total_output_draws_the_shower_energy_first():
    """output=total: the cells are fractions of a total drawn by the energy head, so before the readout
    threshold a shower's cells sum to exactly that total (dead cells stay empty)."""
    G = Generator(torch.as_tensor(MASK), width=0.25, output="total")
    G.total_ref.fill_(2600.0), G.cell_unit.fill_(2.0)
    z, lab = torch.rand(8, 10) * 2 - 1, torch.rand(8, 3)
    with torch.no_grad():
        cells = torch.expm1(4 * G(z, lab)) * 2.0
        total = 2600.0 * torch.exp(G.total(torch.cat([z, lab], 1)))[:, 0]
    assert torch.allclose(cells.sum((1, 2, 3)), total, rtol=1e-3)
    assert (cells[:, torch.as_tensor(~MASK)] == 0).all()
    with pytest.raises(ValueError, match="output must be"):
        Generator(torch.as_tensor(MASK), output="sigmoid")


def test_leak_passes_a_gradient_to_switched_off_cells_and_leaves_the_output_alone():
    """leak: the output is the ReLU's (switched-off cells read exactly zero, bit for bit the leak-0
    generator), but a switched-off live cell's gradient reaches the network (with leak 0 it does not)."""
    torch.manual_seed(0)
    G = Generator(torch.as_tensor(MASK), width=0.25, output="total", leak=0.1)
    G0 = Generator(torch.as_tensor(MASK), width=0.25, output="total")
    G0.load_state_dict(G.state_dict())
    z, lab = torch.rand(8, 10) * 2 - 1, torch.rand(8, 3)
    u, u0 = G(z, lab), G0(z, lab)
    assert torch.equal(u, u0)
    live = torch.as_tensor(MASK)
    off = (u[0][live] == 0).nonzero()[0, 0]  # a live cell the untrained generator switched off
    u[0][live][off].backward(), u0[0][live][off].backward()
    grad = G.local.weight.grad.abs().sum()
    assert grad > 0 and (G0.local.weight.grad is None or G0.local.weight.grad.abs().sum() == 0)


def test_likelihood_total_head_is_a_gaussian_in_log_total_fitted_by_its_nll_alone():
    """total_fit=likelihood: log(total / total_ref) = mu + sigma x eps, (mu, log sigma) from the labels and
    eps = sqrt(2) erfinv(z_0) a standard normal number; the cells' gradient never reaches the head (the total
    is detached), the NLL of real totals does, and minimising it recovers their mean and spread."""
    torch.manual_seed(0)
    G = Generator(torch.as_tensor(MASK), width=0.25, output="total", total_fit="likelihood")
    G.total_ref.fill_(2600.0), G.cell_unit.fill_(2.0)
    lab = torch.tensor([[0.5, 0.0, 0.0]]).repeat(20_000, 1)
    z = torch.rand(20_000, 10) * 2 - 1
    mu, log_sigma = G.total(lab[:1])[0].detach()
    log_t = G.log_total(z, lab)
    assert abs(float(log_t.mean() - mu)) < 0.03 * float(log_sigma.exp()) + 1e-3
    assert float(log_t.std() / log_sigma.exp()) == pytest.approx(1.0, abs=0.03)
    G(z[:8], lab[:8]).sum().backward()
    assert all(p.grad is None for p in G.total.parameters())
    real = 0.1 + 0.05 * torch.randn(4096)  # real log totals: mean 0.1, spread 0.05
    opt = torch.optim.Adam(G.total.parameters(), 1e-2)
    for _ in range(600):
        opt.zero_grad()
        G.total_nll(lab[:4096], real).backward()
        opt.step()
    mu, log_sigma = G.total(lab[:1])[0].detach()
    assert float(mu) == pytest.approx(0.1, abs=0.005) and float(log_sigma.exp()) == pytest.approx(0.05, rel=0.05)
    with pytest.raises(ValueError, match="total_fit must be"):
        Generator(torch.as_tensor(MASK), output="total", total_fit="moments")


def test_softmax_output_keeps_every_live_cell_above_zero():
    """output=softmax: the fractions are a softmax over the live cells, so before the readout threshold
    every live cell is above zero (its tail can grow over 2 MIP), dead cells stay empty, the cells sum
    to the drawn total, and a cell's gradient reaches the network even when it is tiny."""
    G = Generator(torch.as_tensor(MASK), width=0.25, output="softmax")
    G.total_ref.fill_(2600.0), G.cell_unit.fill_(2.0)
    z, lab = torch.rand(8, 10) * 2 - 1, torch.rand(8, 3)
    u = G(z, lab)
    cells = torch.expm1(4 * u.detach().double()) * 2.0
    total = 2600.0 * torch.exp(G.total(torch.cat([z, lab], 1)))[:, 0].detach().double()
    assert torch.allclose(cells.sum((1, 2, 3)), total, rtol=1e-3)
    live = torch.as_tensor(MASK)
    assert (cells[:, live] > 0).all() and (cells[:, ~live] == 0).all()
    smallest = u[0][live].argmin()
    u[0][live][smallest].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.local.parameters())


def test_critic_and_constrainers_follow_our_reading_of_the_tables():
    """Critic: labels -> dense 10 -> dense 180 (a 12 x 15 map), five 3 x 3 convs with layer norm
    (64, 64, 128 s2, 128, 128 s2), dense 10, dense 1, no batch norm. Constrainers: six 3-D convs
    (16, 16, pool, 32, 32, pool, 64, 64) with batch norm, flattened, one dense layer. The tables' own
    constrainer counts (175 k energy, 256 k position, as the issue quotes them) are not reached:
    the README lists it as an open difference."""
    D = Critic(1.0)
    assert [m.out_features for m in D.labels if isinstance(m, torch.nn.Linear)] == [10, 180]
    x, lab = torch.rand(2, 12, 15, 7), torch.rand(2, 3)
    shapes, _ = conv_shapes(D.convs, torch.cat([x.permute(0, 3, 1, 2), torch.rand(2, 1, 12, 15)], 1))
    assert shapes == [(64, 12, 15), (64, 12, 15), (128, 6, 8), (128, 6, 8), (128, 3, 4)]
    assert D(x, lab).shape == (2, 1)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)) for m in D.modules())
    assert n_params(D) == 501_753
    D8 = Critic(1.0, n_summaries=8)
    assert D8(x, lab, torch.rand(2, 8)).shape == (2, 1)
    for n_out, count in ((1, 219_409), (2, 223_442)):
        A = Constrainer(n_out, 1.0)
        shapes, y = conv_shapes(A.net, x[:, None])
        assert shapes == [(16, 12, 15, 7), (16, 12, 15, 7), (32, 6, 7, 7), (32, 6, 7, 7), (64, 3, 3, 7),
                          (64, 3, 3, 7)]
        assert y.shape == (2, n_out) and n_params(A) == count


def test_readout_cuts_at_two_mip_per_shower_and_passes_the_gradient():
    """The critic's view of generated showers: cells under the 2 MIP readout threshold read zero (in
    per-GeV cell units the threshold scales with the beam energy), yet every cell keeps a gradient
    (a plain cut starves an empty generator of any)."""
    info = calobench.DatasetInfo("hgcal", SIM.geometry(), SIM.condition_ranges())
    m = HGCALWGAN(info, HGCALWGAN.config_for("smoke"), torch.device("cpu"))
    assert m.config["per_gev"]
    energies = np.array([20.0, 80.0])
    lab = m._labels({"energy": energies, "impact_x": np.zeros(2), "impact_y": np.zeros(2)})
    cells_mip = torch.tensor([1.0, 1.9, 2.1, 50.0])  # true cells
    scale = torch.as_tensor(energies / 50.0, dtype=torch.float32).reshape(2, 1, 1, 1)
    u = m.to_net(cells_mip.reshape(1, 1, 1, 4) / scale).requires_grad_(True)  # the networks' cell units
    out = m.readout(u, lab)
    true = m.from_net(out.detach()) * scale
    assert torch.allclose(true[..., 2:], cells_mip[2:].expand(2, 1, 1, 2), rtol=1e-4)
    assert (true[..., :2] == 0).all()
    out.sum().backward()
    assert torch.equal(u.grad, torch.ones_like(u))
    # the constrainers see the true cells again
    assert torch.allclose(m.from_net(m.physical(u.detach(), lab)), cells_mip.expand(2, 1, 1, 4), rtol=1e-4)


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
    assert rec["train"]["phases"]["calibrate"] == 1  # the response calibration ran after the GAN phase
    factors = {k: v for h in rec["train"]["history"] for k, v in h.items() if k.startswith("factor_")}
    assert factors and all(1 / 16 < k < 16 for k in factors.values()), factors
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


def test_beam_groups_split_the_beam_energies_and_keep_a_spectrum_whole():
    from calobench_hgcal.model import beam_groups

    rng = np.random.default_rng(0)
    beams = rng.choice([20.0, 32.0, 50.0, 80.0, 90.0], 5000)
    e = beams * (1 + 0.01 * rng.standard_normal(5000))  # the dataset's 1 % smearing
    groups = beam_groups(e)
    assert [round(float(np.mean(beams[g]))) for g in groups] == [20, 32, 50, 80, 90]
    assert all((beams[g] == beams[g][0]).all() for g in groups) and sum(map(len, groups)) == 5000
    assert len(beam_groups(rng.uniform(20, 90, 5000))) == 1  # a flat spectrum: one group


def test_response_calibration_matches_validation_energy_per_beam_and_interpolates():
    """After calibrate(), showers generated for the validation labels carry the validation showers' mean
    visible energy at every beam energy (the threshold is applied after the factor); between beams the
    factor interpolates in log E; the buffers travel with the weights. The generator here draws simulator
    showers of the label's energy at 60 % of their cell energies, before the threshold: a generator whose
    response is low, most at low energy, as the default's was."""
    from calobench_hgcal.model import ResponseCalibration

    info = calobench.DatasetInfo("hgcal", SIM.geometry(), SIM.condition_ranges())
    cfg = {**HGCALWGAN.config_for("smoke"), "calibrate_response": True}
    m = HGCALWGAN(info, cfg, torch.device("cpu"))
    off = {**cfg, "calibrate_response": False}
    assert "calibration" not in HGCALWGAN(info, off, torch.device("cpu")).nets
    pool = {E: torch.as_tensor(SIM.simulate(300, np.random.default_rng(int(E)), energies=[E],
                                            energy_smear=0.0).array()) for E in (20.0, 50.0, 90.0)}

    class Low(torch.nn.Module):  # 0.6 x the cells of a simulated shower at the label's beam energy
        def forward(self, z, lab):
            E = lab[:, 0] * 100
            idx = torch.randint(0, 300, (len(lab),))
            x = torch.stack([pool[min(pool, key=lambda b: abs(b - float(e)))][i] for e, i in zip(E, idx)])
            return m.to_net(0.6 * x / m._energy_scale(lab))

    m.sampling_generator = Low
    val = SIM.simulate(1200, np.random.default_rng(5), energies=[20.0, 50.0, 90.0])
    torch.manual_seed(0)
    found = m.calibrate(val, torch.Generator().manual_seed(1))
    assert [round(e) for e in found["energy"]] == [20, 50, 90]
    assert all(k > 1 / 0.6 * 0.9 for k in found["factor"])
    for E in (20.0, 50.0, 90.0):
        sel = np.abs(val.conditions["energy"] - E) < 2
        cond = {k: v[sel] for k, v in val.conditions.items()}
        vis = np.concatenate([m.sample(cond) for _ in range(3)]).sum((1, 2, 3)).mean()
        assert vis == pytest.approx(val.array()[sel].sum((1, 2, 3)).mean(), rel=0.02)
    cal = m.nets["calibration"]
    k = cal.factor(torch.tensor([20.0, 35.0, 50.0, 10.0, 200.0]))
    k20, k50 = found["factor"][0], found["factor"][1]
    assert float(k[0]) == pytest.approx(k20, rel=1e-4) and float(k[2]) == pytest.approx(k50, rel=1e-4)
    w = (np.log(35) - np.log(20)) / (np.log(50) - np.log(20))
    assert float(k[1]) == pytest.approx(k20 ** (1 - w) * k50 ** w, rel=1e-4)
    assert float(k[3]) == pytest.approx(k20, rel=1e-4) and float(k[4]) == pytest.approx(found["factor"][2], rel=1e-4)
    again = ResponseCalibration()
    again.load_state_dict(cal.state_dict())
    assert torch.equal(again.factor(torch.tensor([35.0])), cal.factor(torch.tensor([35.0])))
    with pytest.raises(calobench.CalobenchError, match="calibrate_response"):
        HGCALWGAN(info, off, torch.device("cpu")).calibrate(val)


def test_hit_summaries_count_real_hits_and_give_cells_under_the_threshold_a_gradient():
    info = calobench.DatasetInfo("hgcal", SIM.geometry(), SIM.condition_ranges())
    m = HGCALWGAN(info, {**HGCALWGAN.config_for("smoke"), "critic_hits": True}, torch.device("cpu"))
    assert m.nets["critic"].n_summaries == 15  # 7 layer sums, the total, 7 hit counts
    real = SIM.simulate(50, np.random.default_rng(3))
    lab = m._labels(real.conditions)
    u = m.to_net(torch.as_tensor(real.array()) / m._energy_scale(lab))
    soft = torch.expm1(4 * m.hit_summaries(u, lab))
    hard = torch.as_tensor((real.array() > 0).sum((1, 2)), dtype=torch.float32)
    assert torch.allclose(soft, hard, rtol=0.08, atol=3.0), (soft - hard).abs().max()
    under = (m._threshold_net(lab).reshape(-1, 1, 1, 1) - 0.01).expand(50, 12, 15, 7).clone().requires_grad_(True)
    m.hit_summaries(under, lab).sum().backward()
    assert (under.grad > 0).all()
    # a short training run with the option on
    train = SIM.simulate(64, np.random.default_rng(4))
    m.fit(train, calobench.Trainer(progress=False))
