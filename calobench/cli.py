"""The ``calobench`` command line."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import CalobenchError


class UserError(click.ClickException):
    """One line on stderr, non-zero exit, no traceback."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class Interrupted(UserError):
    exit_code = 130


class Group(click.Group):
    def invoke(self, ctx):
        from .model import Interrupted as TrainingInterrupted

        try:
            return super().invoke(ctx)
        except CalobenchError as exc:
            raise UserError(str(exc)) from None
        except TrainingInterrupted as exc:
            raise Interrupted(f"interrupted: {exc}; rerun the same command with --resume to continue") from None
        except KeyboardInterrupt:
            raise Interrupted("interrupted; finished files and the last checkpoint are kept "
                              "(rerun the same command with --resume to continue)") from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: one line, the traceback in a log file
            import os

            if os.environ.get("CALOBENCH_DEBUG"):
                raise
            from .errors import plugin_step

            try:
                with plugin_step("calobench"):
                    raise exc
            except CalobenchError as err:
                raise UserError(f"internal error: {err} (CALOBENCH_DEBUG=1 shows it here)") from None


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # batch schedulers send SIGTERM before killing a job: behave as Ctrl-C


def _showwarning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


def _plugins():
    from .plugins import get_plugins

    p = get_plugins()
    if not getattr(p, "_warned", False):
        p._warned = True
        for name, err in p.registry.failed.items():
            click.echo(f"warning: plugin '{name}' not loaded: {err}", err=True)
        for w in p.registry.warnings:
            click.echo(f"warning: {w}", err=True)
    return p


def _catalog(ctx):
    from .catalog import Catalog

    return Catalog(_plugins().registry, ctx.obj.get("datasets_files", ()))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calobench")
@click.option("--datasets", "datasets_files", multiple=True, type=click.Path(dir_okay=False),
              help="An extra datasets.yaml of your own (repeatable); its entries win.")
@click.pass_context
def cli(ctx, datasets_files):
    """Train, score and compare generative simulators of detector showers."""
    ctx.ensure_object(dict)
    ctx.obj["datasets_files"] = tuple(datasets_files)
    warnings.showwarning = _showwarning


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(["models", "datasets", "metrics", "plots", "checks"]))
@click.pass_context
def list_cmd(ctx, kind):
    """List the installed models, datasets, metrics, plots and physics checks."""
    p = _plugins()
    reg = p.registry
    kinds = [kind] if kind else ["models", "datasets", "metrics", "plots", "checks"]
    for k in kinds:
        click.echo(f"{k}:")
        if k == "datasets":
            cat = _catalog(ctx)
            for name in cat.names():
                d = cat.get(name)
                src = d.entry.get("simulator") and f"simulator {d.entry['simulator']}" or f"files ({d.entry['layout']})"
                avail = "" if d.entry.get("layout") or d.entry["simulator"] in reg.simulators else "  [unavailable: simulator not installed]"
                click.echo(f"  {name:<18} {src:<24} {d.entry['description']}{avail}")
        elif k == "models":
            for name, m in sorted(reg.models.items()):
                ds = ", ".join(m.datasets) or "any"
                click.echo(f"  {name:<18} {m.task:<9} datasets: {ds:<24} presets: {', '.join(m.presets)}  "
                           f"[{reg.owner[('model', name)]}]")
        elif k == "checks":
            for name, ch in reg.checks.items():
                where = ", ".join(ch.datasets) or "any"
                click.echo(f"  {name:<20} datasets: {where:<18} {ch.description}  [{reg.owner[('check', name)]}]")
        elif k == "plots":
            for name, pl in reg.plots.items():
                where = ", ".join(pl.datasets) or "any"
                click.echo(f"  {name:<32} datasets: {where:<18} {pl.description}  [{reg.owner[('plot', name)]}]")
        else:
            for name, m in sorted(reg.metrics.items()):
                arrow = "higher is better" if m.higher_is_better else "lower is better"
                click.echo(f"  {name:<20} {arrow:<17} {m.description}  [{reg.owner[('metric', name)]}]")


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include calobench's built-in plugins.")
def plugins(show_all):
    """Installed plugins: name, version, hooks."""
    p = _plugins()
    rows = [i for i in p.infos.values() if show_all or not i.builtin]
    click.echo(json.dumps([{"name": i.name, "version": i.version, "hooks": i.hooks, "builtin": i.builtin}
                           for i in rows], indent=2))
    for name, err in p.failed.items():
        click.echo(f"failed: {name}: {err}", err=True)


SEED = click.IntRange(0, 2**32 - 1)


