"""Trustworthy results: identity, boards, floors, validated configs, forgiving failures, bad inputs."""
import json
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

import calobench
from calobench.plugins import Plugins, get_plugins, set_plugins

RUN = ["run", "--model", "tiny_gen", "--dataset", "tiny", "--quiet", "--no-timing", "--no-plots"]


def one_error_line(r, code=1):
    lines = r.output.strip().splitlines()
    assert r.exit_code == code, r.output
    assert lines[-1].startswith("error: ") and "Traceback" not in r.output, r.output
    return lines[-1]


def test_runs_differing_only_in_set_give_two_records_and_two_rows(invoke):
    for extra in ([], ["--set", "lr=0.02"]):
        r = invoke(*RUN, "--preset", "default", "--leaderboard", "lb", *extra)
        assert r.exit_code == 0, r.output
    recs = list(Path("lb/records").glob("*.json"))
    assert len(recs) == 2 and len(list(Path("runs").iterdir())) == 2
    md = Path("lb/tiny.md").read_text()
    assert md.count("| tiny_gen") == 2
    # a second seed of the same config is the same row: mean ± spread, both seeds named
    assert invoke(*RUN, "--preset", "default", "--leaderboard", "lb", "--seed", "1").exit_code == 0
    md = Path("lb/tiny.md").read_text()
    assert md.count("| tiny_gen") == 2 and "| 0,1 " in md


def test_the_floor_is_shared_and_fixed_whatever_the_run_seed(invoke):
    for seed in (0, 5):
        assert invoke(*RUN, "--preset", "default", "--seed", seed, "--leaderboard", "lb").exit_code == 0
    floors = {json.loads(p.read_text())["metrics"]["e_w1"]["floor"] for p in Path("lb/records").glob("*.json")}
    assert len(floors) == 1
    # computed once, cached per (dataset key, metric, version, N); the cache holds exactly that value
    cached, = Path(os.environ["CALOBENCH_CACHE"], "floors").glob("e_w1-*.json")
    assert json.loads(cached.read_text())["floor"]["value"] == floors.pop()


@pytest.mark.parametrize("args,msg", [
    (["--set", "no_such_key=1"], "unknown option 'no_such_key' for model 'tiny_gen'"),
    (["--set", "stpes=5"], "did you mean: steps"),
    (["--set", "steps=abc"], "option 'steps' of model 'tiny_gen': Input should be a valid integer"),
    (["--set", "steps=-3"], "option 'steps' of model 'tiny_gen': Input should be greater than 0"),
    (["--set", "generation_batch=0"], "option 'generation_batch' of the runner"),
    (["--set", "novalue"], "--set expects KEY=VALUE"),
])
def test_bad_config_fails_in_one_line_before_any_data(invoke, args, msg):
    line = one_error_line(invoke(*RUN, "--preset", "smoke", *args))
    assert msg in line
    assert not Path(os.environ["CALOBENCH_CACHE"]).exists() and not Path("runs").exists()


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999"])
def test_bad_seed_is_one_line(invoke, seed):
    r = invoke(*RUN, "--seed", seed)
    assert r.exit_code == 2 and "Traceback" not in r.output and "--seed" in r.output


def test_plugin_exception_in_fit_is_one_line_with_a_log_and_a_checkpoint(invoke):
    line = one_error_line(invoke(*RUN, "--preset", "smoke", "--set", "fail_at=7"))
    assert "model 'tiny_gen' (plugin toyplugin) fit failed: RuntimeError: the plugin broke" in line
    assert "--resume" in line
    run_dir, = Path("runs").iterdir()
    assert "Traceback" in (run_dir / "error.log").read_text()
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "record.json").exists()


