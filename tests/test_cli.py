import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from calobench import ShowerData, read_hdf5, write_hdf5
from calobench.observables import features
from calobench.catalog import Catalog
from calobench.plugins import Plugins, get_plugins, set_plugins
from calobench.runner import VOLATILE

RUN = ["run", "--model", "tiny_gen", "--dataset", "tiny", "--preset", "smoke", "--quiet"]


def run_dir_of(out="runs", preset="smoke", seed=0) -> Path:
    found = sorted(Path(out).glob(f"tiny__tiny_gen__{preset}-*__seed{seed}"))
    assert len(found) == 1, found
    return found[0]


def record_of(out="runs", preset="smoke", seed=0):
    return json.loads((run_dir_of(out, preset, seed) / "record.json").read_text())


def strip(rec):
    rec = json.loads(json.dumps(rec))
    for key in VOLATILE:
        *parents, last = key.split(".")
        d = rec
        for p in parents:
            d = d.get(p, {})
        d.pop(last, None)
    for m in [*rec["metrics"].values(), *(e for x in rec.get("extra_splits", {}).values()
                                          for e in x["metrics"].values()), *rec.get("physics", [])]:
        m.pop("seconds", None)
        if "note" in m:  # the traceback's path names the run folder
            m["note"] = m["note"].split("; traceback in")[0]
    rec.pop("plots", None)
    return rec


def test_help_and_lists(invoke):
    r = invoke("--help")
    assert r.exit_code == 0 and "run" in r.output and "evaluate" in r.output
    r = invoke("list")
    assert "tiny_gen" in r.output and "tiny" in r.output and "e_w1" in r.output
    r = invoke("list", "models")
    assert "tiny_gen" in r.output and "metrics:" not in r.output


def test_plugins_lists_hooks_and_builtins(invoke):
    r = invoke("plugins")
    info = json.loads(r.stdout)
    assert [p["name"] for p in info] == ["toyplugin"]
    assert "register_models" in info[0]["hooks"]
    names = [p["name"] for p in json.loads(invoke("plugins", "--all").stdout)]
    assert "calobench" in names


def test_run_writes_everything(invoke):
    r = invoke(*RUN)
    assert r.exit_code == 0, r.output
    run_dir = run_dir_of()
    for f in ("config.json", "checkpoint.pt", "model.safetensors", "samples.h5", "record.json",
              "samples_hot.h5", "plots/observables.png", "plots/losses.png"):
        assert (run_dir / f).exists(), f
    rec = record_of()
    assert rec["metrics"]["e_w1"]["status"] == "ok"
    assert rec["metrics"]["e_w1"]["floor"] < rec["metrics"]["e_w1"]["value"]
    assert rec["metrics"]["needs_many"]["status"] == "skipped"
    assert rec["metrics"]["broken_metric"]["status"] == "failed" and "boom" in rec["metrics"]["broken_metric"]["note"]
    assert "RuntimeError: boom" in (run_dir / "error.log").read_text()
    assert rec["extra_splits"]["hot"]["n"] == 40
    # plots: registered objects, drawn for their datasets only, fed the metric results explicitly
    gen_e = features(read_hdf5(run_dir / "samples.h5"))["E_total"]
    n, total, n_extra = (run_dir / "plots" / "tiny_energy.txt").read_text().split()
    assert (int(n), int(n_extra)) == (len(gen_e), 1) and float(total) == pytest.approx(gen_e.sum(), rel=1e-5)
    assert str(run_dir / "plots" / "tiny_energy.txt") in rec["plots"]
    assert "plot 'broken_plot'" in r.output and "RuntimeError: plot boom" in (run_dir / "error.log").read_text()
    assert "plot 'needs_missing' skipped: metric(s) no_such_metric did not run" in r.output
    # physics checks: entries with value, target and pass; a failing check is one failed entry
    physics = {e["name"]: e for e in rec["physics"]}
    assert set(physics) == {"mean_energy_1-5.5", "mean_energy_5.5-10", "mean_energy_hot", "broken_check"}
    assert physics["mean_energy_hot"]["pass"] is False and physics["mean_energy_hot"]["target"] == "|gen/real - 1| <= 1e-09"
    e = physics["mean_energy_1-5.5"]
    assert e["value"] == pytest.approx(e["generated"] / e["real"] - 1) and e["pass"] == (abs(e["value"]) <= 0.5)
    assert physics["broken_check"]["pass"] is False and "ValueError: check boom" in physics["broken_check"]["note"]
    assert "physics checks:" in r.output and "FAIL  mean_energy_hot" in r.output
    # metrics scoring one pair share a scratch space; the floor gets its own
    assert rec["metrics"]["e_w1_twin"]["details"] == {"reused": True, "n": len(gen_e)}
    assert set(rec["generation"]["showers_per_s"]) == {"1", "10"}
    for key in ("code", "environment", "plugins", "model_plugin", "train", "date", "config", "runner",
                "config_hash", "identity"):
        assert key in rec
    assert {"revision", "dirty"} <= set(rec["code"]) and "scipy" in rec["environment"]["packages"]
    assert rec["config"] == {**toyplugin_options(), "steps": 30, "batch": 32, "lr": 0.01}
    assert rec["train"]["steps"] == 30 and rec["ranked"] is False
    assert not Path("leaderboard").exists()  # no board unless one is named, and never for smoke
    assert "record:" in r.stdout and "leaderboard:" not in r.stdout


