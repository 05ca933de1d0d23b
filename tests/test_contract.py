"""The training and sampling contract (phases, track, early stop, resume, inference nets)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import calobench
from calobench import CalobenchError, DatasetInfo, Geometry, Trainer
from calobench.plugins import Plugins, set_plugins

RUN = ["run", "--model", "toy_flow", "--dataset", "tiny", "--preset", "default", "--quiet", "--no-timing",
       "--no-plots", "--metrics", "e_w1"]


@pytest.fixture(autouse=True)
def with_flow():
    import toyflow
    import toyplugin

    set_plugins(Plugins(extra=[toyplugin, toyflow], load_entrypoints=False))


def record(out):
    path, = Path(out).glob("tiny__toy_flow__default-*__seed0/record.json")
    return json.loads(path.read_text())


def test_flow_matching_killed_in_its_second_phase_resumes_to_the_uninterrupted_record(invoke, monkeypatch):
    r = invoke(*RUN, "--out", "full")
    assert r.exit_code == 0, r.output
    full = record("full")
    assert full["train"]["phases"] == {"warmup": 10, "main": 30} and full["train"]["steps"] == 40
    monkeypatch.setenv("TOY_SIGNAL_AT", "24")  # SIGTERM in phase "main", step 15 of 30
    r = invoke(*RUN, "--out", "cut")
    monkeypatch.delenv("TOY_SIGNAL_AT")
    assert r.exit_code == 130 and "SIGTERM at step 15 of phase 'main'" in r.output, r.output
    r = invoke(*RUN, "--out", "cut", "--resume")
    assert r.exit_code == 0, r.output
    resumed = record("cut")
    assert resumed["train"]["resumed_from"] == 25
    assert resumed["metrics"]["e_w1"]["value"] == full["metrics"]["e_w1"]["value"]
    assert resumed["train"]["history"] == full["train"]["history"]
    assert resumed["config_hash"] == full["config_hash"]
    # only the EMA network samples: the record counts its parameters, not the training copy twice
    assert full["generation"]["inference_nets"] == ["ema"]
    assert full["generation"]["n_parameters"] == sum(
        p.numel() for p in torch.nn.Sequential(torch.nn.Linear(50, 64), torch.nn.Linear(64, 48)).parameters())
    assert full["generation"]["network_evaluations_per_shower"] == 8


class Counter(calobench.Model):
    name = "counter"

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        self.nets["w"] = torch.nn.Linear(1, 1, bias=False)
        self.optimizers["w"] = torch.optim.SGD(self.nets["w"].parameters(), lr=0.1)


INFO = DatasetInfo("toy", Geometry(shape=(2,)), {"energy": (1.0, 2.0)})


def _trainer(tmp_path, resume=False):
    m = Counter(INFO, {}, torch.device("cpu"))
    t = Trainer(checkpoint=tmp_path / "c.pt", resume=resume, progress=False, checkpoint_every=1e9)
    t.bind(m)
    return m, t


def test_break_and_stop_end_a_phase_with_a_checkpoint(tmp_path):
    m, t = _trainer(tmp_path)
    for k in t.phase("a", 100):
        if k == 6:
            t.stop()
    for k in t.phase("b", 100):
        if k == 3:
            break
    t.finish()
    assert t.phases == {"a": 7, "b": 4} and t.step == 11
    m2, t2 = _trainer(tmp_path, resume=True)
    assert list(t2.phase("a", 100)) == [] and list(t2.phase("b", 100)) == []  # both finished: skipped
    assert t2.resumed_from == 11


def test_a_failing_step_does_not_save_its_half_state(tmp_path):
    m, t = _trainer(tmp_path)
    with pytest.raises(RuntimeError):
        for k in t.phase("a", 100):
            if k == 5:
                raise RuntimeError("boom")
    assert t.last_checkpoint_step == 0  # the checkpoint written when the phase began, not step 5


def test_phase_names_are_unique_and_track_needs_a_state_dict(tmp_path):
    m, t = _trainer(tmp_path)
    with pytest.raises(CalobenchError, match="no state_dict"):
        t.track("x", object())
    list(t.phase("a", 2))
    with pytest.raises(CalobenchError, match="entered twice"):
        list(t.phase("a", 2))


def test_best_weights_keep_the_best_and_survive_a_state_dict_roundtrip():
    net = torch.nn.Linear(1, 1)
    best = calobench.BestWeights(net)
    for score in (3.0, 1.0, 2.0):
        net.weight.data.fill_(score)
        best.update(score, int(score))
    net.weight.data.fill_(9.0)
    b2 = calobench.BestWeights(net)
    b2.load_state_dict(best.state_dict())
    b2.restore()
    assert float(net.weight) == 1.0 and b2.step == 1


def test_sampling_with_gradients():
    class NeedsGrad(Counter):
        sample_with_grad = True

        def sample(self, conditions):
            x = torch.ones(len(conditions["energy"]), 2, requires_grad=True)
            g, = torch.autograd.grad((x ** 2).sum(), x)  # e.g. classifier guidance or a score model
            return g

    out = NeedsGrad(INFO, {}, torch.device("cpu")).generate_batch({"energy": np.ones(3)})
    assert out.shape == (3, 2) and np.all(out == 2)


def test_a_refiner_reads_the_source_conditions_only_when_it_says_so():
    """refine(showers) for a plain refiner (a third party's refine signature stays valid);
    refine(showers, conditions) with ``refine_reads_conditions``; the runner's generate() hands them over."""
    from calobench.runner import generate

    class Plain(Counter):
        task = "refine"

        def refine(self, showers):
            return showers * 2

    class Reads(Plain):
        refine_reads_conditions = True

        def refine(self, showers, conditions=None):
            return showers * conditions["energy"][:, None]

    x = np.ones((3, 2), np.float32)
    cond = {"energy": np.array([1.0, 1.5, 2.0], np.float32)}
    np.testing.assert_array_equal(Plain(INFO, {}, torch.device("cpu")).generate_batch(cond, x), 2 * x)
    np.testing.assert_array_equal(Reads(INFO, {}, torch.device("cpu")).generate_batch(cond, x), x * cond["energy"][:, None])
    with pytest.raises(CalobenchError, match="conditions: none given"):
        Reads(INFO, {}, torch.device("cpu")).generate_batch(None, x)
    out = generate(Reads(INFO, {}, torch.device("cpu")), calobench.ShowerData(x, cond, INFO.geometry), batch_size=2)
    np.testing.assert_array_equal(out.showers, x * cond["energy"][:, None])


def test_a_preset_may_size_itself_per_dataset_in_the_open(invoke):
    """``per_dataset`` values replace the preset's own on that dataset: the run's config (and hash)
    carry the effective values; --set still wins; a bad per-dataset value fails the plugin's load."""
    import toyplugin

    class Sized(toyplugin.TinyGen):
        name = "sized_gen"
        presets = {**toyplugin.TinyGen.presets,
                   "default": {**toyplugin.TinyGen.presets["default"], "per_dataset": {"tiny_big": {"steps": 7}}}}

    assert Sized.config_for("default")["steps"] == 60
    assert Sized.config_for("default", dataset="tiny_big")["steps"] == 7
    assert Sized.config_for("default", {"steps": 9}, dataset="tiny_big")["steps"] == 9

    class Extra:
        @staticmethod
        @calobench.hookimpl
        def register_models(register):
            register(Sized)

    set_plugins(Plugins(extra=[toyplugin, Extra], load_entrypoints=False))
    r = invoke("run", "--model", "sized_gen", "--dataset", "tiny", "--quiet", "--no-timing", "--no-plots")
    assert r.exit_code == 0, r.output
    cfg = json.loads(next(Path("runs").glob("*/config.json")).read_text())
    assert cfg["options"]["steps"] == 60

    class Broken(Sized):
        name = "broken_sized"
        presets = {**Sized.presets, "default": {"per_dataset": {"tiny_big": {"steps": -1}}}}

    class Extra2:
        @staticmethod
        @calobench.hookimpl
        def register_models(register):
            register(Broken)

    set_plugins(Plugins(extra=[toyplugin, Extra2], load_entrypoints=False))
    r = invoke("run", "--model", "broken_sized", "--dataset", "tiny", "--quiet")
    assert r.exit_code != 0 and "preset 'default' on tiny_big" in r.output and "Traceback" not in r.output


def test_once_runs_a_seeded_one_step_phase_logs_it_and_is_skipped_on_resume(tmp_path):
    m, t = _trainer(tmp_path)
    drawn = []

    def calibrate(g):
        drawn.append(torch.rand(3, generator=g))
        return {"factor": [1.5, 2.0]}

    found = t.once("calibrate", calibrate, log=lambda f: {"factor_max": max(f["factor"])})
    assert found == {"factor": [1.5, 2.0]} and t.phases == {"calibrate": 1}
    assert t.history[-1]["phase"] == "calibrate" and t.history[-1]["factor_max"] == 2.0
    (tmp_path / "again").mkdir()
    m2, t2 = _trainer(tmp_path / "again")  # the same seed draws the same numbers; no log: the result as it is
    t2.once("calibrate", lambda g: {"k": float(calibrate(g)["factor"][0])})
    assert torch.equal(drawn[0], drawn[1]) and t2.history[-1]["k"] == 1.5
    m3, t3 = _trainer(tmp_path, resume=True)  # done before: skipped whole
    assert t3.once("calibrate", calibrate) is None and len(drawn) == 2
