"""Multi-seed runs: the aggregation on its own, and the runner with a stand-in training script (one seed crashes)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hf_indosent.training.seeds import aggregate, main, markdown_table, parse_seeds, restart_options

ROOT = Path(__file__).resolve().parents[1]


def ok(seed: int, f1: float, accuracy: float) -> dict:
    validation = {"accuracy": accuracy, "f1": f1, "precision": f1 + 0.01, "recall": f1 - 0.01, "num_examples": 9}
    return {"seed": seed, "status": "ok", "best_epoch": 2, "validation": validation}


def test_aggregate_mean_and_sample_std():
    failed = {"seed": 2, "status": "failed", "error": "boom"}
    results = [ok(42, 0.80, 0.86), ok(1, 0.90, 0.88), failed, ok(3, 0.85, 0.90)]
    summary = aggregate(results)
    assert summary["seeds"] == [42, 1, 2, 3] and summary["succeeded"] == [42, 1, 3]
    assert summary["failed"] == [{"seed": 2, "error": "boom"}]
    f1 = summary["validation"]["f1"]
    assert f1["mean"] == pytest.approx(0.85) and f1["n"] == 3
    assert f1["std"] == pytest.approx(np.std([0.80, 0.90, 0.85], ddof=1)) == pytest.approx(0.05)
    assert summary["validation"]["accuracy"]["std"] == pytest.approx(statistics.stdev([0.86, 0.88, 0.90]))
    assert set(summary["validation"]) == {"accuracy", "f1", "precision", "recall"}  # not num_examples
    table = markdown_table(results, summary)
    assert "| 2 | failed: boom | - | - | - | - | - |" in table
    assert "| mean ± std (3 runs) |  | 0.8800 ± 0.0200 | 0.8500 ± 0.0500 |" in table


def test_aggregate_with_one_or_no_successful_run():
    one = aggregate([ok(42, 0.8, 0.9)])
    assert one["validation"]["f1"] == {"mean": 0.8, "std": None, "n": 1}
    assert "| mean ± std (1 run) |  | 0.9000 | 0.8000 |" in markdown_table([ok(42, 0.8, 0.9)], one)
    none = aggregate([{"seed": 1, "status": "failed", "error": "x"}])
    assert none["validation"] == {} and none["succeeded"] == []


def test_parse_seeds():
    assert parse_seeds("42,1,2") == [42, 1, 2] and parse_seeds(" 7 ") == [7]
    assert parse_seeds("0,4294967295") == [0, 2**32 - 1]
    for text, message in (
        ("4x,1", "must be integers"),
        ("", "is empty"),
        ("1,2,1", "repeats a seed"),
        ("1,-1", "-1 is out of range"),
        ("4294967296", "from 0 to 4294967295"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_seeds(text)


FAKE_TRAIN = """
    import argparse, json, pathlib, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int)
    parser.add_argument("--output_dir")
    parser.add_argument("--learning_rate")
    args = parser.parse_args()
    if args.seed == 13:
        print("hf-indosent train: error: seed 13 is unlucky", file=sys.stderr)
        sys.exit(1)
    folder = pathlib.Path(args.output_dir)
    folder.mkdir(parents=True)
    f1 = args.seed / 100
    validation = {"accuracy": f1, "f1": f1, "precision": f1, "recall": f1, "num_examples": 3}
    metrics = {"best_epoch": 1, "validation": validation, "learning_rate": args.learning_rate}
    (folder / "metrics.json").write_text(json.dumps(metrics))
