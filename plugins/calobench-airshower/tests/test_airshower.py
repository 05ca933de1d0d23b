"""Air-shower plugin: simulator physics and pairing, network shapes, smoke runs, metrics."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import calobench
from calobench import DatasetInfo, MetricContext
from calobench_airshower.metrics import RefinementUtility, RefinementUtilityData, RefinementUtilitySim
from calobench_airshower.nets import PatternCritic, PatternGenerator, Refiner, TraceAixNet, from_net, to_net
from calobench_airshower.simulator import (NOISE_VEM, SATURATION_VEM, VARIANTS, ZERO_SUPPRESSION_VEM,
                                           AirShowerSimulator, event_geometry, ldf, readout, simulate_block)

SIM = AirShowerSimulator()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CALOBENCH_CACHE", str(tmp_path / "cache"))


def mean_time_per_station(x):
    t = np.arange(x.shape[-1])
    return (x * t).sum(-1) / x.sum(-1)


def test_deterministic_paired_and_physical():
    d1 = SIM.simulate(300, np.random.default_rng(3), variant="data")
    d2 = SIM.simulate(300, np.random.default_rng(3), variant="data")
    s = SIM.simulate(300, np.random.default_rng(3), variant="sim")
    np.testing.assert_array_equal(d1.showers, d2.showers)
    assert d1.showers.shape == (300, 9, 9, 80) and d1.showers.min() >= 0
    np.testing.assert_array_equal(d1.conditions["energy"], s.conditions["energy"])  # paired
    both = (d1.showers.sum(-1) > 0) & (s.showers.sum(-1) > 0)  # EM arrives later; data is EM-rich
    assert np.median(mean_time_per_station(d1.showers[both]) - mean_time_per_station(s.showers[both])) > 0
    # energy is read off the lateral distribution away from the core (the 5th-largest station)
    fifth = np.sort(d1.showers.sum(-1).reshape(300, -1), 1)[:, -5]
    assert np.corrcoef(np.log1p(fifth), np.log(d1.conditions["energy"]))[0, 1] > 0.7
    # the muon-rich simulation has the flatter lateral distribution: more stations read out
    assert ((s.showers.sum(-1) > 0).sum() > (d1.showers.sum(-1) > 0).sum())


def test_array_scales_of_a_real_surface_detector():
    """Lateral slope, signal at 1000 m, trigger, saturation and pedestal on the scales the README states."""
    for comp, slope in (("muon", -2.6), ("em", -4.2)):  # log-log slope at 1000 m, and 1 at 1000 m
        assert ldf(np.array([1000.0]), comp)[0] == pytest.approx(1.0)
        local = np.log(ldf(np.array([1010.0]), comp) / ldf(np.array([990.0]), comp))[0] / np.log(1010 / 990)
        assert local == pytest.approx(slope, abs=0.01)
    n = 3000
    x, E = simulate_block(n, np.random.default_rng(5))
    E2, _, r = event_geometry(n, np.random.default_rng(5))  # the simulator's own first draws: exact distances
    np.testing.assert_array_equal(E, E2)
    S = x.sum(-1)
    sel = (r > 900) & (r < 1100) & (np.abs(E - 10)[:, None, None] < 2)
    assert 40 < np.median(S[sel]) < 65  # tens of VEM at 1000 m for 10 EeV (54 VEM expected)
    assert S[S > 0].min() >= 3.0 and x.min() >= 0 and x.max() <= SATURATION_VEM
    assert 1e3 < np.median(S.reshape(n, -1).max(1)) < 1e4  # the largest station: saturation scale
    quiet = readout(np.zeros((2000, 80), np.float32), np.full(2000, 0.05, np.float32), np.random.default_rng(0))
    assert quiet.sum() == 0  # noise alone never triggers a station: no pedestal
    lit = np.ones((4000, 80), np.float32)  # 1 VEM a bin: read out, noise on top
    spread = {v: readout(lit, np.full(4000, NOISE_VEM * VARIANTS[v]["noise"], np.float32),
                         np.random.default_rng(0)).std() for v in ("data", "sim")}
    assert spread["data"] / spread["sim"] == pytest.approx(2.0, rel=0.05)  # simulation: half the noise
    assert ZERO_SUPPRESSION_VEM == pytest.approx(0.15)


def test_simulation_mismodels_the_muon_number():
    """Same EM part, 5.4x the muons (70 % of the simulated signal at 1000 m vs data's 30 %):
    the simulated signal at 1000 m is 2.33x data's on paired events, so an energy scale learnt
    on simulation misreads data (the premise of the refiner)."""
    assert VARIANTS["sim"]["em"] == VARIANTS["data"]["em"] == pytest.approx(0.7)
    for v, frac in (("data", 0.3), ("sim", 0.7)):
        assert VARIANTS[v]["muon"] / (VARIANTS[v]["muon"] + VARIANTS[v]["em"]) == pytest.approx(frac)
    n = 3000
    d = simulate_block(n, np.random.default_rng(6), "data")[0].sum(-1)
    s = simulate_block(n, np.random.default_rng(6), "sim")[0].sum(-1)
    E, _, r = event_geometry(n, np.random.default_rng(6))
    sel = (r > 900) & (r < 1100) & (d > 0) & (s > 0)
    assert np.median(s[sel] / d[sel]) == pytest.approx(0.7 / 0.3, rel=0.15)


def test_pattern_view_is_time_integrated():
    p = SIM.simulate(20, np.random.default_rng(4), view="pattern")
    t = SIM.simulate(20, np.random.default_rng(4))
    assert p.showers.shape == (20, 9, 9)
    np.testing.assert_allclose(p.showers, t.showers.sum(-1), rtol=1e-5)


def test_unknown_variant():
    with pytest.raises(calobench.CalobenchError, match="variant"):
        SIM.simulate(2, np.random.default_rng(0), variant="mc")


def test_network_shapes():
    u = to_net(torch.rand(2, 9, 9, 80) * 100)
    assert Refiner(0.25)(u).shape == (2, 9, 9, 80)
    assert TraceAixNet(0.25)(u).shape == (2,)
    z = torch.randn(3, 80)
    g = PatternGenerator(80, 0.25)
    g.eval()
    out = g(z, torch.rand(3))
    assert out.shape == (3, 9, 9) and (out >= 0).all()
    assert PatternCritic(0.25)(out).shape == (3, 1)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in PatternCritic().modules())
    x = torch.rand(4, 9, 9) * 1000
    torch.testing.assert_close(from_net(to_net(x)), x, rtol=1e-4, atol=1e-3)


def sparse_traces(n_events=6, lit=0.3, seed=0):
    """Net inputs of traces where a fraction ``lit`` of the stations carries signal, the rest exactly 0."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n_events, 9, 9, 80, generator=g) * 50 * (torch.rand(n_events, 9, 9, 1, generator=g) < lit)
    return to_net(s)


@pytest.mark.parametrize("which", ["critic", "refiner_gain", "refiner_log"])
def test_trace_networks_skip_dark_stations_without_changing_a_number(which):
    """The trace networks run their time convolutions on lit stations and once on an empty trace
    (``over_stations``): against the dense evaluation of every station, the outputs, the gradient on the
    input, the parameters' gradients, and those of a gradient penalty on the input (the critic's double
    backward) agree (in float64, to rounding)."""
    import calobench_airshower.nets as nets
    from calobench.training import gradient_penalty

    torch.manual_seed(1)
    if which == "critic":
        net = TraceAixNet(0.25, n_out=1, conditioned=True).double()
        inner = net.time.net
    else:
        net = Refiner(0.125, bound=0.2, gain=which == "refiner_gain").double()
        torch.nn.init.normal_(net.net[-1].weight, 0, 0.3)  # not the identity
        inner = net.net
    u = sparse_traces().double()
    log_e = torch.linspace(-1, 1, len(u), dtype=torch.float64)

    def evaluate(monkeypatch=None):
        x = u.clone().requires_grad_()
        out = net(x, log_e) if which == "critic" else net(x)
        (g_in,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        net.zero_grad()
        (out.square().sum() + gradient_penalty(out, x)).backward()
        return [out.detach(), g_in.detach()] + [p.grad.clone() for p in net.parameters()]

    sparse = evaluate()
    with pytest.MonkeyPatch.context() as mp:  # every station through the convolutions, as a plain network would
        mp.setattr(nets, "over_stations", lambda f, x: f(x))
        dense = evaluate()
    for a, b in zip(sparse, dense):
        assert float((a - b).abs().max()) <= 1e-9 * float(b.abs().max())
    assert bool((u.flatten(3) == 0).all(-1).any())  # there were dark stations to skip
    flat = u.reshape(-1, 1, 80)
    with torch.no_grad():
        torch.testing.assert_close(nets.over_stations(inner, flat), inner(flat), rtol=1e-12, atol=1e-12)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_refiner_is_table_3():
    """Table 3 (the refiner): 1x1x7 convolutions to 64 maps, 3 residual blocks, a 1x1x1
    convolution to one map; 202 k parameters (reading: the 1 -> 64 convolution, seven 64 -> 64
    convolutions of kernel 7, the 64 -> 1 convolution of kernel 1 = 201 729)."""
    r = Refiner(1.0, skip=False)
    convs = [m for m in r.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in convs] == \
        [(1, 64, 7)] + [(64, 64, 7)] * 7 + [(64, 1, 1)]
    assert n_params(r) == 201_729
    u = to_net(torch.rand(2, 9, 9, 80) * 100)
    assert r(u).shape == u.shape and (r(u) >= 0).all()
    with pytest.raises(ValueError, match="skip"):
        Refiner(1.0, bound=0.2, skip=False)
    with pytest.raises(ValueError, match="needs skip=true"):  # the options say it before any network is built
        calobench.get_model("airshower_refiner").Options(bound=0.2, skip=False)


def test_pattern_critic_is_table_2():
    """Table 2 (the WGAN critic): 3x3 convolutions to 64, 128, 128 and 256 maps with LeakyReLU,
    global max pooling, dense 100, dense 1; 543 k parameters (reading: 543 049). The compact
    critic of the CPU presets drops the 256-map convolution and the dense 100 layer (222 209)."""
    table = PatternCritic(1.0, table=True)
    convs = [m for m in table.modules() if isinstance(m, torch.nn.Conv2d)]
    dense = [m for m in table.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in convs] == \
        [(1, 64, (3, 3)), (64, 128, (3, 3)), (128, 128, (3, 3)), (128, 256, (3, 3))]
    assert [(m.in_features, m.out_features) for m in dense] == [(256, 100), (100, 1)]
    assert n_params(table) == 543_049 and n_params(PatternCritic(1.0)) == 222_209
    assert table(torch.rand(3, 9, 9)).shape == (3, 1)
    model = calobench.get_model("airshower_wgan")
    assert model.presets["paper"].get("critic_layers", model.Options().critic_layers) == "table"


def test_refiner_starts_as_identity_and_bound_caps_the_residual():
    u = to_net(torch.rand(2, 9, 9, 80) * 100)
    torch.testing.assert_close(Refiner(0.125)(u), u)  # skip + zero-initialised last convolution
    r = Refiner(0.125, bound=0.2)
    torch.nn.init.constant_(r.net[-1].bias, 5.0)  # a residual far beyond the cap
    with torch.no_grad():
        out = r(u)
    assert float((out - u).max()) <= 0.2 + 1e-6 and float((out - u).min()) > 0.19


def test_refiner_gain_residual_scales_every_bin_alike():
    """residual=gain multiplies the signal by 10^(5 r); the log residual adds r to log10(1 + S) / 5, so a
    halving (r = -log10(2) / 5) zeroes every bin under 1 VEM and leaves a 999 VEM bin at 499."""
    s = torch.tensor([0.5, 0.9, 3.0, 999.0]).repeat(1, 9, 9, 20)
    u = to_net(s)
    r = -np.log10(2) / 5
    gain, log = Refiner(0.125, bound=0.2, gain=True), Refiner(0.125, bound=0.2)
    torch.testing.assert_close(gain(u), u, rtol=1e-5, atol=1e-6)  # an untrained refiner is the identity
    for net in (gain, log):  # the same residual r everywhere: tanh(x / 0.2) x 0.2 = r
        torch.nn.init.constant_(net.net[-1].bias, 0.2 * float(np.arctanh(r / 0.2)))
    with torch.no_grad():
        torch.testing.assert_close(from_net(gain(u)), s / 2, rtol=1e-4, atol=1e-4)
        halved_log = from_net(log(u))[0, 0, 0, :4]
    torch.testing.assert_close(halved_log, torch.tensor([0.0, 0.0, 1.0, 499.0]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="bound"):
        Refiner(0.125, gain=True)
    with pytest.raises(ValueError, match="residual=gain needs"):
        calobench.get_model("airshower_refiner").Options(skip=True, residual="gain")


def test_readout_of_refined_traces_is_the_arrays():
    """Zero suppression under 0.15 VEM, saturation at 200 VEM, no station under the 3 VEM trigger."""
    from calobench_airshower.nets import readout
    from calobench_airshower.simulator import SATURATION_VEM, TRIGGER_VEM, ZERO_SUPPRESSION_VEM

    s = torch.zeros(1, 9, 9, 80)
    s[0, 0, 0, :4] = torch.tensor([0.1, 0.2, 300.0, 1.0])  # -> 0, 0.2, 200, 1: read out
    s[0, 0, 1, :3] = torch.tensor([1.0, 1.0, 0.9])  # 2.9 VEM: under the trigger
    s[0, 0, 2, :3] = torch.tensor([1.0, 1.0, 1.0])  # 3 VEM: triggers
    s[0, 0, 3, :31] = 0.1  # 3.1 VEM, all of it under the zero suppression: nothing left
    out = readout(s, ZERO_SUPPRESSION_VEM, SATURATION_VEM, TRIGGER_VEM)
    torch.testing.assert_close(out[0, 0, 0, :4], torch.tensor([0.0, 0.2, 200.0, 1.0]), rtol=1e-4, atol=1e-4)
    assert float(out[0, 0, 1].sum()) == 0 and float(out[0, 0, 3].sum()) == 0
    torch.testing.assert_close(out[0, 0, 2, :3], torch.ones(3), rtol=1e-4, atol=1e-4)
    assert float(out[0, 1:].abs().sum()) == 0


@pytest.mark.parametrize("critic_energy", [False, True])
def test_refiner_learning_rates_decay_linearly_over_its_steps(critic_energy):  # balance with critic_energy
    """critic_lr trains the critic apart from the refiner; lr_decay sets both to base x (1 - step/steps);
    with critic_energy the critic takes the energy beside the traces."""
    from calobench.model import Trainer

    g = SIM.geometry()
    data = {"train": SIM.simulate(64, np.random.default_rng(1))}
    sim = {"train": SIM.simulate(64, np.random.default_rng(2), variant="sim")}
    target = DatasetInfo("airshower", g, {"energy": (1.0, 100.0)}, ["train"], loader=data.__getitem__).load("train")
    source = DatasetInfo("airshower_sim", g, {"energy": (1.0, 100.0)}, ["train"], loader=sim.__getitem__).load("train")
    model = calobench.get_model("airshower_refiner")(None, {"width": 0.125, "critic_width": 0.125, "batch": 4,
                                                             "n_critic": 1, "steps": 4, "warmup": 0, "skip": True,
                                                             "lr": 1e-3, "critic_lr": 4e-3, "lr_decay": True,
                                                             "critic_energy": critic_energy,
                                                             "balance": critic_energy}, "cpu")
    trainer = Trainer(seed=0)
    trainer.bind(model)
    model.fit(source, trainer, target=target)
    assert model.optimizers["refiner"].param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 3 / 4))
    assert model.optimizers["critic"].param_groups[0]["lr"] == pytest.approx(4e-3 * (1 - 3 / 4))
    u = to_net(torch.as_tensor(data["train"].showers[:3]))
    critic = model.nets["critic"]
    if critic_energy:  # the same traces judged at another energy score differently
        a, b = critic(u, torch.zeros(3)), critic(u, torch.ones(3))
        assert a.shape == (3,) and not torch.allclose(a, b)
    else:
        assert critic(u).shape == (3,)


def test_flat_in_log_energy_draws():
    """balance: events drawn with these weights are flat in log10(E), whatever the spectrum (here flat in E,
    where a plain draw puts 9 % of the events below 10 EeV)."""
    from calobench_airshower.models import flat_in_log_energy

    rng = np.random.default_rng(0)
    energy = rng.uniform(1, 100, 20_000)
    p = flat_in_log_energy(energy)
    assert p.shape == energy.shape and p.sum() == pytest.approx(1) and (p > 0).all()
    drawn = np.log10(energy[rng.choice(len(energy), 200_000, p=p)])
    assert np.mean(energy < 10) == pytest.approx(0.09, abs=0.01)
    assert np.mean(drawn < 1) == pytest.approx(0.5, abs=0.01)  # one decade of two
    counts = np.histogram(drawn, 10, (0, 2))[0] / len(drawn)
    np.testing.assert_allclose(counts, 0.1, atol=0.01)


def test_refinement_utility_mechanics():
    data = {"train": SIM.simulate(400, np.random.default_rng(1)), "test": SIM.simulate(400, np.random.default_rng(2))}
    sim = {"train": SIM.simulate(400, np.random.default_rng(11), variant="sim")}
    g = SIM.geometry()
    info = DatasetInfo("airshower", g, {"energy": (1.0, 100.0)}, ["train", "test"], loader=data.__getitem__,
                       key="as-test")
    src = DatasetInfo("airshower_sim", g, {"energy": (1.0, 100.0)}, ["train"], loader=sim.__getitem__, key="ass-test")
    ctx = MetricContext(dataset=info, seed=0, source=src)  # one context per scored pair, as the runner does
    raw = SIM.simulate(400, np.random.default_rng(2), variant="sim")
    other = SIM.simulate(400, np.random.default_rng(5))
    b1 = RefinementUtility().compute(data["test"], raw, ctx)
    b2 = RefinementUtility().compute(data["test"], other, MetricContext(dataset=info, seed=0, source=src))
    assert set(b1.artifacts["predictions"]) == {"true", "sim", "refined", "data"}  # for the run's plot
    for r in (b1, b2):
        assert set(r.details) >= {"sim", "refined", "data"} and r.details["n_train"] == 200
        assert np.isfinite(r.value) and r.uncertainty > 0
    # (a) and (c) do not depend on the refined sample (cached regressors); (b) does
    assert b1.details["sim"] == b2.details["sim"] and b1.details["data"] == b2.details["data"]
    assert b1.details["refined"] != b2.details["refined"]
    assert RefinementUtilitySim().compute(data["test"], raw, ctx).value == b1.details["sim"]["rms"]
    assert RefinementUtilityData().compute(data["test"], raw, ctx).value == b1.details["data"]["rms"]
    for k in ("sim", "refined", "data"):  # the value penalises bias: rms^2 = bias^2 + resolution^2
        d = b1.details[k]
        assert d["rms"] == pytest.approx(np.hypot(d["bias"], d["resolution"]), rel=1e-5)
    no_source = MetricContext(dataset=info, seed=0)
    with pytest.raises(calobench.CalobenchError, match="source dataset"):
        RefinementUtilitySim().compute(data["test"], raw, no_source)


EXE = shutil.which("calobench", path=os.path.dirname(sys.executable))
SMALL = """
airshower:
  simulator: airshower
  params: {variant: data}
  splits: {train: {n: 500, seed: 1}, test: {n: 300, seed: 3}, reference: {n: 300, seed: 4}}
airshower_sim:
  simulator: airshower
  params: {variant: sim}
  counterpart: airshower
  splits: {train: {n: 500, seed: 11}, test: {n: 300, seed: 3}}
airshower_other:
  simulator: airshower
  params: {variant: data}
  splits: {train: {n: 500, seed: 31}, test: {n: 300, seed: 3}}
airshower_pattern:
  simulator: airshower
  params: {variant: data, view: pattern}
  splits: {train: {n: 800, seed: 21}, test: {n: 300, seed: 23}, reference: {n: 300, seed: 24}}
"""


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
@pytest.mark.parametrize("model,dataset,metrics,plot", [
    ("airshower_refiner", "airshower_sim", "refinement_utility,refinement_utility_sim,refinement_utility_data,wasserstein",
     "airshower_paired_traces.png"),
    ("airshower_wgan", "airshower_pattern", "label_consistency,wasserstein", "airshower_patterns.png"),
])
def test_smoke_runs(tmp_path, model, dataset, metrics, plot):
    (tmp_path / "small.yaml").write_text(SMALL)
    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache"), "CALOBENCH_DATASETS": str(tmp_path / "small.yaml")}
    r = subprocess.run([EXE, "run", "--model", model, "--dataset", dataset, "--preset", "smoke", "--quiet",
                        "--metrics", metrics], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run, = (tmp_path / "runs").glob(f"{dataset}__{model}__smoke-*__seed0")
    rec = json.loads((run / "record.json").read_text())
    for m in metrics.split(","):
        assert rec["metrics"][m]["status"] == "ok", rec["metrics"][m]
    assert (run / "plots" / plot).exists()
    if model == "airshower_refiner":
        assert rec["task"] == "refine"
        assert (run / "plots" / "airshower_energy_reconstruction.png").exists()  # (a)/(b)/(c) E_rec vs E
        assert set(rec["metrics"]["refinement_utility"]["details"]) >= {"sim", "refined", "data"}


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_refine_towards_another_target(tmp_path):
    (tmp_path / "small.yaml").write_text(SMALL)
    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache"), "CALOBENCH_DATASETS": str(tmp_path / "small.yaml")}

    def run(*args):
        return subprocess.run([EXE, "run", "--preset", "smoke", "--quiet", "--no-plots", "--no-timing",
                               "--metrics", "wasserstein", *args], capture_output=True, text=True, env=env, cwd=tmp_path)

    r = run("--model", "airshower_refiner", "--dataset", "airshower_sim", "--target", "airshower_other")
    assert r.returncode == 0, r.stderr
    folder, = (tmp_path / "runs").glob("airshower_sim_to_airshower_other__airshower_refiner__smoke-*__seed0")
    rec = json.loads((folder / "record.json").read_text())
    assert (rec["dataset"], rec["source"], rec["target"]) == ("airshower_sim_to_airshower_other", "airshower_sim",
                                                              "airshower_other")
    assert not (tmp_path / "leaderboard").exists()  # a smoke run: no board
    for args, msg in [(("--model", "airshower_refiner", "--dataset", "airshower_sim", "--target", "airshower_pattern"),
                       "target 'airshower_pattern' has showers of shape (9, 9)"),
                      (("--model", "airshower_wgan", "--dataset", "airshower_pattern", "--target", "airshower"),
                       "--target is for refine models")]:
        r = run(*args)
        assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_refiner_with_gain_and_readout_refines_as_the_array_reads_out(tmp_path):
    (tmp_path / "small.yaml").write_text(SMALL)
    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache"), "CALOBENCH_DATASETS": str(tmp_path / "small.yaml")}
    r = subprocess.run([EXE, "run", "--model", "airshower_refiner", "--dataset", "airshower_sim", "--preset", "smoke",
                        "--quiet", "--no-plots", "--no-timing", "--metrics", "wasserstein", "--set", "residual=gain",
                        "--set", "readout=true"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folder, = (tmp_path / "runs").glob("airshower_sim__airshower_refiner__smoke-*__seed0")
    assert json.loads((folder / "record.json").read_text())["config"]["residual"] == "gain"
    refined = calobench.load_run(folder, weights=False).samples().array().reshape(-1, 80).astype(np.float64)
    integral = refined.sum(1)
    assert (integral > 0).sum() > 50  # stations survive
    assert integral[integral > 0].min() >= 3.0 - 1e-3 and refined[refined > 0].min() >= 0.15 - 1e-4
    assert refined.max() <= 200.0 + 1e-2
    r = subprocess.run([EXE, "run", "--model", "airshower_refiner", "--dataset", "airshower_sim", "--preset", "smoke",
                        "--quiet", "--set", "residual=gain", "--set", "bound=null"], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert r.returncode != 0 and "residual=gain needs" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_paper_checks_on_hand_made_predictions():
    from calobench import MetricResult
    from calobench.checks import CheckContext, run_checks
    from calobench_airshower.checks import PatternWGANChecks, RefinerChecks

    rng = np.random.default_rng(0)
    true = 10 ** rng.uniform(0, 2, 4000)
    err = rng.normal(0, 1, 4000)
    preds = {"true": true, "sim": true * (1 + 0.4 * err), "data": true * (1 + 0.1 * err)}
    g = SIM.geometry()
    info = DatasetInfo("airshower", g, {"energy": (1.0, 100.0)})
    for frac, ok in ((0.9, True), (0.5, False)):  # the refined errors close 90 % (50 %) of the gap
        preds["refined"] = true * (1 + (0.4 - frac * 0.3) * err)
        ctx = CheckContext(info, None, None, metrics={"refinement_utility": MetricResult(0, 0, {}, {"predictions": preds})})
        out = {e["name"]: e for e in run_checks([RefinerChecks()], ctx, task="refine")}
        assert set(out) == {"gap_closed_all", "gap_closed_1-10EeV", "gap_closed_10-30EeV", "gap_closed_30-60EeV",
                            "gap_closed_60-100EeV"}
        for e in out.values():
            assert e["value"] == pytest.approx(frac, abs=1e-9) and e["pass"] is ok and e["uncertainty"] < 1e-9
    assert run_checks([RefinerChecks()], CheckContext(info, None, None), task="generate") == []  # refine only
    missing = run_checks([RefinerChecks()], CheckContext(info, None, None), task="refine")
    assert missing[0]["pass"] is False and "refinement_utility" in missing[0]["note"]
    # pattern WGAN: correlation and bias from label_consistency's details, W1 of the total signal
    pg = SIM.geometry(view="pattern")
    real = SIM.simulate(300, np.random.default_rng(1), view="pattern")
    details = {"correlation_generated": 0.95, "correlation_real": 0.99, "real": {"bias": 0.02}, "generated": {"bias": 0.15}}
    ctx = CheckContext(DatasetInfo("airshower_pattern", pg, {"energy": (1.0, 100.0)}), real, real,
                       metrics={"label_consistency": MetricResult(0, 0, details)})
    out = {e["name"]: e for e in run_checks([PatternWGANChecks()], ctx)}
    assert out["energy_correlation"]["pass"] and not out["energy_bias"]["pass"]
    assert out["energy_bias"]["value"] == pytest.approx(0.13) and out["w1_total_signal"]["value"] == 0


@pytest.mark.parametrize("mode,expected", [("linear", [0.01, 0.1, 1.0]), ("log", [-1.0, 0.0, 1.0])])
def test_wgan_samples_with_the_energy_input_it_trained_on(mode, expected):
    """The generator's energy input: E / 100 EeV (the paper) or log10(E / 10 EeV); sample() feeds
    the generator the same transform as fit()."""
    from calobench_airshower.models import AirshowerWGAN

    info = DatasetInfo("airshower_pattern", SIM.geometry(view="pattern"), {"energy": (1.0, 100.0)})
    m = AirshowerWGAN(info, {**AirshowerWGAN.config_for("smoke"), "energy_input": mode}, torch.device("cpu"))
    seen = []
    m.nets["generator"].register_forward_hook(lambda mod, args, out: seen.append(args[1].clone()))
    out = m.sample({"energy": np.array([1.0, 10.0, 100.0])})
    assert out.shape == (3, 9, 9) and (out >= 0).all()
    assert torch.allclose(seen[0], torch.tensor(expected), atol=1e-6)


def test_wgan_online_constrainer_keeps_learning_on_real_patterns():
    """constrainer_online: after its pre-training the constrainer takes a step on real patterns per
    generator step (its optimiser is part of the checkpointed training state); without it the
    constrainer stays as pre-trained (same seed: the same pre-training in both runs)."""
    from calobench import Trainer
    from calobench_airshower.models import AirshowerWGAN

    data = SIM.simulate(300, np.random.default_rng(0), view="pattern")
    info = DatasetInfo("airshower_pattern", SIM.geometry(view="pattern"), {"energy": (1.0, 100.0)})
    nets = {}
    for online in (False, True):
        torch.manual_seed(0)
        cfg = {**AirshowerWGAN.config_for("smoke"), "steps": 3, "constrainer_online": online, "constraint": "log",
               "energy_input": "log"}
        m = AirshowerWGAN(info, cfg, torch.device("cpu"))
        trainer = Trainer(progress=False, seed=0)
        trainer.bind(m)
        m.fit(data, trainer)
        nets[online] = {k: v.clone() for k, v in m.nets["constrainer"].state_dict().items()}
        assert ("constrainer" in m.training_state()["optimizers"]) == online
        assert np.isfinite([h["constraint"] for h in trainer.history if "constraint" in h]).all()
    assert any(not torch.equal(nets[False][k], nets[True][k]) for k in nets[False])


def test_wgan_critic_energy_sees_the_label_of_each_pattern():
    """critic_energy: the critic reads log10(E / 10 EeV) as a second plane, the same for real and fake
    patterns of one batch row, so its score changes with the energy alone; a short fit runs with it."""
    from calobench import Trainer
    from calobench_airshower.models import AirshowerWGAN

    info = DatasetInfo("airshower_pattern", SIM.geometry(view="pattern"), {"energy": (1.0, 100.0)})
    m = AirshowerWGAN(info, {**AirshowerWGAN.config_for("smoke"), "critic_energy": True}, torch.device("cpu"))
    D = m.nets["critic"].eval()
    assert D.net[0].in_channels == 2
    u = torch.rand(2, 9, 9)
    same = u[:1].expand(2, 9, 9)
    assert not torch.allclose(D(same, torch.tensor([-1.0, 1.0]))[0], D(same, torch.tensor([-1.0, 1.0]))[1])
    seen = []
    D.register_forward_hook(lambda mod, args, out: seen.append(args[1].clone()))
    data = SIM.simulate(200, np.random.default_rng(0), view="pattern")
    trainer = Trainer(progress=False, seed=0)
    trainer.bind(m)
    m.fit(data, trainer)
    lo, hi = (float(torch.cat(seen).min()), float(torch.cat(seen).max()))
    assert -1.0 <= lo < hi <= 1.0  # log10(E / 10 EeV) over 1-100 EeV
    assert np.isfinite([h["critic"] for h in trainer.history if "critic" in h]).all()


def test_wgan_response_calibration_matches_the_validation_signal_per_energy():
    """calibrate_response: per quantile bin of the validation energies, the factor that brings the mean
    log total signal of generated patterns to the validation patterns'. Here the 'generator' returns real
    patterns of the nearest validation energy times 0.5 below 10 EeV and 2 above it: the factors come out
    2 and 0.5, the calibrated samples carry the validation signal, and fit() runs the calibration phase."""
    from calobench import Trainer
    from calobench_airshower.models import AirshowerWGAN

    info = DatasetInfo("airshower_pattern", SIM.geometry(view="pattern"), {"energy": (1.0, 100.0)})
    cfg = {**AirshowerWGAN.config_for("smoke"), "calibrate_response": True, "calibration_bins": 4}
    m = AirshowerWGAN(info, cfg, torch.device("cpu"))
    val = SIM.simulate(800, np.random.default_rng(1), view="pattern")
    e_val, x_val = val.conditions["energy"], torch.as_tensor(val.array())

    def fake(energy, generator=None):  # the nearest validation pattern, mis-scaled
        i = np.abs(np.log(e_val)[None] - np.log(np.asarray(energy))[:, None]).argmin(1)
        return x_val[i] * torch.as_tensor(np.where(np.asarray(energy) < 10, 0.5, 2.0), dtype=torch.float32)[:, None, None]

    m._generate = fake
    found = m.calibrate(val)
    assert len(found["energy"]) == 4
    for e, k in zip(found["energy"], found["factor"]):
        if e < 5:
            assert k == pytest.approx(2.0, rel=0.05)
        elif e > 20:
            assert k == pytest.approx(0.5, rel=0.05)
    hi = e_val > 30
    out = m.sample({"energy": e_val[hi]})
    assert np.log(out.reshape(hi.sum(), -1).sum(1)).mean() == pytest.approx(
        np.log(val.array()[hi].reshape(hi.sum(), -1).sum(1)).mean(), abs=0.05)
    with pytest.raises(calobench.CalobenchError, match="calibrate_response"):
        AirshowerWGAN(info, {**cfg, "calibrate_response": False}, torch.device("cpu")).calibrate(val)
    # a short fit with the option on ends with a calibration phase that sets the factors
    m = AirshowerWGAN(info, cfg, torch.device("cpu"))
    trainer = Trainer(progress=False, seed=0)
    trainer.bind(m)
    m.fit(SIM.simulate(200, np.random.default_rng(0), view="pattern"), trainer, validation=val)
    assert int(m.nets["calibration"].n) == 4
    assert any(k.startswith("factor_") for h in trainer.history for k in h)


def test_wgan_spread_calibration_moves_each_total_to_the_real_quantile_at_its_energy():
    """calibrate_spread: a stand-in generator returns the validation pattern of the nearest energy with its
    signal scaled by a log-normal factor (sigma 0.3 in log10: several times the real spread of the total at
    fixed energy, as the trained WGAN's at high energy) and by 3 on average. After calibrate(), sample()'s
    log10 total has the validation mean and standard deviation in every energy bin, the factor keeps each
    pattern's rank, an empty pattern stays empty, the option needs the response calibration, and the map
    travels with the weights."""
    from calobench_airshower.models import AirshowerWGAN, TotalSpread

    info = DatasetInfo("airshower_pattern", SIM.geometry(view="pattern"), {"energy": (1.0, 100.0)})
    cfg = {**AirshowerWGAN.config_for("smoke"), "calibrate_response": True, "calibration_bins": 4,
           "calibrate_spread": True, "spread_bins": 4, "n_calibrate": 4000}
    m = AirshowerWGAN(info, cfg, torch.device("cpu"))
    val = SIM.simulate(4000, np.random.default_rng(1), view="pattern")
    e_val, x_val = val.conditions["energy"], torch.as_tensor(val.array())
    noise = torch.Generator().manual_seed(5)

    def fake(energy, generator=None):
        i = np.abs(np.log(e_val)[None] - np.log(np.asarray(energy))[:, None]).argmin(1)
        k = 3 * 10 ** (0.3 * torch.randn(len(i), generator=noise))
        return x_val[i] * k[:, None, None]

    m._generate = fake
    found = m.calibrate(val)
    assert found["spread_before"] > 1.5 and found["spread_after"] == pytest.approx(1.0, abs=0.1)
    test = SIM.simulate(4000, np.random.default_rng(2), view="pattern")
    e = test.conditions["energy"]
    gen = np.log10(m.sample({"energy": e}).reshape(len(e), -1).sum(1))
    real = np.log10(test.array().reshape(len(e), -1).sum(1))
    for lo, hi in ((1, 10), (10, 40), (40, 100)):
        s = (e >= lo) & (e < hi)
        assert gen[s].mean() == pytest.approx(real[s].mean(), abs=0.05)
        assert gen[s].std() == pytest.approx(real[s].std(), rel=0.2)
    spread = m.nets["spread"]
    totals = np.sort(np.exp(np.random.default_rng(3).normal(np.log(2000), 1.0, 500)))
    np.testing.assert_array_less(0, np.diff(totals * spread.factor(np.full(500, 30.0), totals)) + 1e-9)
    assert spread.factor([30.0], [0.0])[0] == 1.0
    np.testing.assert_array_equal(TotalSpread(4).factor([30.0, 3.0], [100.0, 5.0]), 1.0)  # not set: 1
    m2 = AirshowerWGAN(info, cfg, torch.device("cpu"))
    m2.load_state_dict(m.state_dict())
    np.testing.assert_allclose(m2.nets["spread"].factor(e, 10 ** real), spread.factor(e, 10 ** real))
    with pytest.raises(calobench.CalobenchError, match="calibrate_spread .* needs calibrate_response=true"):
        AirshowerWGAN.resolve("smoke", {"calibrate_spread": True})


def test_wgan_readout_reads_generated_patterns_through_the_trigger():
    """readout: real patterns have no station between 0 and the 3 VEM trigger; generated ones pass the same
    trigger in training (the critic and the constrainer see no station under it, while the generator's
    gradient reaches the stations it cut) and when sampling, after the calibrations."""
    from calobench_airshower.models import AirshowerWGAN
    from calobench_airshower.nets import trigger_straight_through
    from calobench_airshower.simulator import TRIGGER_VEM

    real = SIM.simulate(300, np.random.default_rng(1), view="pattern").array()
    assert not ((real > 0) & (real < TRIGGER_VEM)).any()
    u = to_net(torch.tensor([0.0, 1.0, 2.9, 3.1, 50.0])).requires_grad_()
    out = trigger_straight_through(u, float(to_net(torch.tensor(TRIGGER_VEM))))
    torch.testing.assert_close(from_net(out.detach()), torch.tensor([0.0, 0.0, 0.0, 3.1, 50.0]), rtol=1e-4, atol=1e-4)
    (out * torch.arange(1.0, 6.0)).sum().backward()
    torch.testing.assert_close(u.grad, torch.arange(1.0, 6.0))  # straight through, cut stations included

    info = DatasetInfo("airshower_pattern", SIM.geometry(view="pattern"), {"energy": (1.0, 100.0)})
    data = SIM.simulate(1000, np.random.default_rng(2), view="pattern")
    e = data.conditions["energy"]
    threshold = float(to_net(torch.tensor(TRIGGER_VEM)))
    for readout in (False, True):
        torch.manual_seed(0)
        m = AirshowerWGAN(info, {**AirshowerWGAN.config_for("smoke"), "readout": readout, "calibrate_response": True},
                          torch.device("cpu"))
        with torch.no_grad():  # an untrained generator's last layer lifted to a few VEM: many stations near 3 VEM
            m.nets["generator"].up[-2].bias.fill_(float(to_net(torch.tensor(2.5))))
        fakes, triggered = [], m._triggered

        def spy(u):  # what the critic and the constrainer are given of each generated batch
            out = triggered(u)
            fakes.append(out.detach())
            return out

        m._triggered = spy
        trainer = calobench.Trainer(progress=False, seed=0)
        trainer.bind(m)
        m.fit(data, trainer, validation=data)  # (the calibration's patterns pass it too)
        seen = torch.cat(fakes)
        assert len(seen) >= m.config["steps"] * (m.config["n_critic"] + 1) * m.config["batch"]
        assert bool(((seen > 0) & (seen < threshold - 1e-6)).any()) != readout
        x = m.sample({"energy": e})
        assert (((x > 0) & (x < TRIGGER_VEM)).mean() == 0) == readout


def test_refiner_response_calibration_brings_the_refined_signal_onto_data_at_every_energy():
    """calibrate_response: the refined signals get a smooth factor of the simulated energy that puts the
    mean log10 total signal of refined simulation on data's (cubic fits in log10 E). Here the refiner is
    the identity (untrained, skip) and the 'data' are the simulation itself scaled by a known factor of
    the energy, 0.5 at 1 EeV, 2 at 100 EeV and curved between (log10 k quadratic in log10 E, which the
    cubic fits hold exactly): the factors come out as that function, refine() applies them from the
    source showers' energies, and the runner's entry point hands refine() those energies."""
    from calobench import Trainer
    from calobench_airshower.models import AirshowerRefiner

    g = SIM.geometry()
    info = DatasetInfo("airshower_sim", g, {"energy": (1.0, 100.0)})
    # no readout: the scaled 'data' are not read out again, so only an exact identity matches them
    cfg = {**AirshowerRefiner.config_for("smoke"), "calibrate_response": True, "readout": False}
    sim = SIM.simulate(3000, np.random.default_rng(5), variant="sim")
    e = sim.conditions["energy"]

    def scale(energy):
        x = np.log10(energy)
        return 10 ** (np.log10(0.5) + np.log10(4) * x / 2 + 0.2 * x * (x - 2))

    data_showers = sim.array() * scale(e)[:, None, None, None].astype(np.float32)
    m = AirshowerRefiner(info, cfg, torch.device("cpu"))
    found = m.calibrate(to_net(torch.as_tensor(sim.array())), e, to_net(torch.as_tensor(data_showers)), e)
    assert found["energy"][0] == pytest.approx(e.min()) and found["energy"][-1] == pytest.approx(e.max())
    np.testing.assert_allclose(found["factor"], scale(np.array(found["energy"])), rtol=1e-3)
    low, high = e < 4, e > 30
    for sel in (low, high):
        out = m.refine(sim.array()[sel], {"energy": e[sel]})
        assert np.log10(out.reshape(sel.sum(), -1).sum(1)).mean() == pytest.approx(
            np.log10(data_showers[sel].reshape(sel.sum(), -1).sum(1)).mean(), abs=0.01)
    with pytest.raises(calobench.CalobenchError, match="needs the simulated showers' condition 'energy'"):
        m.refine(sim.array()[:2])
    # the runner's entry point passes the source conditions to a refiner that reads them
    out = m.generate_batch(showers=sim.array()[high][:4], conditions={"energy": e[high][:4]})
    assert out.shape == (4, *g.shape)
    with pytest.raises(calobench.CalobenchError, match="calibrate_response"):
        AirshowerRefiner(info, {**cfg, "calibrate_response": False}, torch.device("cpu")).calibrate(
            to_net(torch.as_tensor(sim.array())), e, to_net(torch.as_tensor(data_showers)), e)
    # a short fit with the option on ends with a calibration phase that sets the factors
    m = AirshowerRefiner(info, cfg, torch.device("cpu"))
    trainer = Trainer(progress=False, seed=0)
    trainer.bind(m)
    m.fit(sim.head(500), trainer, target=SIM.simulate(500, np.random.default_rng(6)))
    assert int(m.nets["calibration"].n) == 16
    assert any(k.startswith("factor_") for h in trainer.history for k in h)
