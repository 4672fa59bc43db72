"""An install without an extra: what needs it says which extra to install, in one ``error:`` line for commands.

A subprocess hides the extra's packages behind an import hook, as a minimal install (no extras) has them missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_pyproject

from pararnn_ts import cli

ROOT = Path(__file__).resolve().parents[1]

# Hides the modules named in argv[1] (comma-separated top-level names) as if not installed, then runs argv[2]:
# "import:<module>" prints the ImportError that importing it raises, as JSON; anything else is pararnn-ts's argv.
RUN_WITHOUT = """
import json, sys

class NotInstalled:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name in self.names or name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled(set(sys.argv[1].split(","))))
if sys.argv[2].startswith("import:"):
    try:
        __import__(sys.argv[2][len("import:"):])
    except ImportError as error:
        cause = error.__cause__
        print(json.dumps({"type": type(error).__name__, "message": str(error), "name": error.name,
                          "cause": None if cause is None else [type(cause).__name__, cause.name]}))
else:
    from pararnn_ts.cli import console
    console(sys.argv[2:])
"""


def run_without(missing: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT, missing, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_extras_named_in_the_messages_exist():
    extras = read_pyproject()["project"]["optional-dependencies"]
    assert {"forecast", "world"} <= set(extras)
    assert {module.split(".")[1] for module, _ in cli.VERBS.values()} <= set(extras)  # cli.import_verb's extras


@pytest.mark.parametrize(
    ("package", "missing", "extra"),
    [("pararnn_ts.forecast", "gluonts", "forecast"), ("pararnn_ts.world", "gymnasium", "world")],
)
def test_a_missing_extra_is_named_on_import(package, missing, extra):
    done = run_without(missing, f"import:{package}")
    assert json.loads(done.stdout) == {
        "type": "ImportError",
        "message": f"{package} needs the {extra} extra: pip install 'pararnn-ts[{extra}]'",
        "name": None,
        "cause": ["ModuleNotFoundError", missing],
    }, done.stderr


def test_a_missing_module_of_our_own_is_not_blamed_on_the_extra():
    done = run_without("pararnn_ts.forecast.metrics", "import:pararnn_ts.forecast")
    assert json.loads(done.stdout)["type"] == "ModuleNotFoundError", done.stderr


@pytest.mark.parametrize(
    ("verb", "missing", "extra"),
    [("benchmark", "gluonts", "forecast"), ("world-eval", "gymnasium", "world"), ("plan", "gymnasium", "world")],
)
def test_a_verb_without_its_extra_is_one_error_line(verb, missing, extra):
    done = run_without(missing, verb, "--help")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: pararnn_ts.{extra} needs the {extra} extra: pip install 'pararnn-ts[{extra}]'"]
    assert f"No module named '{missing}'" in done.stderr


def test_fit_of_a_forecast_config_without_the_extra_names_it():
    done = run_without("gluonts", "fit", "-c", "experiments/forecast/quickstart.yaml", "--print_config")
    assert done.returncode != 0 and "pip install 'pararnn-ts[forecast]'" in done.stderr, done.stderr[-2000:]


def test_any_missing_third_party_module_of_a_verb_names_its_extra(monkeypatch, capsys):
    def not_installed(name):
        raise ModuleNotFoundError("No module named 'tokenizers'", name="tokenizers")

    monkeypatch.setattr(cli.importlib, "import_module", not_installed)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.console(["generate", "--help"])
    assert exit_.value.code == 2
    assert "error: pararnn-ts generate needs the lm extra: pip install 'pararnn-ts[lm]'" in capsys.readouterr().err

    def our_bug(name):
        raise ModuleNotFoundError("No module named 'pararnn_ts.lm.gone'", name="pararnn_ts.lm.gone")

    monkeypatch.setattr(cli.importlib, "import_module", our_bug)
    with pytest.raises(ModuleNotFoundError, match="pararnn_ts.lm.gone"):
        cli.console(["generate", "--help"])