"""


def test_a_crashed_seed_is_reported_and_the_others_still_run(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(FAKE_TRAIN))
    output_dir = tmp_path / "seeds"
    argv = ["--seeds", "80,13,90", "--output_dir", str(output_dir), "--learning_rate", "1e-4"]
    assert main(argv, train_script=script) == 1
    report = json.loads((output_dir / "seeds.json").read_text())
    runs = {run["seed"]: run for run in report["runs"]}
    assert [run["status"] for run in report["runs"]] == ["ok", "failed", "ok"]
    assert runs[13]["returncode"] == 1 and runs[13]["error"] == "hf-indosent train: error: seed 13 is unlucky"
    assert runs[90]["validation"]["f1"] == 0.9 and runs[80]["output_dir"] == str(output_dir / "seed-80")
    assert json.loads((output_dir / "seed-90" / "metrics.json").read_text())["learning_rate"] == "1e-4"
    assert report["summary"]["validation"]["f1"]["mean"] == pytest.approx(0.85)
    assert report["summary"]["failed"] == [{"seed": 13, "error": runs[13]["error"]}]
    assert report["train_args"] == ["--learning_rate", "1e-4"]
    out = capsys.readouterr().out
    assert "| mean ± std (2 runs) |" in out and "seed 13: failed" in out
    assert (output_dir / "seed-13.log").read_text().strip() == runs[13]["error"]


STOPPABLE_TRAIN = """
    import argparse, json, pathlib, signal, sys, time
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int)
    parser.add_argument("--output_dir")
    parser.add_argument("--learning_rate")
    parser.add_argument("--resume_from_checkpoint")
    parser.add_argument("--overwrite_output_dir", action="store_true")
    args = parser.parse_args()
    folder = pathlib.Path(args.output_dir)
    with open(folder.parent / "calls.jsonl", "a") as calls:
        calls.write(json.dumps([args.seed, args.resume_from_checkpoint, args.overwrite_output_dir]) + "\\n")
    if args.seed == 2 and not args.resume_from_checkpoint and not args.overwrite_output_dir:
        def stop(signum, frame):
            time.sleep(1.5)  # saving a checkpoint takes longer than subprocess.run's 0.25 s grace before SIGKILL
            checkpoint = folder / "checkpoints" / "checkpoint-e0001-s000000005"
            checkpoint.mkdir(parents=True)
            (checkpoint / "train_state.json").write_text(json.dumps({"files": {}}))
            print("stopped at epoch 1, step 5: checkpoint saved. Continue with: train --resume_from_checkpoint latest")
            sys.exit(130)
        signal.signal(signal.SIGINT, stop)
        folder.mkdir(parents=True)
        (folder.parent / "ready").write_text("")
        time.sleep(120)
        sys.exit(1)
    folder.mkdir(parents=True, exist_ok=True)
    validation = {"accuracy": 0.5, "f1": args.seed / 10, "precision": 0.5, "recall": 0.5, "num_examples": 3}
    (folder / "metrics.json").write_text(json.dumps({"best_epoch": 1, "validation": validation}))
