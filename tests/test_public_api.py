"""Plugins and benchmark scripts use only calobench's public API, and every benchmark script
still imports and parses its arguments."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {"calobench", "calobench.observables", "calobench.gflash", "calobench.plots", "calobench.distributed",
                  "calobench.timing", "calobench.provenance", "calobench.io", "calobench.training",
                  "calobench.checks"}
SOURCES = sorted([*ROOT.glob("plugins/*/calobench_*/**/*.py"), *ROOT.glob("plugins/*/benchmarks/*.py"),
                  *ROOT.glob("examples/*/calobench_*/**/*.py"), *ROOT.glob("benchmarks/*.py")])
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("plugins/*/benchmarks/*.py")])


def calobench_imports(path):
    """(module, name) for every import of calobench in ``path``, attribute access of calobench.x included."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "calobench":
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "calobench":
                    yield alias.name, None


def test_sources_found():
    assert len(SOURCES) > 20 and len(SCRIPTS) >= 9


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_public_api(path):
    bad = []
    for module, name in calobench_imports(path):
        if module not in PUBLIC_MODULES:
            bad.append(f"import of internal module {module}")
        elif name and name.startswith("_"):
            bad.append(f"private name {module}.{name}")
    assert not bad, bad


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_benchmark_script_starts(path):
    r = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr[-2000:]
