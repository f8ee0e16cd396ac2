"""The docs' commands are the ones CI and the tests run, so they cannot drift.

Every command in a ```bash block of README.md and docs/*.md is checked against its program's own ``--help`` (each
option it passes exists, each repository file it names is there); the quick offline training runs as written here,
and tests/test_readme_inference.py runs the ``hf-indosent`` commands on the quickstart's run folder. Commands that
need the Hub, a GPU, the full data or hours are checked against ``--help`` only. CI runs the README's test command,
every relative link leads to a file (and heading) that exists, and the README stays short.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import requires_smsa

from hf_indosent import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = (README, *sorted((ROOT / "docs").glob("*.md")))
README_MAX_LINES = 250

SEPARATORS = ("&&", "||", "|", ";")
"""Between the commands of one line: `cat FILE | hf-indosent ...`, the quickstart's `a && b && c`."""
NOT_CHECKED = (
    ("pip",),
    ("python3", "-m", "venv"),
    ("python", "-m", "pytest"),
    (".",),
    ("hf",),
    ("cat",),
    ("ruff",),
    ("curl",),
    ("docker",),
    ("serve",),
)
"""Programs that are not this project's: installers, the shell, the Hub's own CLI, the test runner, lint."""
ENVIRONMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
REPOSITORY_PATHS = ("configs/", "examples/", "scripts/", "benchmarks/", "accelerate_config.yaml")
"""Arguments that name files shipped in this repository (a recipe, an example input, a script)."""
ALIASES = {"scripts/train.py": "hf-indosent train"}
"""scripts/train.py is `hf-indosent train` (it calls the same runner with the same arguments)."""
PASSES_ON = {"scripts/seeds.py": "hf-indosent train"}
"""Every option scripts/seeds.py does not take itself goes to the training it runs per seed."""