"""


def test_ctrl_c_stops_the_seed_after_its_checkpoint_and_the_same_command_continues(tmp_path):
    """Ctrl-C in a terminal reaches the whole foreground process group: here, the seeds runner's. The training of
    the seed in progress gets it once, has time to save its checkpoint, and a rerun keeps, resumes and trains."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(STOPPABLE_TRAIN))
    output_dir = tmp_path / "seeds"
    argv = ["--seeds", "1,2,3", "--output_dir", str(output_dir), "--learning_rate", "1e-4"]
    runner = (
        "import sys; from pathlib import Path; from hf_indosent.training.seeds import main; "
        f"sys.exit(main(sys.argv[1:], train_script=Path({str(script)!r})))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", runner, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 120
    while not (output_dir / "ready").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert (output_dir / "seed-2" / "checkpoints" / "checkpoint-e0001-s000000005" / "train_state.json").is_file()
    report = json.loads((output_dir / "seeds.json").read_text())
    assert [run["status"] for run in report["runs"]] == ["ok", "stopped"]
    assert report["runs"][1]["signal"] == "SIGINT" and "Continue with" in report["runs"][1]["error"]
    assert report["complete"] is False and report["not_run"] == [3]
    assert "Traceback" not in err and "Run the same command again to continue" in err
    assert "| 2 | stopped: stopped at epoch 1, step 5" in out

    assert main(argv, train_script=script) == 0  # the same command again
    calls = [json.loads(line) for line in (output_dir / "calls.jsonl").read_text().splitlines()]
    assert calls == [[1, None, False], [2, None, False], [2, "latest", False], [3, None, False]]  # 1 is not retrained
    report = json.loads((output_dir / "seeds.json").read_text())
    assert report["complete"] is True and [run["status"] for run in report["runs"]] == ["ok", "ok", "ok"]
    assert [run.get("reused", False) for run in report["runs"]] == [True, False, False]
    assert report["runs"][1]["resumed"] is True
    assert report["summary"]["validation"]["f1"]["mean"] == pytest.approx(0.2)

    # other training options in the same folder: refused (a finished seed is only kept for the same recipe)
    assert main([*argv[:4], "--learning_rate", "5e-5"], train_script=script) == 2
    # unless every seed is to be trained again
    assert main([*argv, "--overwrite_output_dir"], train_script=script) == 0
    calls = [json.loads(line) for line in (output_dir / "calls.jsonl").read_text().splitlines()]
    assert calls[4:] == [[1, None, True], [2, None, True], [3, None, True]]
    assert main(argv, train_script=script) == 0  # and then kept again by the same recipe without it
    assert len((output_dir / "calls.jsonl").read_text().splitlines()) == 7


def test_a_seed_folder_restarts_from_what_it_holds(tmp_path):
    run_dir = tmp_path / "seed-1"
    assert restart_options(run_dir, []) == []  # nothing there yet
    run_dir.mkdir()
    assert restart_options(run_dir, []) == ["--overwrite_output_dir"]  # stopped before its first checkpoint
    checkpoint = run_dir / "checkpoints" / "checkpoint-e0001-s000000007"
    checkpoint.mkdir(parents=True)
    assert restart_options(run_dir, []) == ["--overwrite_output_dir"]  # an incomplete checkpoint is no checkpoint
    (checkpoint / "train_state.json").write_text(json.dumps({"files": {}}))
    assert restart_options(run_dir, []) == ["--resume_from_checkpoint", "latest"]
    assert restart_options(run_dir, ["--overwrite_output_dir"]) == []  # the user asked to start over


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--seed", "3"], "'--seed' is set per seed"), (["--seed=3"], "'--seed=3' is set per seed"), ([], "integers")],
)
def test_usage_errors_exit_2(tmp_path, capsys, extra, message):
    seeds = "1,x" if not extra else "1"
    with pytest.raises(SystemExit) as stop:
        main(["--seeds", seeds, "--output_dir", str(tmp_path / "out"), *extra], train_script=tmp_path / "train.py")
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_script_is_thin():
    source = (ROOT / "scripts" / "seeds.py").read_text()
    assert "from hf_indosent.training.seeds import main" in source and len(source.splitlines()) < 20


@pytest.mark.slow
def test_with_the_real_training_script(tiny_model_dir, tiny_smsa_dir, tmp_path):
    """One tiny seed through scripts/train.py: the options and metrics.json the runner relies on are training's."""
    output_dir = tmp_path / "seeds"
    recipe = ["--model_name_or_path", str(tiny_model_dir), "--data_dir", str(tiny_smsa_dir), "--max_seq_len", "32"]
    recipe += ["--num_train_epochs", "1", "--learning_rate", "5e-3", "--dataset_cache_dir", str(tmp_path / "cache")]
    train_script = ROOT / "scripts" / "train.py"
    assert main(["--seeds", "7", "--output_dir", str(output_dir), *recipe], train_script=train_script) == 0
    (run,) = json.loads((output_dir / "seeds.json").read_text())["runs"]
    assert run["status"] == "ok" and run["best_epoch"] == 1
    assert json.loads((output_dir / "seed-7" / "args.json").read_text())["training"]["seed"] == 7
    assert set(run["validation"]) >= {"accuracy", "f1", "precision", "recall"}
