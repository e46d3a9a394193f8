import subprocess
import sys

from gateway import __version__
from gateway.cli import main


def test_version_prints_package_version(capsys):
    assert main(["version"]) == 0
    assert f"smgate {__version__}" in capsys.readouterr().out


def test_console_script_runs_as_a_process():
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("smgate ")
