"""flow_matching: representation round trip, smoke training on three geometries, a run killed
mid-phase resumes to the uninterrupted record (EMA weights, scheduler and noise included),
determinism, the record's evaluations per shower."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import calobench
from calobench_flow.model import FlowMatching
from calobench_flow.representation import Representation

EXE = shutil.which("calobench", path=os.path.dirname(sys.executable))
SMALL = """
hgcal:
  simulator: hgcal
  splits: {train: {n: 800, seed: 1}, validation: {n: 200, seed: 2}, test: {n: 300, seed: 3},
           reference: {n: 300, seed: 4}, interp70: {n: 200, seed: 5, params: {energies: [70.0], energy_smear: 0.0}}}
airshower_pattern:
  simulator: airshower
  params: {variant: data, view: pattern}
  splits: {train: {n: 800, seed: 1}, test: {n: 300, seed: 3}, reference: {n: 300, seed: 4}}
"""


def sim(name):
    return calobench.registry().simulators[name]


@pytest.mark.parametrize("mode", ["total", "layers"])
@pytest.mark.parametrize("name,params", [("hgcal", {}), ("airshower", {"view": "pattern"}), ("lcd", {})])
def test_representation_round_trip_is_exact(name, params, mode):
    s = sim(name)
    data = s.simulate(64, np.random.default_rng(0), **params)
    g = s.geometry(**params)
    rep = Representation(g, s.condition_ranges(**params), mode)
    energy = data.conditions.get("energy")
    rep.fit(data.array(), energy, torch.Generator().manual_seed(0))
    z = rep.encode(torch.as_tensor(data.array()), energy, torch.Generator().manual_seed(1))
    assert z.shape == (64, rep.n_layers + (mode == "total") + rep.n_cells) and torch.isfinite(z).all()
    assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1) < 0.2  # standardised
    back = rep.decode(z, energy)
    assert np.allclose(back, data.array(), rtol=2e-4, atol=1e-6 * max(g.threshold, 1e-3))
    assert ((back == 0) == (data.array() == 0)).mean() > 0.999  # zeros decode to exact zeros


def test_crop_generates_the_central_window_only():
    """crop=25 on lcd: 25 x 25 cells in each of the 25 layers are features, every other cell decodes to
    zero; a shower that is zero outside the window round-trips exactly (the layer energies are the
    window's); the layer tokens hold the window's 625 cells."""
    from calobench_flow.model import LayerVelocity
    from calobench_flow.representation import central_window

    keep = central_window((51, 51, 25), -1, 25)
    assert keep.sum() == 25 * 25 * 25 and keep[13:38, 13:38].all() and not keep[12].any() and not keep[:, 38].any()
    s = sim("lcd")
    data = s.simulate(16, np.random.default_rng(0))
    x = data.array() * keep
    rep = Representation(s.geometry(), s.condition_ranges(), "total", 0.5, crop=25)
    assert rep.n_cells == 15625 and rep.n_features == 26 + 15625
    e = data.conditions["energy"]
    rep.fit(x, e, torch.Generator().manual_seed(0))
    back = rep.decode(rep.encode(torch.as_tensor(x), e, torch.Generator().manual_seed(1)), e)
    assert np.allclose(back, x, rtol=2e-4, atol=1e-12) and (back[:, ~keep] == 0).all()
    net = LayerVelocity(rep, 4, 32, 1, 16)
    assert net.cells == 625 and net.strided  # the window's features still run layer-fastest


@pytest.mark.parametrize("mode", ["total", "layers"])
def test_layer_energies_set_the_total_energy(mode):
    s = sim("hgcal")
    data = s.simulate(32, np.random.default_rng(0))
    rep = Representation(s.geometry(), s.condition_ranges(), mode)
    e = data.conditions["energy"]
    rep.fit(data.array(), e)
    z = rep.encode(torch.as_tensor(data.array()), e)
    hits = torch.as_tensor(data.array()).reshape(32, -1)[:, rep.active] > 0
    z[:, rep.n_energy:] += hits * 0.3 / rep.std[rep.n_energy:]  # every hit 35 % hotter in the cell part...
    back = rep.decode(z, e)
    ratio = back.sum((1, 2, 3)) / data.array().sum((1, 2, 3))
    assert np.allclose(ratio, 1, rtol=1e-4)  # ...but the layer part fixes the energy


def run(tmp_path, *args, env_extra=None):
    (tmp_path / "small.yaml").write_text(SMALL)
    env = {**os.environ, "CALOBENCH_CACHE": str(tmp_path / "cache"), "CALOBENCH_DATASETS": str(tmp_path / "small.yaml"),
           **(env_extra or {})}
    return subprocess.run([EXE, "run", "--model", "flow_matching", "--preset", "smoke", "--quiet", "--no-plots",
                           "--no-timing", *args], capture_output=True, text=True, env=env, cwd=tmp_path)


def values(rec):
    return {m: (e.get("value"), e.get("floor")) for m, e in rec["metrics"].items()}, rec["physics"]


def record(tmp_path, out, dataset="hgcal"):
    path, = (tmp_path / out).glob(f"{dataset}__flow_matching__smoke-*__seed0/record.json")
    return json.loads(path.read_text())


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_smoke_killed_mid_phase_resumes_to_the_uninterrupted_record(tmp_path):
    args = ("--dataset", "hgcal", "--metrics", "wasserstein,separation_power")
    r = run(tmp_path, *args, "--out", "full")
    assert r.returncode == 0, r.stderr
    full = record(tmp_path, "full")
    assert full["train"]["phases"] == {"warmup": 5, "main": 25}
    assert full["generation"]["inference_nets"] == ["ema"] and full["generation"]["network_evaluations_per_shower"] == 8
    assert full["metrics"]["wasserstein"]["status"] == "ok" and "interp70" in full["extra_splits"]
    assert {e["name"] for e in full["physics"]} >= {"response_20GeV", "response_70GeV", "w1_E_total"}
    again = run(tmp_path, *args, "--out", "again")  # deterministic from the seed
    assert again.returncode == 0 and values(record(tmp_path, "again")) == values(full)
    cut = run(tmp_path, *args, "--out", "cut", "--set", "stop_after_steps=17")  # stops in phase "main"
    assert cut.returncode != 0 and "--resume" in cut.stderr + cut.stdout
    resumed = run(tmp_path, *args, "--out", "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rec = record(tmp_path, "cut")
    assert 5 < rec["train"]["resumed_from"] < 30  # in phase "main"
    assert rec["train"]["history"] == full["train"]["history"]
    assert values(rec) == values(full)  # EMA weights, scheduler, RNGs and zero-noise all restored


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_smoke_on_a_pattern_dataset_without_layers_or_threshold(tmp_path):
    r = run(tmp_path, "--dataset", "airshower_pattern", "--metrics", "wasserstein")
    assert r.returncode == 0, r.stderr
    rec = record(tmp_path, "runs", "airshower_pattern")
    assert rec["metrics"]["wasserstein"]["status"] == "ok"


def test_parameters_count_the_ema_network_only():
    s = sim("hgcal")
    info = calobench.DatasetInfo("hgcal", s.geometry(), s.condition_ranges())
    m = FlowMatching(info, FlowMatching.config_for("smoke"), torch.device("cpu"))
    assert m.n_parameters() == sum(p.numel() for p in m.nets["velocity"].parameters())


def test_large_geometries_get_the_layer_transformer_and_its_cells_map_back_one_to_one():
    """lcd (65 025 cells) resolves to the layer transformer (an MLP would need 67 M parameters for
    its input and output layers); every cell feature is read from and written to exactly one
    token slot, so a velocity that copies its input per slot returns the input."""
    from calobench_flow.model import LayerVelocity

    s = sim("lcd")
    info = calobench.DatasetInfo("lcd", s.geometry(), s.condition_ranges())
    cfg = FlowMatching.config_for("default", dataset="lcd")
    assert cfg["backbone"] == "auto"
    m = FlowMatching(info, {**FlowMatching.config_for("smoke"), "width": 16, "blocks": 1}, torch.device("cpu"))
    assert m.backbone == "layers" and isinstance(m.nets["velocity"], LayerVelocity)
    net = m.nets["velocity"]
    assert net.tokens == 25 and net.cells == 51 * 51
    idx = net.index.flatten()
    assert sorted(idx[idx < m.rep.n_cells].tolist()) == list(range(m.rep.n_cells))  # each cell once
    with torch.no_grad():  # identity read-out: the token round trip is the identity on the cells
        net.cell_in.weight.zero_()
        net.cell_out.weight.zero_()
        x = torch.randn(2, m.rep.n_features)
        layers = torch.cat([x[:, m.rep.n_energy:], torch.zeros(2, 1)], 1)[:, net.index]
        assert torch.equal(layers.reshape(2, -1)[:, idx < m.rep.n_cells].sort(1).values,
                           x[:, m.rep.n_energy:].sort(1).values)
    out = net(x, torch.rand(2), m._cond({k: torch.full((2,), lo) for k, (lo, _) in info.conditions.items()}))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_strided_tokens_are_the_gathered_tokens():
    """lcd's cells run layer-fastest and every layer is complete: the transformer reads its tokens
    as a strided view instead of gathering them; the velocity and its gradients are the gather
    path's (to float rounding). Layers first, or a masked cell, keep the gather."""
    from calobench_flow.model import LayerVelocity

    mask = np.ones((4, 5, 3), bool)
    mask[0, 0, 0] = False
    for geometry, strided in ((calobench.Geometry((4, 5, 3), layer_axis=2), True),
                              (calobench.Geometry((3, 4, 5), layer_axis=0), False),
                              (calobench.Geometry((4, 5, 3), layer_axis=2, mask=mask), False)):
        info = calobench.DatasetInfo("toy", geometry, {"energy": (1.0, 10.0)})
        m = FlowMatching(info, {**FlowMatching.config_for("smoke"), "width": 16, "blocks": 1, "backbone": "layers"},
                         torch.device("cpu"))
        net = m.nets["velocity"]
        assert isinstance(net, LayerVelocity) and net.strided == strided
    s = sim("lcd")
    info = calobench.DatasetInfo("lcd", s.geometry(), s.condition_ranges())
    m = FlowMatching(info, {**FlowMatching.config_for("smoke"), "width": 16, "blocks": 1}, torch.device("cpu"))
    net = m.nets["velocity"]
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    x = torch.randn(3, m.rep.n_features)
    c = m._cond({k: torch.full((3,), lo) for k, (lo, _) in info.conditions.items()})
    out = {}
    for flag in (False, True):
        net.strided = flag
        net.zero_grad()
        y = net(x, torch.full((3,), 0.3), c)
        (y ** 2).sum().backward()
        out[flag] = (y.detach(), [p.grad.clone() for p in net.parameters()])
    assert torch.allclose(out[False][0], out[True][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(out[False][1], out[True][1]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(a.abs().max()) + 1e-8)


@pytest.mark.skipif(EXE is None, reason="calobench console script not installed")
def test_smoke_with_the_layer_transformer_is_deterministic(tmp_path):
    """The lcd preset's parts (layer transformer, per-cell head, energy block weight, hit
    calibration on validation showers, a central crop) on a small geometry: two runs, one record;
    the samples are zero outside the crop."""
    import h5py

    args = ("--dataset", "hgcal", "--metrics", "wasserstein", "--set", "backbone=layers", "--set", "cell_head=8",
            "--set", "energy_weight=1.0", "--set", "calibrate_hits=true", "--set", "n_calibrate=100",
            "--set", "crop=9")
    a = run(tmp_path, *args, "--out", "a")
    assert a.returncode == 0, a.stderr
    b = run(tmp_path, *args, "--out", "b")
    assert b.returncode == 0 and values(record(tmp_path, "a")) == values(record(tmp_path, "b"))
    rec = record(tmp_path, "a")
    assert rec["config"]["backbone"] == "layers" and rec["train"]["phases"]["calibrate"] == 1
    with h5py.File(next((tmp_path / "a").glob("*/samples.h5")), "r") as f:
        x = f["showers"][:]
    from calobench_flow.representation import central_window
    keep = central_window(x.shape[1:], 2, 9)  # hgcal: 12 x 15 cells, 7 layers on the last axis
    assert (x[:, keep] > 0).any() and (x[:, ~keep] > 0).any()  # the window by the flow, the rest by Periphery


def test_periphery_draws_the_training_hit_rates_and_values():
    """Periphery on lcd's cells outside a 25 x 25 crop: per condition bin, each cell is hit at its
    training frequency (checked against a hand count) and hits take values from the bin's outside
    hits (within their range); the draws follow the generator; showers of a high-energy bin get
    more outside hits than a low one's, as in the data."""
    from calobench_flow.periphery import Periphery
    from calobench_flow.representation import central_window

    s = sim("lcd")
    data = s.simulate(200, np.random.default_rng(2))
    x = data.array()
    out = np.flatnonzero(~central_window(x.shape[1:], -1, 25).reshape(-1))
    per = Periphery(out, s.condition_ranges(), bins=2)
    per.fit([x[:120], x[120:]], data.conditions)
    b = per.bin_of(data.conditions)
    assert sorted(np.unique(b)) == [0, 1, 2, 3]
    flat = x.reshape(len(x), -1)[:, out]
    for k in range(4):
        np.testing.assert_allclose(per.p[k].numpy(), (flat[b == k] > 0).mean(0), rtol=1e-6, atol=1e-7)
    cond = {k: np.repeat(v[:1], 400) for k, v in data.conditions.items()}
    g = per.sample(cond, torch.Generator().manual_seed(0))
    assert torch.equal(g, per.sample(cond, torch.Generator().manual_seed(0)))
    k0 = int(b[0])
    assert abs(float((g > 0).float().mean()) - float(per.p[k0].mean())) < 0.1 * float(per.p[k0].mean())
    v, real = g[g > 0].numpy(), flat[b == k0][flat[b == k0] > 0]
    assert v.min() >= real.min() * (1 - 1e-5) and v.max() <= real.max() * (1 + 1e-5)
    e = data.conditions["energy"]
    lo, hi = ({k: np.repeat(v[[i]], 200) for k, v in data.conditions.items()} for i in (e.argmin(), e.argmax()))
    assert (per.sample(hi) > 0).sum() > 2 * (per.sample(lo) > 0).sum()  # 2 bins: 2-250 vs 250-500 GeV
