"""The README's commands are the ones CI and the tests run, so they cannot drift."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import requires_smsa

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [
        line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_ci_runs_the_readme_test_command():
    quickstart = [command for command in readme_commands() if "python -m pytest" in command]
    test_command = quickstart[0].split("&& ")[-1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()
    install = quickstart[0].rsplit(" && ", 1)[0].split(" && ")[2:]  # after venv creation and activation
    for step in install:
        assert step.replace("pip install", "python -m pip install --quiet") in ci, step


@pytest.mark.slow
@requires_smsa
def test_readme_offline_smoke_command(tmp_path):
    """The README's quick offline run, as written, except for the output folder."""
    (command,) = [c for c in readme_commands() if "--max_train_samples 64" in c]
    argv = shlex.split(command)
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "smoke")
    result = subprocess.run(argv, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    assert metrics["validation"]["num_examples"] == 64
    assert (tmp_path / "smoke" / "best" / "model.safetensors").is_file()