def test_a_run_that_failed_before_training_reruns_with_the_same_command(invoke, monkeypatch):
    import toyplugin

    original = toyplugin.Tiny.simulate
    monkeypatch.setattr(toyplugin.Tiny, "simulate", lambda self, *a, **k: 1 / 0)
    line = one_error_line(invoke(*RUN, "--preset", "smoke"))
    assert "simulator 'tiny' (plugin toyplugin) preparing tiny/" in line and "ZeroDivisionError" in line
    monkeypatch.setattr(toyplugin.Tiny, "simulate", original)
    r = invoke(*RUN, "--preset", "smoke")
    assert r.exit_code == 0, r.output


def test_nan_metric_is_failed_and_target_metrics_rank_by_distance(invoke):
    import toyplugin

    class NaNMetric(toyplugin.TotalEnergyW1):
        name = "nan_metric"

        def compute(self, real, generated, ctx):
            return calobench.MetricResult(float("nan"))

    class Ratio(toyplugin.TotalEnergyW1):
        name = "ratio"
        target = 1.0

        def compute(self, real, generated, ctx):
            return calobench.MetricResult(float(generated.array().sum() / real.array().sum()))

    class Extra:
        @staticmethod
        @calobench.hookimpl
        def register_metrics(register):
            register(NaNMetric)
            register(Ratio)

    set_plugins(Plugins(extra=[toyplugin, Extra], load_entrypoints=False))
    r = invoke(*RUN, "--preset", "default", "--leaderboard", "lb", "--metrics", "nan_metric,ratio")
    assert r.exit_code == 0, r.output
    rec = json.loads(next(Path("lb/records").glob("*.json")).read_text())
    assert rec["metrics"]["nan_metric"]["status"] == "failed" and "value" not in rec["metrics"]["nan_metric"]
    assert rec["metrics"]["ratio"]["target"] == 1.0
    assert "ratio →1" in Path("lb/tiny.md").read_text()
    from calobench.leaderboard import table

    def fake(model, v):
        return {**rec, "model": model, "config_hash": model, "metrics": {"ratio": {**rec["metrics"]["ratio"],
                                                                                    "value": v}}}

    df = table([fake("zeros", 0.0), fake("close", 1.05), fake("far", 1.5)])
    assert list(df["model"][1:]) == ["close", "far", "zeros"]


def test_written_files_honour_the_umask(invoke):
    old = os.umask(0o022)
    try:
        assert invoke(*RUN, "--preset", "default", "--leaderboard", "lb").exit_code == 0
    finally:
        os.umask(old)
    for p in [*Path("runs").rglob("*.json"), Path("lb/tiny.md"), *Path("lb/records").glob("*.json")]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


class Dup:
    @staticmethod
    @calobench.hookimpl
    def register_metrics(register):
        import toyplugin

        register(toyplugin.TotalEnergyW1)  # already registered by toyplugin


class Misspelt:
    @staticmethod
    @calobench.hookimpl
    def register_metric(register):
        pass


class Raises:
    @staticmethod
    @calobench.hookimpl
    def register_models(register):
        import toyplugin

        register(toyplugin.Refuses)  # would be registered, but the hook then fails: unloaded whole
        raise ValueError("half-way")


class BadEntry:
    @staticmethod
    @calobench.hookimpl
    def register_datasets(register):
        register("broken_ds", {"simulator": "tiny"})  # no splits


@pytest.mark.parametrize("plugin,msg", [
    (Dup, "plugin 'Dup' registers metric 'e_w1', already registered by plugin 'toyplugin'; ignored"),
    (Misspelt, "unknown hook 'register_metric' (did you mean register_metrics?)"),
    (Raises, "register_models failed: ValueError: half-way"),
    (BadEntry, "dataset 'broken_ds': needs a non-empty 'splits' mapping; entry skipped"),
])
def test_a_bad_plugin_is_a_warning_and_everything_else_works(invoke, plugin, msg):
    import toyplugin

    set_plugins(Plugins(extra=[toyplugin, plugin], load_entrypoints=False))
    for args in (["plugins"], ["list"], [*RUN, "--preset", "smoke", "--metrics", "e_w1"]):
        get_plugins()._warned = False  # each command is its own process in real use: each warns
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        assert msg in r.output and "Traceback" not in r.output
    reg = get_plugins().registry
    assert "tiny_gen" in reg.models and "e_w1" in reg.metrics and "tiny" in [*reg.datasets]
    if plugin is Raises:
        assert "only_elsewhere" in reg.models  # toyplugin's own, not the half-loaded plugin's
        assert reg.owner[("model", "only_elsewhere")] == "toyplugin"


