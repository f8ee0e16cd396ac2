"""Issue 27's shared mechanisms, each through at least two commands: the one folder lock, the stop signals (SIGHUP
with SIGINT and SIGTERM), the one quoting helper, the one near-miss suggestion, and the quiet broken pipe."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, cli_args, comparable, run_cli, run_train

from hf_indosent import cli
from hf_indosent.core.arguments import _Parser, parse_args, unknown_options
from hf_indosent.core.files import staged_dir
from hf_indosent.core.folder_lock import LOCK_FILE, FolderLock, FolderLockedError
from hf_indosent.core.shell import command, rerun_command, resume_command
from hf_indosent.core.stopping import STOP_SIGNALS, StopRequests
from hf_indosent.core.suggest import closest, did_you_mean
from hf_indosent.training.arguments import FineTuneArguments
from hf_indosent.training.checkpoints import list_checkpoints

AWKWARD = "my runs/ulasan é"
"""A run folder as people name them: a space and a non-ASCII letter (unquoted, a pasted command splits on it)."""
BIN = str(Path(sys.executable).parent)  # where this environment's python and hf-indosent are


@pytest.fixture(autouse=True, scope="module")
def hangups_reach_children():
    """Under ``nohup`` this pytest ignores SIGHUP, and an ignored signal stays ignored in every child: the SIGHUP tests'
    processes would never see it. With a handler here (a no-op: the tests are not stopped), children start with the
    default again, as under a terminal."""
    previous = signal.getsignal(signal.SIGHUP)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda signum, frame: None)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.fixture
def no_terminal_to_leave(monkeypatch) -> list[int]:
    """In-process SIGHUP tests: record instead of pointing this pytest's own stdout/stderr at /dev/null."""
    from hf_indosent.core import stopping
    from hf_indosent.training import seeds

    calls: list[int] = []
    for module in (seeds, stopping):
        monkeypatch.setattr(module, "leave_closed_terminal", lambda: calls.append(1))
    return calls


def last_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in err, err
    return lines[-1]