def toyplugin_options():
    import toyplugin

    return toyplugin.TinyOptions().model_dump()


def test_ranked_run_reaches_the_named_board_only(invoke):
    r = invoke(*RUN[:-2], "default", "--quiet", "--no-timing", "--no-plots", "--leaderboard", "board")
    assert r.exit_code == 0, r.output
    md = Path("board/tiny.md").read_text()
    assert "floor (real vs real)" in md and "tiny_gen" in md and "e_w1 ↓" in md and "±" in md
    rec = json.loads(next(Path("board/records").glob("*.json")).read_text())
    k = sum(e["pass"] for e in rec["physics"])
    row = next(line for line in md.splitlines() if "tiny_gen" in line)
    assert "| physics " in md and f" {k}/4 " in row  # the board shows physics k/n per row
    assert len(list(Path("board/records").glob("*.json"))) == 1
    assert "leaderboard: board/tiny.md" in r.stdout
    r = invoke(*RUN, "--no-timing", "--no-plots", "--leaderboard", "board")  # smoke: the board is untouched
    assert r.exit_code == 0, r.output
    assert Path("board/tiny.md").read_text() == md and len(list(Path("board/records").glob("*.json"))) == 1


def test_same_seed_same_record(invoke):
    invoke(*RUN, "--out", "a", "--no-timing")
    invoke(*RUN, "--out", "b", "--no-timing")
    a, b = strip(record_of("a")), strip(record_of("b"))
    assert a["train"]["history"] == b["train"]["history"]
    assert a | {"train": None} == b | {"train": None}
    assert a["metrics"]["e_w1"]["value"] > 0
    invoke(*RUN, "--out", "c", "--no-timing", "--seed", "1")
    assert strip(record_of("c", seed=1))["metrics"] != strip(record_of("a"))["metrics"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_checkpoints_then_resume_matches_uninterrupted(invoke, monkeypatch, sig):
    invoke(*RUN, "--out", "full", "--no-timing", "--no-plots")
    monkeypatch.setenv("TOY_SIGNAL_AT", "20")
    monkeypatch.setenv("TOY_SIGNAL", sig)
    r = invoke(*RUN, "--out", "cut", "--no-timing", "--no-plots")
    monkeypatch.delenv("TOY_SIGNAL_AT")
    assert r.exit_code == 130 and f"{sig} at step 21" in r.output and "--resume" in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: interrupted: ")
    assert "Traceback" not in r.output
    run_dir = run_dir_of("cut")
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "record.json").exists()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    r = invoke(*RUN, "--out", "cut", "--no-timing", "--no-plots")
    assert r.exit_code != 0 and "pass --resume" in r.output
    (run_dir / ".checkpoint.pt.999999999.killed.tmp").write_bytes(b"half a checkpoint")  # as SIGKILL mid-write leaves
    r = invoke(*RUN, "--out", "cut", "--no-timing", "--no-plots", "--resume")
    assert r.exit_code == 0, r.output
    assert not list(run_dir.glob(".*.tmp"))
    resumed, full = record_of("cut"), record_of("full")
    assert resumed["train"]["resumed_from"] == 21
    assert strip(resumed)["metrics"] == strip(full)["metrics"]
    assert resumed["train"]["history"] == full["train"]["history"]