def _write(path, build):
    with h5py.File(path, "w") as f:
        build(f)
    return path


GOOD_GEOM = calobench.Geometry(shape=(4, 4, 3)).to_json()


@pytest.mark.parametrize("build,msg", [
    (lambda f: f.create_dataset("showers", data=np.float32(3.0)), "'showers' must be an array"),
    (lambda f: f.create_dataset("showers", data=np.zeros(5, np.float32)), "'showers' must be an array"),
    (lambda f: (f.create_dataset("showers", data=np.ones((5, 4, 4, 3), np.int32)),
                f.create_dataset("conditions/energy", data=np.ones(5, np.float32))), "floating-point"),
    (lambda f: (f.create_dataset("showers", data=np.ones((5, 4, 4, 3), np.float32)),
                f.create_dataset("conditions", data=np.ones(5))), "'conditions' must be a group"),
    (lambda f: (f.create_dataset("showers", data=np.ones((5, 4, 4, 3), np.float32)),
                f.attrs.__setitem__("geometry", json.dumps({"shape": [4, 4, 3], "colour": 1}))),
     "unreadable 'geometry' attribute"),
    (lambda f: (f.create_dataset("showers", data=-np.ones((5, 4, 4, 3), np.float32)),
                f.create_dataset("conditions/energy", data=np.ones(5, np.float32))), "negative energies"),
])
def test_evaluate_bad_files_are_one_line(invoke, tmp_path, build, msg):
    path = _write(tmp_path / "bad.h5", build)
    line = one_error_line(invoke("evaluate", "--dataset", "tiny", "--samples", path, "--out", tmp_path / "r.json"))
    assert msg in line
    assert not (tmp_path / "r.json").exists()


def test_evaluate_reads_the_whole_file_before_scoring(invoke, tmp_path):
    x = np.random.default_rng(0).random((3000, 4, 4, 3)).astype(np.float32)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("showers", data=x, chunks=(100, 4, 4, 3), compression="gzip")
        f.create_dataset("conditions/energy", data=np.ones(3000, np.float32))
        offset = f["showers"].id.get_chunk_info(15).byte_offset
    with open(tmp_path / "c.h5", "r+b") as fh:  # corrupt a chunk in the middle
        fh.seek(offset)
        fh.write(b"\xff" * 64)
    line = one_error_line(invoke("evaluate", "--dataset", "tiny", "--samples", tmp_path / "c.h5"))
    assert "corrupt or truncated" in line


@pytest.mark.parametrize("content,msg", [
    (None, "is a folder"),
    (b"\xff\xfe\x00bad", "not a UTF-8 text file"),
    (b"tiny2:\n  simulator: tiny\n  splits: {train: {n: 1, seed: 1}\n", "not valid YAML at line"),
])
def test_bad_datasets_files_are_one_line(invoke, tmp_path, monkeypatch, content, msg):
    target = tmp_path / "entries"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    monkeypatch.setenv("CALOBENCH_DATASETS", str(target))
    assert msg in one_error_line(invoke("list", "datasets"))


def test_unwritable_board_is_found_before_any_work(invoke, tmp_path):
    (tmp_path / "lbfile").write_text("not a folder")
    line = one_error_line(invoke(*RUN, "--preset", "default", "--leaderboard", tmp_path / "lbfile" / "board"))
    assert "leaderboard folder" in line and not Path(os.environ["CALOBENCH_CACHE"]).exists()