@cli.command()
@click.option("--model", required=True, help="Model name (see `calobench list models`).")
@click.option("--dataset", required=True, help="Dataset name (see `calobench list datasets`).")
@click.option("--preset", default="default", show_default=True, help="smoke | default | paper (or the model's own).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--metrics", default=None, help="Comma-separated metric names (default: all installed).")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False), help="Runs folder.")
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint.")
@click.option("--leaderboard", "lb", default=None, type=click.Path(file_okay=False),
              help="Add the record to the leaderboard in this folder (default: none; the record is always in the "
              "run folder). Presets marked unranked (smoke) never reach a board.")
@click.option("--no-plots", is_flag=True)
@click.option("--no-timing", is_flag=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a model option or runner setting; VALUE is JSON when it parses (5, 1e-3, true, null, "
              "[1,2]), else text. Unknown keys and bad values are errors.")
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(1),
              help="Train with N processes (DistributedDataParallel; or start under torchrun).")
@click.option("--target", default=None, help="Refine models: the dataset to refine towards (default: DATASET's "
              "declared counterpart).")
@click.pass_context
def run(ctx, model, dataset, preset, seed, device, metrics, out, resume, lb, no_plots, no_timing,
        quiet, overrides, nproc, target):
    """Train MODEL on DATASET, sample, score, record, update the leaderboard."""
    from .options import parse_set
    from .runner import RunOptions
    from .runner import run as do_run

    overrides = parse_set(overrides)
    if nproc > 1:
        from .distributed import launched

        if not launched():
            sys.exit(_launch(nproc))

    _plugins()
    opts = RunOptions(model=model, dataset=dataset, preset=preset, seed=seed, device=device,
                      metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
                      out=Path(out), resume=resume, leaderboard=Path(lb) if lb else None,
                      progress=not quiet, timing=not no_timing, plots=not no_plots,
                      datasets_files=ctx.obj["datasets_files"], overrides=overrides, target=target,
                      log=lambda s: click.echo(s, err=True))
    record = do_run(opts)
    if "rank" in record:  # a worker of a multi-process run: rank 0 reports
        return
    _print_results(record)
    click.echo(f"run folder:  {record['run_dir']}")
    click.echo(f"record:      {Path(record['run_dir']) / 'record.json'}")
    if record.get("plots"):
        click.echo(f"plots:       {Path(record['plots'][0]).parent}/ ({len(record['plots'])} files)")
    for p in record.get("leaderboard", []):
        click.echo(f"leaderboard: {p}")


def _argv_without_nproc(argv):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch(nproc: int) -> int:
    """Start ``nproc`` copies of this command as the ranks of one process group on this machine;
    rank 0 talks to the terminal. When one rank fails the others are stopped, and its first
    error line is shown."""
    import os
    import socket
    import subprocess
    import tempfile
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "calobench", *_argv_without_nproc(sys.argv[1:])]
    procs, logs = [], []
    for r in range(nproc):
        env = {**os.environ, "WORLD_SIZE": str(nproc), "RANK": str(r), "LOCAL_RANK": str(r),
               "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        log = None if r == 0 else tempfile.TemporaryFile(mode="w+")
        logs.append(log)
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL if r else None, stderr=log))
    bad = None  # the first rank seen failing
    try:
        while any(p.poll() is None for p in procs):
            if bad is None:
                bad = next((r for r, p in enumerate(procs) if p.poll() not in (None, 0)), None)
                if bad is not None:
                    time.sleep(1.0)  # the others may be finishing their own error; then stop them
                    for p in procs:
                        if p.poll() is None:
                            p.terminate()
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    codes = [p.wait() for p in procs]
    if bad is None:
        bad = next((r for r, c in enumerate(codes) if c), None)
    if bad is None:
        return 0
    if bad != 0:  # rank 0 prints its own errors
        logs[bad].seek(0)
        lines = [ln for ln in logs[bad].read().splitlines() if ln.startswith("error:")]
        click.echo(f"error: process {bad} of {nproc} failed" + (f": {lines[0][7:]}" if lines else ""), err=True)
    return codes[bad] if codes[bad] > 0 else 1


def _print_results(record):
    sps = record.get("generation", {}).get("showers_per_s", {})
    click.echo(f"{record['model']} on {record['dataset']} ({record['n_test']} showers)")
    click.echo(f"  {'metric':<22} {'value':>22} {'floor (real vs real)':>24}")
    for name, e in record["metrics"].items():
        if e["status"] != "ok":
            click.echo(f"  {name:<22} {e['status']:>22}  {e.get('note', '')}")
            continue
        arrow = f"→{e['target']:g}" if e.get("target") is not None else "↑" if e["higher_is_better"] else "↓"
        val = f"{e['value']:.4g} ± {e['uncertainty']:.2g}"
        floor = f"{e['floor']:.4g} ± {e['floor_uncertainty']:.2g}" if "floor" in e else "-"
        click.echo(f"  {name + ' ' + arrow:<22} {val:>22} {floor:>24}")
    for split, x in record.get("extra_splits", {}).items():
        vals = ", ".join(f"{m}={e['value']:.4g}" for m, e in x["metrics"].items() if e["status"] == "ok")
        click.echo(f"  split {split}: {vals}")
    physics = record.get("physics") or []
    if physics:
        from .checks import summary

        click.echo(f"  physics checks: {summary(physics)} pass")
        for e in physics:
            v = "n/a" if e["value"] is None else f"{e['value']:+.4g}"
            click.echo(f"    {'pass' if e['pass'] else 'FAIL'}  {e['name']:<28} {v:>10}  {e['target']}")
    if sps:
        click.echo("  showers/s: " + ", ".join(f"batch {b}: {v:,.0f}" for b, v in sps.items())
                   + f" ({record['generation']['device']})")


