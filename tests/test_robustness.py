"""A user's mistake or a fault costs one clear line and an exit code, never their work (issue: robustness).

Each test makes the mistake or injects the fault, then checks the exit code, that stderr is one line without a
traceback naming what is wrong, and that nothing the user had was lost (files compared before and after).
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, cli_args, run_cli, run_train

from hf_indosent import cli
from hf_indosent.core.arguments import ArgumentError, parse_args
from hf_indosent.data.parsing import DataFormatError
from hf_indosent.data.smsa import DownloadError, load_smsa
from hf_indosent.modeling.loading import ModelSourceError, resolve_model_source
from hf_indosent.training.arguments import FineTuneArguments
from hf_indosent.training.checkpoints import list_checkpoints
from hf_indosent.training.run_folder import LOCK_FILE, RunLock


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The last stderr line: an error naming every needle, with no traceback anywhere."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def hf(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("-m", "hf_indosent", *args, env=env, **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tiny_smsa_dir, tmp_path_factory) -> Path:
    """A finished 1-epoch training run (best/, metrics.json, ...), to be protected or reused."""
    from accelerate.state import AcceleratorState

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path_factory.mktemp("cache"), num_train_epochs=1)
    AcceleratorState._reset_state(reset_partial_state=True)
    return run_dir


# ---------------------------------------------------------------------------------------------------------------
# Silent garbage: incomplete or corrupt model folders


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        (("tokenizer.json", "vocab.txt"), "tokenizer files"),
        (("model.safetensors",), "weights"),
        (("config.json",), "config.json"),
    ],
)
def test_incomplete_model_folder_is_refused_naming_what_is_missing(tiny_classifier_dir, tmp_path, remove, named):
    folder = tmp_path / "model"
    shutil.copytree(tiny_classifier_dir, folder)
    for name in remove:
        (folder / name).unlink(missing_ok=True)
    result = hf("predict", "--model", str(folder), "--texts", "makanan enak")
    assert result.returncode == 1
    one_line_error(result, str(folder), named)
    assert result.stdout == ""  # no label printed from some other tokenizer or a random head


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_corrupt_safetensors_is_one_line_naming_the_file(tiny_classifier_dir, tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(tiny_classifier_dir, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 8 + data[8:])
    result = hf("predict", "--model", str(folder), "--texts", "makanan enak")
    assert result.returncode == 1
    one_line_error(result, str(weights))
    with pytest.raises(ModelSourceError, match=r"truncated|corrupt"):
        resolve_model_source(folder)


def test_path_like_model_that_is_not_there_fails_at_once(tmp_path, finished_run):
    missing = tmp_path / "outputs" / "never-trained"
    result = hf("predict", "--model", str(missing), "--texts", "x", env={"HF_HUB_OFFLINE": "0"})
    assert result.returncode == 1
    one_line_error(result, "no model at that path", "best/")
    # a run that never finished: checkpoints but no best/
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished_run / "checkpoints", unfinished / "checkpoints")
    with pytest.raises(ModelSourceError, match="without a best model yet"):
        resolve_model_source(unfinished)
    assert resolve_model_source(finished_run) == str(finished_run / "best")  # a run folder stands for best/


# ---------------------------------------------------------------------------------------------------------------
# Lost work: the old run is only replaced once the new one is sure


@pytest.mark.parametrize(
    "mistake",
    [
        ["--model_name_or_path", "./no/such/model"],
        ["--data_dir", "/no/such/smsa"],
        ["--max_seq_len", "100000"],
        ["--push_to_hub", "true", "--hub_model_id", "me/model"],  # no token: checked before the first step
        ["--learning_rate", "fast"],
    ],
)
def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(
    tiny_model_dir, tiny_smsa_dir, tmp_path, finished_run, mistake
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    args = cli_args(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", overwrite_output_dir="true")
    result = run_cli("scripts/train.py", *args, *mistake, env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode in (1, 2)
    one_line_error(result)
    assert snapshot(run_dir) == before


def test_bad_data_file_keeps_the_old_run(tiny_model_dir, tiny_smsa_dir, tmp_path, finished_run):
    bad = tmp_path / "bad-smsa"
    shutil.copytree(tiny_smsa_dir, bad)
    (bad / "valid_preprocess.tsv").write_text("teks tanpa label\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    result = run_cli(
        "scripts/train.py", *cli_args(tiny_model_dir, bad, run_dir, tmp_path / "cache", overwrite_output_dir="true")
    )
    assert result.returncode == 1
    one_line_error(result, "valid_preprocess.tsv", "line 1")
    assert snapshot(run_dir) == before


def test_not_enough_disk_space_refuses_before_touching_the_old_run(
    tiny_model_dir, tiny_smsa_dir, tmp_path, finished_run, monkeypatch
):
    import hf_indosent.training.run_folder as run_folder

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 0))
    with pytest.raises(ArgumentError, match=r"not enough free space.*save_total_limit"):
        run_train(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", overwrite_output_dir=True)
    assert snapshot(run_dir) == before


def test_disk_full_while_saving_is_one_line_and_leaves_no_staging(tiny_model_dir, tiny_smsa_dir, tmp_path, capsys):
    from accelerate import Accelerator

    def full(self, output_dir=None, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "optimizer.bin"))

    run_dir = tmp_path / "run"
    original = Accelerator.save_state
    Accelerator.save_state = full
    try:
        code = cli.main(["train", *cli_args(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache")])
    finally:
        Accelerator.save_state = original
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert "optimizer.bin: no space left on the device" in err[-1] and "Traceback" not in "\n".join(err)
    leftovers = [path.name for path in (run_dir / "checkpoints").iterdir()]
    assert leftovers == []  # the half-written staging folder was removed
    assert not (run_dir / LOCK_FILE).exists()


def test_unwritable_output_dir_fails_before_any_training(tiny_model_dir, tiny_smsa_dir, tmp_path, monkeypatch, capsys):
    def refuse(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    monkeypatch.setattr(RunLock, "acquire", refuse)
    run_dir = tmp_path / "readonly"
    code = cli.main(["train", *cli_args(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("hf-indosent train: error: ") and "permission denied" in err[-1]
    assert str(run_dir / LOCK_FILE) in err[-1]
    # and a real one: a file where a folder is needed
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.undo()
    code = cli.main(["train", *cli_args(tiny_model_dir, tiny_smsa_dir, blocker / "run", tmp_path / "cache")])
    assert code == 1
    assert "Traceback" not in capsys.readouterr().err


def test_second_training_into_the_same_folder_is_refused_naming_the_first(tiny_model_dir, tiny_smsa_dir, tmp_path):
    run_dir = tmp_path / "run"
    lock = RunLock(run_dir)
    lock.acquire()  # this test process plays the first training
    try:
        result = run_cli("scripts/train.py", *cli_args(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache"))
    finally:
        lock.release()
    assert result.returncode == 1
    one_line_error(result, "in use by another training run", f"process {os.getpid()}")
    assert "Training " not in result.stdout  # refused before setup: no data or model was even loaded
    assert not (run_dir / "checkpoints").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tiny_model_dir, tiny_smsa_dir, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "started": "then"}))
    results = run_train(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", num_train_epochs=1)
    assert results["epochs_completed"] == 1
    assert not (run_dir / LOCK_FILE).exists()


# ---------------------------------------------------------------------------------------------------------------
# Interrupts: a resumable checkpoint at the current step, the command to continue, 130 / 143


@pytest.mark.slow
@pytest.mark.slow
def test_ctrl_c_under_accelerate_launch_saves_a_checkpoint_and_resumes_with_the_launcher_s_options(
    tiny_model_dir, tiny_smsa_dir, tmp_path
):
    run_dir = tmp_path / "run"
    args = cli_args(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", num_train_epochs=2)
    launcher = ["accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    launcher += ["--dynamo_backend", "no", "--cpu"]
    # the terminal's Ctrl-C: SIGINT to the launcher and the training process alike (one process group)
    process = subprocess.run(
        [*launcher, "tests/crash_runner.py", "hf_indosent.training.loop:forward_backward", "17", "before", "--", *args],
        cwd=ROOT,
        env={**os.environ, "CRASH_SIGNAL": "SIGINT", "CRASH_GROUP": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    # accelerate's launcher dies of the KeyboardInterrupt (<= 1.15: at once, -SIGINT; 1.16: after sending the training
    # process SIGTERM, then SIGKILL 5 s later, exit 130); the training process takes that SIGTERM for the same stop,
    # saves the current step, releases the lock and prints the resume command
    assert process.returncode in (-signal.SIGINT, 130), process.stderr[-3000:]
    assert "interrupted again" not in process.stderr
    assert [path.name for path in list_checkpoints(run_dir)][-1] == "checkpoint-e0001-s000000017"
    assert not (run_dir / LOCK_FILE).exists()
    line = next(line for line in process.stderr.splitlines() if "checkpoint saved at epoch 2, step 17" in line)
    command = line.split("Continue with: ", 1)[1]
    # the resume command is the launcher's own, options included
    assert command.startswith(shlex.join([*launcher, "tests/crash_runner.py"]))
    resumed = subprocess.run(
        shlex.split(command), cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 2


def test_the_same_signal_twice_stops_at_once_but_the_other_one_is_the_same_request():
    """Ctrl-C under `accelerate launch` >= 1.16: SIGINT from the terminal, then SIGTERM from the launcher."""
    from hf_indosent.cli import Interrupted
    from hf_indosent.core.stopping import StopRequests

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for first, then in ((signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)):
        with StopRequests() as stops:
            os.kill(os.getpid(), first)
            os.kill(os.getpid(), then)  # handled at once: Python runs handlers between bytecodes of the main thread
            assert stops.signum == first
            with pytest.raises(Interrupted, match="interrupted again") as stopped:
                os.kill(os.getpid(), first)
                time.sleep(1)  # not reached: the handler raises first
        assert stopped.value.signum == first
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_resume_command_is_the_run_s_own_command(monkeypatch):
    from hf_indosent.training.run_folder import resume_command

    argv = ["scripts/train.py", "--config", "c.yaml", "--overwrite_output_dir", "--seed", "3"]
    assert resume_command(argv) == "python scripts/train.py --config c.yaml --seed 3 --resume_from_checkpoint latest"
    argv = ["/venv/bin/hf-indosent", "train", "--overwrite_output_dir", "true", "--resume_from_checkpoint", "x/c"]
    assert resume_command(argv) == "hf-indosent train --resume_from_checkpoint latest"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resume_command(["scripts/train.py"], launcher=[]).startswith("accelerate launch scripts/train.py ")
    # under accelerate launch the launcher's options come along (4 processes resume on 4), the run's own flags not
    launcher = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--multi_gpu", "--num_processes", "4"]
    launcher += ["--config_file", "hw.yaml", "scripts/train.py", "--config", "c.yaml", "--overwrite_output_dir"]
    assert resume_command(["/abs/scripts/train.py", "--config", "c.yaml", "--overwrite_output_dir"], launcher) == (
        "accelerate launch --multi_gpu --num_processes 4 --config_file hw.yaml scripts/train.py --config c.yaml "
        "--resume_from_checkpoint latest"
    )
    launcher = ["accelerate", "launch", "--num_processes", "2", "-m", "hf_indosent", "train", "--seed", "3"]
    assert resume_command(["/site/hf_indosent/__main__.py", "train", "--seed", "3"], launcher) == (
        "accelerate launch --num_processes 2 -m hf_indosent train --seed 3 --resume_from_checkpoint latest"
    )
    # a parent that is not this run's launcher (other arguments) is not trusted
    other = ["accelerate", "launch", "other.py", "--x", "1"]
    assert resume_command(["scripts/train.py", "--seed", "3"], other).startswith("accelerate launch scripts/train.py ")


def test_time_based_checkpoints_bound_what_a_hard_kill_loses(tiny_model_dir, tiny_smsa_dir, tmp_path, monkeypatch):
    import hf_indosent.training.checkpoints as checkpointing

    assert FineTuneArguments(output_dir="x").checkpointing_minutes == 15  # on by default
    clock = iter(range(0, 10**9, 16 * 60))  # every look at the clock: 16 more minutes have passed
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: next(clock))
    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", num_train_epochs=1, save_total_limit=50)
    steps = [int(path.name.split("-s")[1]) for path in list_checkpoints(run_dir)]
    assert steps == list(range(1, 13))  # one per step mid-epoch, then the epoch end (step 12) replaces step 12's


def test_one_checkpoint_per_step(tiny_model_dir, tiny_smsa_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_train(
        tiny_model_dir,
        tiny_smsa_dir,
        run_dir,
        tmp_path / "cache",
        num_train_epochs=2,
        checkpointing_steps=6,
        save_total_limit=20,
    )
    names = [path.name for path in list_checkpoints(run_dir)]
    steps = [int(name.split("-s")[1]) for name in names]
    assert steps == [6, 12, 18, 24]
    assert "checkpoint-e0001-s000000012" in names  # the epoch-end one, with validation and best/ decided


# ---------------------------------------------------------------------------------------------------------------
# Resuming with other settings


def test_resume_with_a_changed_learning_rate_is_refused(tiny_model_dir, tiny_smsa_dir, tmp_path, finished_run):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    cache = tmp_path / "cache"
    with pytest.raises(ArgumentError, match=r"learning_rate 0\.005 -> 0\.001") as refused:
        run_train(
            tiny_model_dir, tiny_smsa_dir, run_dir, cache, resume_from_checkpoint="latest", learning_rate=1e-3, seed=7
        )
    assert "seed 42 -> 7" in str(refused.value)
    assert snapshot(run_dir) == before


def test_resume_with_more_epochs_is_honoured_and_recorded(tiny_model_dir, tiny_smsa_dir, tmp_path, finished_run):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    results = run_train(
        tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", resume_from_checkpoint="latest", num_train_epochs=2
    )
    assert results["epochs_completed"] == 2
    recorded = json.loads((run_dir / "args.json").read_text())
    assert recorded["training"]["num_train_epochs"] == 2
    (resume,) = recorded["resumes"]
    assert resume["checkpoint"] == "checkpoint-e0001-s000000012"
    assert resume["changed"]["num_train_epochs"] == [1, 2]
    assert set(resume["changed"]) <= {"num_train_epochs", "output_dir", "dataset_cache_dir"}  # the copy moved them


# ---------------------------------------------------------------------------------------------------------------
# Misleading first steps


def test_recipe_syntax_and_types_are_named_by_file_and_key(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: 1e-4\n  seed: [\n", encoding="utf-8")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("learning_rate: fast\noutput_dir: out\n", encoding="utf-8")
    flag = tmp_path / "flag.yaml"
    flag.write_text("output_dir: out\npush_to_hub: maybe\n", encoding="utf-8")
    types = [FineTuneArguments]
    for recipe, needles in (
        (broken, ["is not valid YAML at line 2"]),
        (wrong, ["learning_rate: 'fast' is not a number"]),
        (flag, ["push_to_hub: 'maybe' is not true or false"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(types, ["--config", str(recipe)], prog="hf-indosent train")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(recipe) in err[0] and all(needle in err[0] for needle in needles), err
    ok = tmp_path / "ok.yaml"
    ok.write_text("learning_rate: 3e-6\noutput_dir: out\nseed: '7'\n", encoding="utf-8")  # YAML 1.1 strings
    (args,) = parse_args(types, ["--config", str(ok)])
    assert (args.learning_rate, args.seed) == (3e-6, 7)


@pytest.mark.parametrize("spelling", ["--config={}", "--config {}", "--conf={}", "--conf {}"])
def test_every_spelling_of_config_loads_the_recipe_and_checks_its_keys(tmp_path, capsys, spelling):
    """argparse accepts `--config=FILE` and unambiguous abbreviations: each must load the recipe, not skip it."""
    ok = tmp_path / "ok.yaml"
    ok.write_text("learning_rate: 3e-6\noutput_dir: out\n", encoding="utf-8")
    (args,) = parse_args([FineTuneArguments], [*spelling.format(ok).split(" "), "--seed", "5"])
    assert (args.learning_rate, args.output_dir, args.seed) == (3e-6, "out", 5)
    typo = tmp_path / "typo.yaml"
    typo.write_text("learnig_rate: 3e-6\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        parse_args([FineTuneArguments], spelling.format(typo).split(" "), prog="hf-indosent train")
    assert exit_info.value.code == 2
    assert "unknown keys ['learnig_rate']" in capsys.readouterr().err


def test_header_only_and_empty_files_name_the_file(tmp_path, cache_dir):
    header_only = tmp_path / "train.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    empty = tmp_path / "valid.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"train\.csv: has a header row but no examples"):
        load_smsa(data_files={"train": header_only, "validation": header_only}, cache_dir=cache_dir)
    with pytest.raises(DataFormatError, match=r"valid\.csv: file is empty"):
        load_smsa(data_files={"train": empty, "validation": empty}, cache_dir=cache_dir)


def test_no_network_without_data_dir_says_what_to_pass(cache_dir):
    with pytest.raises(DownloadError, match=r"no network.*--data_dir"):
        load_smsa(cache_dir=cache_dir)  # the tests run offline: the upstream download cannot happen


def test_usage_errors_answer_before_heavy_imports():
    code = (
        "import sys\nfrom hf_indosent.cli import main\n"
        "for argv in (['train', '--bogus'], ['predict', '--help'], ['evaluate'], ['push', '--model', 'x']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(name for name in ('torch', 'datasets', 'transformers.modeling_utils') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_ctrl_c_and_known_errors_are_one_line_with_exit_codes(capsys, monkeypatch):
    def ctrl_c():
        raise KeyboardInterrupt

    def sigterm():
        raise cli.Interrupted(signal.SIGTERM)

    def missing_file():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/reviews.txt")

    def bug():
        raise KeyError("a bug")

    assert cli.run_command("hf-indosent predict", ctrl_c) == 130
    assert cli.run_command("hf-indosent evaluate", sigterm) == 143
    assert cli.run_command("hf-indosent push", missing_file) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "hf-indosent predict: interrupted (Ctrl-C); nothing was written after that point",
        "hf-indosent evaluate: interrupted (SIGTERM); nothing was written after that point",
        "hf-indosent push: error: /data/reviews.txt: no such file or folder: check the path (--debug shows the "
        "traceback)",
    ]
    with pytest.raises(KeyError):  # a bug is not a user error: its traceback is shown
        cli.run_command("hf-indosent predict", bug)
    with pytest.raises(FileNotFoundError):  # --debug shows the traceback of a known error too
        cli.run_command("hf-indosent push", missing_file, debug=True)
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(KeyboardInterrupt):
        cli.run_command("hf-indosent predict", ctrl_c)


def test_ctrl_c_while_predict_waits_on_stdin(tiny_classifier_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "hf_indosent", "predict", "--model", str(tiny_classifier_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 120
    syscall = Path(f"/proc/{process.pid}/syscall")
    while time.monotonic() < deadline and not syscall.read_text().startswith("0 0x0 "):
        time.sleep(0.2)  # until the model is loaded and the main thread blocks in read(0, ...) on stdin
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("hf-indosent predict: interrupted (Ctrl-C)")


def test_saved_model_files_are_readable_by_others(finished_run):
    for path in (finished_run / "best").iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, path  # 0644 under the usual umask, never 0600


def test_every_subcommand_goes_through_the_one_runner():
    for name, command in cli.COMMANDS.items():
        module, function = command.run.split(":")
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        assert f"def {function}(" in source, name
        assert "def cli_main(" not in source  # no second copy of parsing and error mapping


def test_a_refused_run_leaves_no_empty_folder(tiny_smsa_dir, tmp_path):
    run_dir = tmp_path / "new" / "run"
    with pytest.raises(ModelSourceError, match="no model at that path"):
        run_train(tmp_path / "no-such-model", tiny_smsa_dir, run_dir, tmp_path / "cache")
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train", "--learning_rate", "nan"], "learning_rate=nan is not a finite number"),
        (["train", "--max_grad_norm", "inf"], "max_grad_norm=inf is not a finite number"),
        (["train", "--weight_decay=-inf"], "weight_decay=-inf"),
        (["train", "--checkpointing_minutes", "inf"], "checkpointing_minutes=inf"),
        (["train", "--seed", "-1"], "seed=-1 is out of range"),
        (["train", "--seed", str(2**32)], "seed=4294967296 is out of range"),
        (["train", "--class_weights", "1,inf,1"], "class_weights='1,inf,1'"),
        (["adapt", "--model_name_or_path", "m", "--mlm_probability", "NaN"], "mlm_probability=nan"),
        (["adapt", "--model_name_or_path", "m", "--seed", "-5"], "seed=-5 is out of range"),
        (["baseline", "--C", "inf"], "C=inf is not a finite number"),
        (["baseline", "--seed", "-2"], "seed=-2 is out of range"),
        (["predict", "--model", "m", "--int8_fallback_margin", "nan"], "int8_fallback_margin"),
    ],
)
def test_numbers_that_mean_nothing_are_refused_before_any_work(tmp_path, capsys, argv, named):
    """argparse and YAML read 'nan' and 'inf' as floats, and a seed outside [0, 2**32) fails deep in NumPy: each is
    one line naming the value, exit 2, before any model or data is touched (an infinite learning rate would train NaN
    weights to the end and report them with exit 0)."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--output_dir" if argv[0] != "predict" else "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert len(err) == 1 and named in err[0] and "Traceback" not in err[0], err
    assert not out.exists()


def test_numbers_from_a_recipe_are_checked_too(tmp_path, capsys):
    recipe = tmp_path / "nan.yaml"
    recipe.write_text("output_dir: out\nlearning_rate: .nan\n", encoding="utf-8")  # YAML's own spelling of NaN
    with pytest.raises(SystemExit) as exit_info:
        parse_args([FineTuneArguments], ["--config", str(recipe)], prog="hf-indosent train")
    assert exit_info.value.code == 2
    assert "learning_rate=nan is not a finite number" in capsys.readouterr().err