def test_keyboard_interrupt_mid_step_keeps_last_checkpoint(invoke):
    r = invoke(*RUN, "--no-timing", "--no-plots", "--set", "interrupt_at=20", "--set", "checkpoint_every_s=0")
    assert r.exit_code == 130 and "--resume" in r.output
    assert (run_dir_of() / "checkpoint.pt").exists() and not (run_dir_of() / "record.json").exists()
    r = invoke(*RUN, "--no-timing", "--no-plots", "--set", "interrupt_at=20", "--set", "checkpoint_every_s=0",
               "--resume", "--set", "lr=0.5")
    assert r.exit_code == 1 and "--resume" in r.output and "lr" in r.output


def test_nan_loss_is_a_clear_error(invoke):
    r = invoke(*RUN, "--set", "nan_at=5")
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1].startswith("error: loss 'mse' became non-finite at step 5")


def test_nan_samples_refused(invoke):
    r = invoke(*RUN, "--set", "nan_samples=true")
    assert r.exit_code == 1 and "NaN/inf" in r.output
    assert not (run_dir_of() / "record.json").exists() and not (run_dir_of() / "samples.h5").exists()


@pytest.mark.parametrize("args,msg", [
    (["--model", "tiny_gn", "--dataset", "tiny"], "unknown model 'tiny_gn' (did you mean: tiny_gen?)"),
    (["--model", "tiny_gen", "--dataset", "tinny"], "unknown dataset 'tinny' (did you mean: tiny?)"),
    (["--model", "only_elsewhere", "--dataset", "tiny"], "does not support dataset 'tiny'"),
    (["--model", "tiny_gen", "--dataset", "tiny", "--metrics", "e_w2"], "unknown metric 'e_w2'"),
    (["--model", "tiny_gen", "--dataset", "tiny", "--preset", "huge"], "has no preset 'huge'"),
    (["--model", "tiny_gen", "--dataset", "tiny", "--device", "cuda:0"] , "cuda"),
])
def test_user_errors_are_one_line(invoke, args, msg):
    import torch

    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("has a GPU")
    r = invoke("run", *args)
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(invoke, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = invoke(*RUN, "--out", ro / "sub")
    assert r.exit_code == 1 and "cannot create run folder" in r.output


def test_unwritable_out_file_in_the_way(invoke, tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    r = invoke(*RUN, "--out", tmp_path / "blocker" / "sub")
    assert r.exit_code == 1 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1


def _samples(tmp_path, n=80, shape=(4, 4, 3), conds=("energy",), nan=False):
    x = np.abs(np.random.default_rng(0).normal(size=(n, *shape))).astype(np.float32)
    if nan:
        x[3, 0, 0, 0] = np.inf
    path = tmp_path / "s.h5"
    write_hdf5(path, ShowerData(x, {c: np.linspace(1, 10, n) for c in conds}))
    return path


def test_evaluate_scores_external_samples(invoke, tmp_path):
    path = _samples(tmp_path)
    r = invoke("evaluate", "--dataset", "tiny", "--samples", path, "--metrics", "e_w1", "--name", "mygan",
               "--out", tmp_path / "rec.json", "--leaderboard", "lb")
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["metrics"]["e_w1"]["status"] == "ok" and "floor" in rec["metrics"]["e_w1"]
    assert "mygan" in Path("lb/tiny.md").read_text()


@pytest.mark.parametrize("kw,msg", [
    ({"shape": (4, 4, 2)}, "expects (4, 4, 3)"),
    ({"conds": ("theta",)}, "missing condition(s) energy"),
    ({"nan": True}, "NaN/inf"),
])
def test_evaluate_bad_files(invoke, tmp_path, kw, msg):
    r = invoke("evaluate", "--dataset", "tiny", "--samples", _samples(tmp_path, **kw))
    assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1


def test_evaluate_corrupt_file(invoke, tmp_path):
    (tmp_path / "c.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    r = invoke("evaluate", "--dataset", "tiny", "--samples", tmp_path / "c.h5")
    assert r.exit_code == 1 and "corrupt or truncated" in r.output


def test_leaderboard_regenerates_from_records(invoke):
    invoke(*RUN[:-2], "default", "--quiet", "--no-timing", "--no-plots", "--leaderboard", "leaderboard")
    before = Path("leaderboard/tiny.md").read_bytes()
    Path("leaderboard/tiny.md").unlink()
    r = invoke("leaderboard")
    assert r.exit_code == 0 and Path("leaderboard/tiny.md").read_bytes() == before


def test_data_prepare_and_info(invoke):
    r = invoke("data", "prepare", "tiny", "--split", "test")
    assert r.exit_code == 0 and "tiny/test: 80 showers" in r.output
    info = json.loads(invoke("data", "info", "tiny").output)
    assert info["shape"] == [4, 4, 3] and info["prepared"]["test"] and not info["prepared"]["train"]
    assert info["conditions"] == {"energy": [1.0, 10.0]}


class FakeEP:
    def __init__(self, name, target, dist=None):
        self.name, self.target, self.dist = name, target, dist

    def load(self):
        import importlib

        return importlib.import_module(self.target)


def test_broken_plugin_reported_by_name_others_work(monkeypatch, invoke):
    eps = [FakeEP("broken", "no_such_module_xyz"), FakeEP("toy", "toyplugin")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps)
    set_plugins(Plugins())
    p = get_plugins()
    assert "broken" in p.failed and "No module named" in p.failed["broken"]
    assert "tiny_gen" in p.registry.models
    r = invoke("list", "models")
    assert "plugin 'broken' not loaded" in r.output and "tiny_gen" in r.output


def test_env_var_restricts_plugins(monkeypatch):
    eps = [FakeEP("broken", "no_such_module_xyz"), FakeEP("toy", "toyplugin")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps)
    monkeypatch.setenv("CALOBENCH_PLUGINS", "toy")
    p = Plugins()
    assert not p.failed and "tiny_gen" in p.registry.models
    monkeypatch.setenv("CALOBENCH_PLUGINS", "none")
    assert not Plugins().registry.models


def test_model_weights_roundtrip(tmp_path):
    import torch

    import toyplugin
    from calobench.runner import dataset_info

    ds = Catalog(get_plugins().registry).get("tiny")
    info = dataset_info(ds)
    m = toyplugin.TinyGen(info, toyplugin.TinyGen.config_for("smoke"), torch.device("cpu"))
    m.save(tmp_path / "w.safetensors")
    m2 = toyplugin.TinyGen(info, toyplugin.TinyGen.config_for("smoke"), torch.device("cpu"))
    m2.load(tmp_path / "w.safetensors")
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])


def test_plugin_can_add_a_command(monkeypatch):
    import click
    from click.testing import CliRunner

    import calobench
    from calobench import cli as cli_mod

    class AddsCommand:
        @staticmethod
        @calobench.hookimpl
        def register_commands(cli):
            @cli.command(name="hello-physics")
            def hello():
                click.echo("hello from a plugin")

    set_plugins(Plugins(extra=[AddsCommand], load_entrypoints=False))
    cli_mod.add_plugin_commands()
    try:
        r = CliRunner().invoke(cli_mod.cli, ["hello-physics"])
        assert r.exit_code == 0 and "hello from a plugin" in r.output
    finally:
        cli_mod.cli.commands.pop("hello-physics", None)
