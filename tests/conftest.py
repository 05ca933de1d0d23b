import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from calobench.cli import cli  # noqa: E402
from calobench.plugins import Plugins, set_plugins  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and working folder, and only the toy plugin."""
    monkeypatch.setenv("CALOBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CALOBENCH_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    import toyplugin

    set_plugins(Plugins(extra=[toyplugin], load_entrypoints=False))
    yield
    set_plugins(None)


@pytest.fixture
def invoke():
    def _invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return _invoke