def with_path(env: dict | None = None) -> dict:
    """The environment for a pasted command: this venv's `python` and `hf-indosent` first on PATH."""
    return {**os.environ, **(env or {}), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


# ---------------------------------------------------------------------------------------------------------------
# The folder lock: every writer holds it, a second one is refused at once, naming the first

HOLDER = textwrap.dedent(
    """
    import json, sys
    from hf_indosent.core.folder_lock import FolderLock
    folder, job, argv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.argv = argv  # the command line the lock records, as the first run's own
    with FolderLock(folder, job=job):
        print("held", flush=True)
        sys.stdin.read()
    """
)


@contextlib.contextmanager
def first_writer(folder: Path, job: str, argv: list[str]) -> Iterator[int]:
    """Another process writing ``folder`` (holding its lock) while the block runs; yields its pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), job, json.dumps(argv)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout.readline().strip() == "held"
        yield process.pid
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def must_not_load(*args, **kwargs):
    raise AssertionError("the data was read although another process writes the folder")


def test_a_second_baseline_into_a_folder_is_refused_at_once_naming_the_first(
    tiny_smsa_dir, tmp_path, monkeypatch, capsys
):
    from hf_indosent.inference import baseline

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"run": "the first"}')  # what the first run has written so far
    argv = ["baseline", "--data_dir", str(tiny_smsa_dir), "--output_dir", str(run_dir), "--C", "1"]
    argv += ["--overwrite_output_dir", "--dataset_cache_dir", str(tmp_path / "cache")]
    monkeypatch.setattr(baseline, "load_data", must_not_load)
    first = ["/venv/bin/hf-indosent", "baseline", "--output_dir", str(run_dir)]
    with first_writer(run_dir, "baseline run", first) as pid:
        started = time.monotonic()
        assert cli.main(argv) == 1
        assert time.monotonic() - started < 10  # at once: nothing is loaded before the lock
    line = last_line(capsys.readouterr().err)
    assert line.startswith("hf-indosent baseline: error: output_dir ")
    assert "in use by another baseline run" in line and f"process {pid} on " in line
    assert f"hf-indosent baseline --output_dir {run_dir}" in line and "choose another --output_dir" in line
    assert (run_dir / "metrics.json").read_text() == '{"run": "the first"}'  # not deleted by the second

    monkeypatch.undo()  # the first has finished: the same command runs, and leaves no lock behind
    assert cli.main(argv) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["model"]["C"] == 1.0
    assert not (run_dir / LOCK_FILE).exists()


def test_a_second_adaptation_into_a_folder_is_refused_at_once_naming_the_first(
    tiny_model_dir, tiny_smsa_dir, tmp_path, monkeypatch, capsys
):
    from hf_indosent.training import adaptation

    folder = tmp_path / "adapted"
    argv = ["adapt", "--model_name_or_path", str(tiny_model_dir), "--data_dir", str(tiny_smsa_dir)]
    argv += ["--output_dir", str(folder), "--mixed_precision", "no", "--max_seq_len", "64"]
    monkeypatch.setattr(adaptation, "load_data", must_not_load)
    with first_writer(folder, "adaptation", ["/venv/bin/hf-indosent", "adapt", "--output_dir", str(folder)]) as pid:
        assert cli.main(argv) == 1
    line = last_line(capsys.readouterr().err)
    assert "in use by another adaptation" in line and f"process {pid} on " in line and "hf-indosent adapt" in line
    assert not folder.exists()  # the first one's lock file went with it; the second made nothing


def test_a_second_export_into_a_folder_is_refused_then_the_export_holds_and_releases_it(
    tiny_classifier_dir, tmp_path, capsys
):
    """export swaps a finished folder in whole (checkpointing.replace_dir): the lock goes along, and nothing of it
    stays behind."""
    target = tmp_path / "onnx"
    argv = ["export", "--model", str(tiny_classifier_dir), "--output_dir", str(target), "--int8", "false"]
    with first_writer(target, "export", ["/venv/bin/hf-indosent", "export", "--output_dir", str(target)]) as pid:
        assert cli.main(argv) == 1
    line = last_line(capsys.readouterr().err)
    assert "in use by another export" in line and f"process {pid} on " in line
    assert cli.main(argv) == 0
    assert (target / "model.onnx").is_file() and not (target / LOCK_FILE).exists()


def test_the_lock_is_released_after_an_error(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    from hf_indosent.data.arguments import DataArguments
    from hf_indosent.inference.arguments import BaselineArguments
    from hf_indosent.inference.baseline import run_baseline
    from hf_indosent.training.adaptation import adapt
    from hf_indosent.training.arguments import AdaptArguments

    run_dir = tmp_path / "baseline"
    run_dir.mkdir()
    lines = (tiny_smsa_dir / "train_preprocess.tsv").read_text().splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(line for line in lines if not line.endswith("\tneutral")) + "\n")
    data = DataArguments(
        train_file=str(tmp_path / "train.tsv"),
        validation_file=str(tiny_smsa_dir / "valid_preprocess.tsv"),
        header=False,
        dataset_cache_dir=str(cache_dir),
    )
    with pytest.raises(ValueError, match="no rows labelled"):  # fails while it holds the lock
        run_baseline(data, BaselineArguments(output_dir=str(run_dir), C=1.0))
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no adapted model"):  # refused under the lock
        adapt(
            DataArguments(data_dir=str(tiny_smsa_dir), max_seq_len=64, dataset_cache_dir=str(cache_dir)),
            AdaptArguments(model_name_or_path=str(tiny_model_dir), output_dir=str(foreign), mixed_precision="no"),
        )
    for folder in (run_dir, foreign):
        assert not (folder / LOCK_FILE).exists()
        FolderLock(folder, job="next run").acquire().release()  # free for the next writer
    assert list(run_dir.iterdir()) == [] and [path.name for path in foreign.iterdir()] == ["notes.txt"]


def test_a_folder_swapped_whole_stays_locked_until_its_writer_releases_it(tmp_path):
    """adapt and export write a finished copy and swap it in (checkpointing.replace_dir): the lock goes with it."""
    target = tmp_path / "export"
    with FolderLock(target, job="export"):
        for version in ("old", "new"):
            with staged_dir(target) as staging:
                (staging / "model.onnx").write_text(version)
            with pytest.raises(FolderLockedError, match=f"in use by another export \\(process {os.getpid()} on "):
                FolderLock(target, job="export").acquire()
    assert [path.name for path in target.iterdir()] == ["model.onnx"] and (target / "model.onnx").read_text() == "new"
    FolderLock(target, job="export").acquire().release()


def test_only_the_main_process_takes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # as accelerate launch / torchrun set it on the other processes
    with FolderLock(tmp_path / "run", job="baseline run") as lock:
        assert lock.fd is None and not (tmp_path / "run").exists()


def test_a_second_seeds_runner_into_a_folder_is_refused(tmp_path, capsys):
    from hf_indosent.training.seeds import main

    output_dir = tmp_path / "seeds"
    with FolderLock(output_dir, job="seeds run"):
        assert main(["--seeds", "1,2", "--output_dir", str(output_dir)], train_script=tmp_path / "never.py") == 1
    line = last_line(capsys.readouterr().err)
    assert line.startswith("seeds.py: error: ") and "in use by another seeds run" in line
    assert not output_dir.exists()


# ---------------------------------------------------------------------------------------------------------------
# Stop signals: SIGHUP (a closed terminal) saves the run like SIGINT and SIGTERM; an ignored one stays ignored


def test_sighup_is_a_stop_request_everywhere_and_an_ignored_one_stays_ignored(no_terminal_to_leave, capsys):
    assert set(STOP_SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    with StopRequests() as stops:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)  # a closing terminal sends it twice: the same request, not "stop at once"
        assert stops.signum == signal.SIGHUP
    assert len(no_terminal_to_leave) == 2  # the terminal is left at each

    def hang_up() -> None:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)  # not reached: the handler raises first

    assert cli.run_command("hf-indosent predict", hang_up) == 128 + signal.SIGHUP
    err = last_line(capsys.readouterr().err)
    assert err == "hf-indosent predict: interrupted (SIGHUP); nothing was written after that point"

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    try:
        with StopRequests() as stops:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
        assert stops.signum is None
        assert cli.run_command("hf-indosent predict", lambda: os.kill(os.getpid(), signal.SIGHUP)) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before[signal.SIGHUP])
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_seeds_pass_sighup_on_to_the_training(tmp_path, no_terminal_to_leave):
    from hf_indosent.training.seeds import wait_passing_signals

    script = (
        "import signal, sys, time\nsignal.signal(signal.SIGHUP, lambda *a: sys.exit(7))\nprint('ready', flush=True)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script + "\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout.readline().strip() == "ready"
    signal.setitimer(signal.ITIMER_REAL, 0.2)  # while this process waits for the training, its terminal closes
    previous = signal.signal(signal.SIGALRM, lambda *args: os.kill(os.getpid(), signal.SIGHUP))
    try:
        assert wait_passing_signals(process) == (7, signal.SIGHUP)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert no_terminal_to_leave == [1]


SIGNAL_RUN = {"num_train_epochs": 2, "checkpointing_minutes": 0}


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_model_dir, tiny_smsa_dir, tmp_path_factory) -> Path:
    """The reference the stopped-and-resumed runs must match: the same training, never stopped (made once)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_train(
        tiny_model_dir, tiny_smsa_dir, folder, folder.parent / "cache", num_train_epochs=2, checkpointing_minutes=0
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_stop_signal_mid_training_saves_a_checkpoint_and_the_pasted_command_resumes_to_the_same_run(
    tiny_model_dir, tiny_smsa_dir, tmp_path, uninterrupted_run, signame, code
):
    run_dir = tmp_path / AWKWARD
    args = cli_args(
        tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", num_train_epochs=2, checkpointing_minutes=0
    )
    # the signal arrives during the 17th batch of 24 (12 per epoch): mid-epoch 2, long before its end
    stopped = run_cli(
        "tests/crash_runner.py",
        "hf_indosent.training.loop:forward_backward",
        "17",
        "before",
        "--",
        *args,
        env={"CRASH_SIGNAL": signame},
    )
    assert stopped.returncode == code, stopped.stderr[-3000:]
    line = last_line(stopped.stderr)
    assert "checkpoint saved at epoch 2, step 17" in line
    assert [path.name for path in list_checkpoints(run_dir)][-1] == "checkpoint-e0001-s000000017"
    assert not (run_dir / LOCK_FILE).exists()

    pasted = line.split("Continue with: ", 1)[1]
    assert shlex.split(pasted)[-2:] == ["--resume_from_checkpoint", "latest"]
    assert shlex.split(pasted)[shlex.split(pasted).index("--output_dir") + 1] == str(run_dir)
    resumed = subprocess.run(
        ["bash", "-c", pasted], cwd=ROOT, env=with_path(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(run_dir) == comparable(uninterrupted_run)  # the resumed run is the run that was not stopped
    assert json.loads((run_dir / "args.json").read_text())["resumes"][0]["checkpoint"] == "checkpoint-e0001-s000000017"
    if signame != "SIGHUP":
        return
    # and the summary's next command, pasted as it is printed, predicts with this run folder
    predict = next(
        line.strip() for line in resumed.stdout.splitlines() if line.strip().startswith("hf-indosent predict")
    )
    assert shlex.split(predict)[:4] == ["hf-indosent", "predict", "--model", str(run_dir)]
    predicted = subprocess.run(
        ["bash", "-c", predict], cwd=ROOT, env=with_path(), capture_output=True, text=True, timeout=300
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert any(label in predicted.stdout for label in ("positive", "neutral", "negative")), predicted.stdout


PTY_TRAINING = textwrap.dedent(
    """
    import fcntl, functools, os, signal, sys, termios, time
    from pathlib import Path

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty becomes the terminal of this session's leader, as a login shell's
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as under a terminal, whatever this test's parent ignores

    import hf_indosent.training.loop as training
    from hf_indosent.cli import main

    marker, nth, *train_args = sys.argv[1:]
    original, calls = training.forward_backward, []

    @functools.wraps(original)
    def forward_backward(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(nth):
            Path(marker).touch()  # the test closes the terminal now
            deadline = time.monotonic() + 120
            while not os.path.samestat(os.fstat(2), os.stat(os.devnull)) and time.monotonic() < deadline:
                time.sleep(0.05)  # until the SIGHUP has come and the closed terminal was left
        return original(*args, **kwargs)

    training.forward_backward = forward_backward
    sys.exit(main(["train", *train_args]))
    """
)


@pytest.mark.slow
def test_closing_the_terminal_saves_a_checkpoint_and_exits_129(tiny_model_dir, tiny_smsa_dir, tmp_path):
    """The real thing: training on a terminal (a pty) that is closed mid-epoch. The kernel hangs it up (SIGHUP, then
    EIO on every write to it: progress bar, log lines, the final message); the run must still save its step."""
    run_dir = tmp_path / "run"
    marker = tmp_path / "step-17"
    args = cli_args(tiny_model_dir, tiny_smsa_dir, run_dir, tmp_path / "cache", num_train_epochs=2)
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", PTY_TRAINING, str(marker), "17", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        start_new_session=True,  # its own session, to lead on that terminal
    )
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, shown.decode(errors="replace")[-3000:]
        if select.select([master], [], [], 0.1)[0]:
            with contextlib.suppress(OSError):
                shown += os.read(master, 65536)  # drained, as a terminal does: a full pty would block the writer
    os.close(master)  # the terminal closes
    assert process.wait(timeout=300) == 129
    assert [path.name for path in list_checkpoints(run_dir)][-1] == "checkpoint-e0001-s000000017"
    assert not (run_dir / LOCK_FILE).exists()


def test_sighup_during_adapt_saves_the_model_and_the_printed_command_continues_it(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch, no_terminal_to_leave
):
    from hf_indosent.core.stopping import Interrupted
    from hf_indosent.data.arguments import DataArguments
    from hf_indosent.training import adaptation
    from hf_indosent.training.arguments import AdaptArguments

    original, calls = adaptation.MaskedPositionsLoss.forward, []

    def forward(self, *args, **kwargs):
        if self.training:
            calls.append(1)
            if len(calls) == 5:  # the terminal closes during the 5th of 12 steps
                os.kill(os.getpid(), signal.SIGHUP)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(adaptation.MaskedPositionsLoss, "forward", forward)
    folder = tmp_path / AWKWARD
    argv = ["/venv/bin/hf-indosent", "adapt", "--output_dir", str(folder), "--data_dir", str(tiny_smsa_dir)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Interrupted) as stop:
        adaptation.adapt(
            DataArguments(data_dir=str(tiny_smsa_dir), max_seq_len=64, dataset_cache_dir=str(cache_dir)),
            AdaptArguments(
                model_name_or_path=str(tiny_model_dir),
                output_dir=str(folder),
                num_train_epochs=1,
                per_device_train_batch_size=8,
                mixed_precision="no",
            ),
        )
    assert stop.value.signum == signal.SIGHUP and len(calls) == 5 and no_terminal_to_leave == [1]
    assert (folder / "model.safetensors").is_file() and not (folder / LOCK_FILE).exists()
    pasted = str(stop.value).split("Continue with: ", 1)[1]
    assert shlex.split(pasted) == [
        *("hf-indosent", "adapt", "--data_dir", str(tiny_smsa_dir), "--model_name_or_path", str(folder)),
        *("--output_dir", f"{folder}-continued", "--num_train_epochs", "1"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Commands in messages: quoted, so a paste gives back exactly the arguments


def test_a_command_pasted_into_bash_gives_back_its_arguments():
    parts = ["hf-indosent", "predict", "--model", AWKWARD, "--texts", 'it\'s $HOME `id` "q" *', "", "a\nb", "-"]
    line = command(*parts)
    echoed = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True, text=True, timeout=30, check=True
    )
    assert echoed.stdout.split("\0")[:-1] == parts
    assert shlex.split(line) == parts


def test_resume_and_rerun_commands_quote_every_path(monkeypatch):
    argv = ["/venv/bin/hf-indosent", "train", "--output_dir", AWKWARD, "--overwrite_output_dir", "--seed", "3"]
    assert shlex.split(resume_command(argv)) == [
        *("hf-indosent", "train", "--output_dir", AWKWARD, "--seed", "3"),
        *("--resume_from_checkpoint", "latest"),
    ]
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    launcher = ["accelerate", "launch", "--config_file", "my configs/é.yaml", "scripts/train.py", "--output_dir", "a b"]
    rerun = rerun_command(["/abs/scripts/train.py", "--output_dir", "a b"], launcher, add=("--seed", "4"))
    assert shlex.split(rerun) == [*launcher, "--seed", "4"]


def test_a_run_started_with_python_m_is_resumed_with_python_m(monkeypatch):
    """``python -m hf_indosent`` leaves the package's ``__main__.py`` in ``sys.argv[0]``; run as a file it cannot import
    its own package, so the command shown must be ``-m hf_indosent`` again, with or without ``accelerate launch``."""
    argv = ["/venv/lib/site-packages/hf_indosent/__main__.py", "sweep", "--output_dir", AWKWARD]
    expected = ["-m", "hf_indosent", "sweep", "--output_dir", AWKWARD, "--resume_from_checkpoint", "latest"]
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert shlex.split(resume_command(argv)) == ["python", *expected]
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert shlex.split(resume_command(argv, launcher=[])) == ["accelerate", "launch", *expected]


def test_the_final_summary_s_next_commands_paste_as_printed():
    from hf_indosent.training.reporting import final_summary

    results = {"metric_for_best_model": "f1", "validation": {"f1": 0.9}, "best_epoch": 1, "epochs_completed": 2}
    run_dir, data_dir = Path(AWKWARD), "data sets/smsa é"
    summary = final_summary(run_dir, results, 1.0, data_dir)
    commands = [shlex.split(line) for line in summary.split("Next:\n", 1)[1].splitlines()]
    assert commands == [
        ["hf-indosent", "predict", "--model", AWKWARD, "--texts", "makanan nya enak sekali ."],
        [
            *("hf-indosent", "evaluate", "--model", AWKWARD, "--split", "validation", "--data_dir", data_dir),
            *("--output_dir", f"{AWKWARD}/eval"),
        ],
        ["hf-indosent", "push", "--model", AWKWARD, "--repo-id", "your-user/your-model"],
    ]


def test_a_nan_loss_says_the_resume_command_quoted(monkeypatch):
    import torch

    from hf_indosent.training.checkpoints import TrainState
    from hf_indosent.training.step import EpochTally, NonFiniteLossError

    monkeypatch.setattr(sys, "argv", ["/venv/bin/hf-indosent", "train", "--output_dir", AWKWARD])
    tally = EpochTally(torch.device("cpu"), 0, 3)
    labels = torch.zeros(2, dtype=torch.long)
    tally.add(torch.tensor(math.nan, dtype=torch.float64), labels, labels, [])
    with pytest.raises(NonFiniteLossError) as error:
        tally.running_loss(TrainState())
    pasted = str(error.value).split("resumes with: ", 1)[1]
    assert shlex.split(pasted) == [
        "hf-indosent",
        "train",
        "--output_dir",
        AWKWARD,
        "--resume_from_checkpoint",
        "latest",
    ]


def test_seeds_quote_the_options_they_compare(tmp_path):
    from hf_indosent.training.seeds import REPORT, check_same_recipe

    earlier = ["--config", "my configs/é.yaml"]
    (tmp_path / REPORT).write_text(json.dumps({"train_args": earlier}))
    with pytest.raises(ValueError) as error:
        check_same_recipe(tmp_path, ["--config", "other.yaml"])
    assert f"({command(*earlier)}; now --config other.yaml)" in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Near misses: the unknown name first, with the closest valid one


def test_closest_and_did_you_mean():
    flags = ["--learning_rate", "--lr_gamma", "--seed", "--output_dir"]
    assert closest("--learnin_rate", flags) == "--learning_rate"
    assert closest("-learning_rate", flags) == "--learning_rate"  # dashes are not compared
    assert closest("Train", ["train", "predict"]) == "train"
    assert closest("--zzzz", flags) is None
    assert did_you_mean("learnig_rate", ["learning_rate"], quote=True) == " (did you mean 'learning_rate'?)"
    assert did_you_mean(["--learnin_rate", "--zz", "--sed"], flags) == (
        " (did you mean --learning_rate for --learnin_rate, --seed for --sed?)"
    )
    assert did_you_mean("--zzzz", flags) == ""


@pytest.mark.parametrize(
    ("argv", "unknown", "meant"),
    [
        (["train", "--learnin_rate", "1e-4"], "--learnin_rate", "--learning_rate"),  # no --output_dir either
        (["train", "--output_dir", "out", "--seed", "x", "--learnin_rate=1e-4"], "--learnin_rate", "--learning_rate"),
        (["predict", "--modle", "run", "--texts", "enak"], "--modle", "--model"),
        (["baseline", "--outptu_dir=out"], "--outptu_dir", "--output_dir"),
        (["adapt", "--output_dir", "out", "--model_name_or_pth", "m"], "--model_name_or_pth", "--model_name_or_path"),
        (["evaluate", "--split", "nope", "--modle", "run"], "--modle", "--model"),
    ],
)
def test_an_unknown_flag_is_reported_first_with_the_closest_one(argv, unknown, meant, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"error: unknown option {unknown} (did you mean {meant}?)" in err


def test_an_unknown_flag_comes_before_the_recipe_s_complaints_and_real_options_still_parse(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("learning_rate: fast\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        parse_args([FineTuneArguments], ["--config", str(recipe), "--sed", "3"], prog="hf-indosent train")
    assert "unknown option --sed (did you mean --seed?)" in capsys.readouterr().err
    # argparse's own spellings are not unknown: abbreviations, --flag=value, values that start with a dash
    (args,) = parse_args(
        [FineTuneArguments], ["--output_dir", "-", "--packin", "true", "--weight_decay=0.5", "--learning_rate", "1e-4"]
    )
    assert (args.packing, args.weight_decay, args.output_dir) == (True, 0.5, "-")
    parser = _Parser([FineTuneArguments])
    values = ["-", "", "-1.5", "--- bagus sekali ---", "-x y", "--", "--after-the-double-dash"]
    assert unknown_options(parser, ["--packin", "--seed=3", *values]) == []
    assert unknown_options(parser, ["--confg=my recipe.yaml", "-x", "--seed", "3"]) == ["--confg", "-x"]


def test_an_unknown_recipe_key_suggests_the_closest_one(tmp_path, capsys):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("learnig_rate: 3e-6\noutput_dir: out\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        parse_args([FineTuneArguments], ["--config", str(recipe)], prog="hf-indosent train")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "unknown keys ['learnig_rate'] (did you mean 'learning_rate'?)" in err


@pytest.mark.parametrize(("name", "meant"), [("trian", "train"), ("predcit", "predict"), ("baselien", "baseline")])
def test_an_unknown_command_suggests_the_closest_one(name, meant, capsys):
    assert cli.main([name, "--output_dir", "x"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"hf-indosent: unknown command {name!r} (did you mean {meant!r}?)"


# ---------------------------------------------------------------------------------------------------------------
# A reader of stdout that goes away (`predict | head`): a quiet exit 141, as Unix tools


def test_a_broken_pipe_is_a_quiet_exit_141(monkeypatch, capsys):
    def raises() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    assert cli.run_command("hf-indosent predict", raises) == 141
    read, write = os.pipe()
    os.close(read)  # the reader has gone
    monkeypatch.setattr(sys, "stdout", os.fdopen(write, "w"))

    def prints() -> None:
        for _ in range(10_000):
            print("positive\t0.9")

    assert cli.run_command("hf-indosent predict", prints) == 141
    assert capsys.readouterr().err == ""
    sys.stdout.close()  # its buffer goes to /dev/null now: no error


def test_a_reader_that_goes_away_leaves_no_message_behind():
    body = "import sys\nfrom hf_indosent.cli import run_command\nsys.exit(run_command('x', lambda: [print(i) for i in range(10**6)]))"  # noqa: E501
    piped = subprocess.run(
        [
            "bash",
            "-c",
            f'{shlex.quote(sys.executable)} -c {shlex.quote(body)} | head -1; echo "${{PIPESTATUS[0]}}" >&2',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stdout == "0\n"
    assert piped.stderr == "141\n"  # nothing else: no message, no "Exception ignored"