@cli.command()
@click.option("--dataset", required=True)
@click.option("--samples", required=True, type=click.Path(dir_okay=False), help="HDF5 file: the calobench layout, or the dataset's own (e.g. CaloChallenge).")
@click.option("--metrics", default=None, help="Comma-separated metric names (default: all).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--name", default=None, help="Model name: with --leaderboard, add the result to that board under it.")
@click.option("--leaderboard", "lb", default=None, type=click.Path(file_okay=False),
              help="Board folder to add the record to (needs --name).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the record JSON here.")
@click.option("--device", default="cpu", show_default=True,
              help="Where metrics train their networks: cpu (floors reproducible bit for bit) | cuda | auto.")
@click.pass_context
def evaluate(ctx, dataset, samples, metrics, seed, name, lb, out, device):
    """Score showers produced elsewhere (a calobench-layout file, or one in the dataset's own layout,
    e.g. a CaloChallenge file) against DATASET's test split."""
    from .runner import evaluate as do_eval

    _plugins()
    record = do_eval(dataset, Path(samples), [m.strip() for m in metrics.split(",")] if metrics else None,
                     seed=seed, name=name, leaderboard=Path(lb) if lb else None, out=Path(out) if out else None,
                     datasets_files=ctx.obj["datasets_files"], log=lambda s: click.echo(s, err=True), device=device)
    _print_results(record)
    for p in record.get("leaderboard", []):
        click.echo(f"leaderboard: {p}")


@cli.group(cls=Group)
def data():
    """Prepare and inspect datasets."""


@data.command("prepare")
@click.argument("dataset")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable).")
@click.pass_context
def data_prepare(ctx, dataset, splits):
    """Simulate (or download) DATASET into the cache."""
    ds = _catalog(ctx).get(dataset)
    ds.prepare(list(splits) or None, progress=True)
    for s in splits or ds.splits:
        click.echo(f"{dataset}/{s}: {len(ds.load(s))} showers  {ds.split_path(s) if ds.simulator else ''}")


@data.command("info")
@click.argument("dataset")
@click.pass_context
def data_info(ctx, dataset):
    """Describe DATASET: geometry, conditions, splits, cache."""
    click.echo(json.dumps(_catalog(ctx).get(dataset).info(), indent=2, default=str))


@cli.command()
@click.option("--dir", "folder", default="leaderboard", show_default=True, type=click.Path(file_okay=False))
def leaderboard(folder):
    """Regenerate DIR/*.md from the JSON records in DIR/records/."""
    from .io import locked
    from .leaderboard import render

    if not (Path(folder) / "records").is_dir():
        raise CalobenchError(f"{Path(folder) / 'records'}: no such folder of records")
    with locked(folder):
        paths = render(folder)
    if not paths:
        click.echo(f"no records in {Path(folder) / 'records'}")
    for p in paths:
        click.echo(f"wrote {p}")


@cli.command()
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
def records(folders):
    """List every record under FOLDERS (default: runs and leaderboard), smoke runs included."""
    from .leaderboard import list_records

    found = list_records(folders or ("runs", "leaderboard"))
    if not found:
        click.echo("no records")
    for p, r in found:
        ranked = "ranked" if r.get("ranked", True) else "unranked"
        click.echo(f"{r.get('dataset', '?'):<22} {str(r.get('model', '?')):<20} {r.get('preset', '?'):<8} "
                   f"{str(r.get('config_hash', '-'))[:8]:<9} seed {r.get('seed', '?'):<4} {ranked:<9} "
                   f"{r.get('date', '')[:10]}  {p}")


def add_plugin_commands() -> None:
    from .plugins import get_plugins

    get_plugins().pm.hook.register_commands(cli=cli)


def main():
    import signal

    signal.signal(signal.SIGTERM, _sigterm)
    try:
        add_plugin_commands()
    except CalobenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # a plugin's register_commands is broken: the rest still works
        click.echo(f"warning: a plugin's register_commands failed: {type(exc).__name__}: {exc}", err=True)
    cli(prog_name="calobench")


if __name__ == "__main__":
    main()