def test_public_api_loads_a_dataset_and_a_finished_run(invoke):
    ds = calobench.load_dataset("tiny")
    assert ds.info.conditions == {"energy": (1.0, 10.0)} and len(ds.load("test")) == 80
    assert invoke(*RUN, "--preset", "smoke").exit_code == 0
    run = calobench.load_run(next(Path("runs").iterdir()))
    assert run.config["options"]["steps"] == 30 and run.record["model"] == "tiny_gen"
    out = run.model.generate_batch(conditions={"energy": np.array([2.0, 5.0], np.float32)})
    assert out.shape == (2, 4, 4, 3) and len(run.samples()) == 80


def test_load_run_names_weights_that_no_longer_fit_the_model(invoke):
    """Weights of an older network: a one-line CalobenchError; weights=False still reads the run."""
    from safetensors.torch import load_file, save_file

    assert invoke(*RUN, "--preset", "smoke").exit_code == 0
    folder = next(Path("runs").iterdir())
    state = load_file(str(folder / "model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(calobench.CalobenchError, match="do not fit the installed tiny_gen") as e:
        calobench.load_run(folder)
    assert "\n" not in str(e.value)
    run = calobench.load_run(folder, weights=False)
    assert run.model is None and len(run.samples()) == 80 and run.record["model"] == "tiny_gen"


def test_unranked_metrics_are_shown_but_do_not_rank(invoke):
    import toyplugin

    class Diagnostic(toyplugin.TotalEnergyW1):
        name = "diagnostic"
        ranked = False
        unranked_reason = "scores a distortion below the floor"

    class Extra:
        @staticmethod
        @calobench.hookimpl
        def register_metrics(register):
            register(Diagnostic)

    set_plugins(Plugins(extra=[toyplugin, Extra], load_entrypoints=False))
    r = invoke(*RUN, "--preset", "default", "--leaderboard", "lb", "--metrics", "diagnostic,e_w1")
    assert r.exit_code == 0, r.output
    rec = json.loads(next(Path("lb/records").glob("*.json")).read_text())
    assert rec["metrics"]["diagnostic"]["ranked"] is False and "e_w1" in rec["metrics"]
    assert "ranked" not in rec["metrics"]["e_w1"]
    board = Path("lb/tiny.md").read_text()
    assert "diagnostic ↓ (unranked)" in board and "- `diagnostic` (unranked): scores a distortion below the floor" in board
    from calobench.leaderboard import table

    def fake(model, diag, w1):
        m = {"diagnostic": {**rec["metrics"]["diagnostic"], "value": diag},
             "e_w1": {**rec["metrics"]["e_w1"], "value": w1}}
        return {**rec, "model": model, "config_hash": model, "metrics": m}

    df = table([fake("a", 0.0, 2.0), fake("b", 9.0, 1.0)])  # b is better on the only ranked metric
    assert list(df["model"][1:]) == ["b", "a"]


def test_boards_rank_only_on_metrics_that_pass_the_sensitivity_gate(invoke):
    """A gate table beside the board (leaderboard/sensitivity/<dataset>.json, as
    benchmarks/metric_sensitivity.py --write makes it): a metric that fails it, or was gated at
    another version, is shown unranked with the reason; without the table every metric ranks."""
    from calobench.io import write_json
    from calobench.leaderboard import read_gate, table

    r = invoke(*RUN, "--preset", "default", "--leaderboard", "lb", "--metrics", "e_w1,e_w1_twin")
    assert r.exit_code == 0, r.output
    board = Path("lb/tiny.md").read_text()
    assert "No sensitivity gate table" in board and "(unranked)" not in board
    gate = {"dataset": "tiny", "metrics": {
        "e_w1": {"version": 1, "pass": True},
        "e_w1_twin": {"version": 1, "pass": False, "reason": "within 3 sigma of the floor (or better) on "
                                                              "energy +5% +0.4σ"}}}
    write_json(Path("lb/sensitivity/tiny.json"), gate)
    assert invoke("leaderboard", "--dir", "lb").exit_code == 0
    board = Path("lb/tiny.md").read_text()
    assert "e_w1_twin ↓ (unranked)" in board and "| e_w1 ↓ " in board
    assert "- `e_w1_twin` (unranked): fails the sensitivity gate: within 3 sigma of the floor (or better) on " \
           "energy +5% +0.4σ" in board
    rec = json.loads(next(Path("lb/records").glob("*.json")).read_text())

    def fake(model, w1, twin):
        return {**rec, "model": model, "config_hash": model,
                "metrics": {"e_w1": {**rec["metrics"]["e_w1"], "value": w1},
                            "e_w1_twin": {**rec["metrics"]["e_w1_twin"], "value": twin}}}

    recs = [fake("a", 2.0, 0.0), fake("b", 1.0, 9.0)]
    assert list(table(recs, gate=read_gate("lb", "tiny"))["model"][1:]) == ["b", "a"]  # e_w1 alone decides
    gate["metrics"]["e_w1"]["version"] = 2  # gated at another version than the records carry: not ranked
    write_json(Path("lb/sensitivity/tiny.json"), gate)
    assert invoke("leaderboard", "--dir", "lb").exit_code == 0
    assert "the sensitivity gate measured version 2, these records carry version 1" in Path("lb/tiny.md").read_text()
    gate["metrics"]["e_w1"]["version"] = 1  # a gate measured on another version of the dataset ranks nothing
    write_json(Path("lb/sensitivity/tiny.json"), {**gate, "dataset_key": "tiny-v0-000000000000"})
    assert invoke("leaderboard", "--dir", "lb").exit_code == 0
    board = Path("lb/tiny.md").read_text()
    assert "e_w1 ↓ (unranked)" in board and f"measured on dataset key tiny-v0-000000000000, these records are on " \
        f"{rec['dataset_key']} (rerun the gate)" in board
    write_json(Path("lb/sensitivity/tiny.json"), {**gate, "dataset_key": rec["dataset_key"]})
    assert invoke("leaderboard", "--dir", "lb").exit_code == 0
    assert "| e_w1 ↓ " in Path("lb/tiny.md").read_text()  # the same key: ranks
    Path("lb/sensitivity/tiny.json").write_text("[1, 2]")
    line = one_error_line(invoke("leaderboard", "--dir", "lb"))
    assert "not a sensitivity gate table" in line


def test_the_board_floor_takes_the_newest_uncertainty_method_without_a_disagreement():
    from calobench.leaderboard import floors

    old = {"metrics": {"m": {"status": "ok", "floor": 1.0, "floor_uncertainty": 0.1, "floor_n": 100, "version": 1}}}
    new = {"metrics": {"m": {"status": "ok", "floor": 1.0, "floor_uncertainty": 0.3, "floor_n": 100, "version": 1,
                             "uncertainty_version": 2}}}
    assert floors([old, new])["m"] == (1.0, 0.3, 100, True)
    other = {"metrics": {"m": {**new["metrics"]["m"], "floor": 1.1}}}
    assert floors([old, new, other])["m"][3] is False  # same version, N and ± method, another value
    # the same floor recomputed through another summation order (1e-17) or an algebraically equal
    # formula (3e-8 of an uncertainty of 0.29, as FPD's eigh form against sqrtm): one floor
    noise = {"metrics": {"m": {**new["metrics"]["m"], "floor": 1.0 + 1e-7, "floor_uncertainty": 0.3 + 1e-8}}}
    assert floors([new, noise])["m"][3] is True
    near = {"metrics": {"m": {**new["metrics"]["m"], "floor": 1.0 + 1e-4}}}  # far below ±, not noise
    assert floors([new, near])["m"][3] is False