def bash_commands(path: Path) -> list[str]:
    """The command lines of the ```bash blocks of one Markdown file (comment lines left out)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    return [
        line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")
    ]


def doc_commands() -> list[str]:
    """Every command of README.md, then of docs/*.md, in that order, each once (a page may repeat the README's)."""
    return list(dict.fromkeys(command for path in DOCS for command in bash_commands(path)))


def programs(command: str) -> list[tuple[str, list[str]]]:
    """(program, its arguments) for each program a command line starts, this project's only.

    ``accelerate launch [options] scripts/train.py [args]`` is two: the launcher with its options, then the script
    with its arguments; ``-m hf_indosent <command>`` and ``python <script>`` are the command and the script."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS:
            parts.append([])
        else:
            parts[-1].append(token)
    found = []
    for part in parts:
        while part and ENVIRONMENT.match(part[0]):
            part = part[1:]
        if not part or any(tuple(part[: len(prefix)]) == prefix for prefix in NOT_CHECKED):
            continue
        if part[:2] == ["accelerate", "launch"]:
            script = next(i for i, arg in enumerate(part) if arg == "-m" or arg.endswith(".py"))
            found.append(("accelerate launch", part[2:script]))
            part = part[script:] if part[script] != "-m" else ["python", *part[script:]]
        if part[0] in ("python", "python3") and part[1:3] == ["-m", "hf_indosent"]:
            part = ["hf-indosent", *part[3:]]
        if part[0] == "hf-indosent":
            found.append((f"hf-indosent {part[1]}", part[2:]))
        elif part[0] in ("python", "python3") and part[1].endswith(".py"):
            found.append((ALIASES.get(part[1], part[1]), part[2:]))
        elif part[0].endswith(".py"):
            found.append((ALIASES.get(part[0], part[0]), part[1:]))
        else:
            raise AssertionError(f"{command!r}: no check knows the program {part[0]!r}; teach tests/test_readme.py")
    return found


def _printed_help(argv: list[str], show: Callable[[], object]) -> str:
    """What ``show`` prints before argparse's help exits with 0, run with ``argv`` as the command line (accelerate's
    help lists only the options sys.argv names, so it must be the program's own); empty if no help was printed."""
    printed, saved = io.StringIO(), sys.argv[:]
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(printed):
            show()
    except SystemExit as done:
        return printed.getvalue() if done.code in (0, None) else ""
    finally:
        sys.argv = saved
    return ""


def _run_script(path: Path) -> None:
    """``python path`` in this process (sys.argv set by the caller): the script's folder first on sys.path."""
    saved = sys.path[:]
    sys.path.insert(0, str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.path[:] = saved


@functools.cache
def help_text(program: str) -> str:
    """``program --help``, printed by the program's own parser, in this process (no interpreter start per program)."""
    if program.startswith("hf-indosent "):
        command = program.split()[1]
        return _printed_help(["hf-indosent", command, "--help"], lambda: cli.main([command, "--help"]))
    if program == "accelerate launch":
        from accelerate.commands.launch import launch_command_parser

        return _printed_help(["accelerate", "launch", "--help"], lambda: launch_command_parser().parse_args(["--help"]))
    script = ROOT / program
    return _printed_help([str(script), "--help"], lambda: _run_script(script))


def options(help_output: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[A-Za-z0-9][\w-]*", help_output))


def problems(command: str) -> list[str]:
    """What in ``command`` its programs would not take: an option their --help lacks, a repository file missing."""
    found = []
    for program, argv in programs(command):
        if program.endswith(".py") and not (ROOT / program).is_file():
            found.append(f"{program} is not in the repository")
            continue
        shown = help_text(program)
        if not shown:
            found.append(f"{program} --help printed no help")
            continue
        known = options(shown)
        if program in PASSES_ON:
            known |= options(help_text(PASSES_ON[program]))
        named = [arg.partition("=") for arg in argv]
        found += [
            f"{program} has no option {name}" for name, _, _ in named if name.startswith("--") and name not in known
        ]
        paths = [value or name for name, _, value in named if (value or name).startswith(REPOSITORY_PATHS)]
        found += [f"{path} is not in the repository" for path in paths if not (ROOT / path).exists()]
    return [f"{command}: {problem}" for problem in found]


def test_every_documented_command_matches_its_help():
    commands = doc_commands()
    assert len(commands) > 40  # README.md and every docs page were read
    assert [problem for command in commands for problem in problems(command)] == []


def test_the_command_check_catches_drift():
    """A renamed option, an unknown command, a missing recipe and a mistyped launcher option are all reported."""
    assert problems("hf-indosent predict --model m --text_colum review") == [
        "hf-indosent predict --model m --text_colum review: hf-indosent predict has no option --text_colum"
    ]
    assert problems("hf-indosent predikt --model m")[0].endswith("hf-indosent predikt --help printed no help")
    assert problems("python scripts/train.py --config configs/missing.yaml")[0].endswith(
        "configs/missing.yaml is not in the repository"
    )
    launched = "accelerate launch --num_procs 2 scripts/seeds.py --seeds 1,2 --output_dir o --learning_rate 1e-4"
    assert problems(launched) == [f"{launched}: accelerate launch has no option --num_procs"]


def test_every_cli_command_is_documented():
    documented = {program for command in doc_commands() for program, _ in programs(command)}
    assert {f"hf-indosent {name}" for name in cli.COMMANDS} <= documented


def test_ci_runs_the_readme_test_command():
    quickstart = [command for command in bash_commands(README) if "python -m pytest" in command]
    test_command = quickstart[0].split("&& ")[-1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()
    install = quickstart[0].rsplit(" && ", 1)[0].split(" && ")[2:]  # after venv creation and activation
    for step in install:
        assert step.replace("pip install", "python -m pip install --quiet") in ci, step


def test_readme_fits_a_screen_or_four():
    assert len(README.read_text(encoding="utf-8").splitlines()) < README_MAX_LINES


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen[anchor] = seen.get(anchor, -1) + 1
        anchors.add(f"{anchor}-{count}" if count else anchor)  # GitHub numbers repeated headings
    return anchors


def broken_links(path: Path) -> list[str]:
    """Relative links of a Markdown file (code blocks aside) whose file, or heading in a Markdown file, is missing."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{path.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(f"{path.name}: {target} (no such heading)")
    return broken


def test_every_relative_link_leads_somewhere():
    assert [broken for path in DOCS for broken in broken_links(path)] == []


def test_the_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A `code` heading (here)\n", encoding="utf-8")
    page.write_text(
        "[ok](other.md#a-code-heading-here) [web](https://example.com/x) ![gone](pic.png) [moved](other.md#gone)\n"
        "```bash\n[not a link](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["page.md: pic.png (no such file)", "page.md: other.md#gone (no such heading)"]


@pytest.mark.slow
@requires_smsa
def test_docs_offline_smoke_command(tmp_path):
    """The docs' quick offline run, as written, except for the output folder: the one training the tests run."""
    (command,) = [c for c in doc_commands() if "--max_train_samples 64" in c]
    argv = shlex.split(command)
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "smoke")
    result = subprocess.run(argv, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    assert metrics["validation"]["num_examples"] == 64
    assert (tmp_path / "smoke" / "best" / "model.safetensors").is_file()


def test_the_robustness_page_names_tests_that_exist():
    """docs/robustness.md proves each guarantee by naming its tests: every name it gives is a test in tests/."""
    page = (ROOT / "docs" / "robustness.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b(test_\w+?)(?:\.py|\b)", page)) - {"test_"}
    defined = {
        match
        for path in (ROOT / "tests").glob("test_*.py")
        for match in [path.stem, *re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), flags=re.M)]
    }
    assert len(named) > 40
    assert sorted(named - defined) == []
