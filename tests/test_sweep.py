"""``hf-indosent sweep`` (issue 30): space-file errors before any trial, pruning from inside the training loop, the
best recipe loading into ``train``, Ctrl-C and resume, a killed worker and a worker lost elsewhere, two workers on one
SQLite study. Tiny model, trials of a second or two."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import FAST, ROOT, cli_args, log_lines

from hf_indosent import cli
from hf_indosent.core.arguments import RecipeError, parse_args
from hf_indosent.data.arguments import DataArguments
from hf_indosent.training.arguments import FineTuneArguments, ModelArguments

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason='needs optuna: pip install -e ".[dev]"'),
    pytest.mark.usefixtures("one_torch_thread"),
]


def sweep_argv(model_dir, data_dir, sweep_dir, cache_dir, space: Path, *training: str, **sweep) -> list[str]:
    """A sweep of the tiny model: train's options (conftest's FAST, then ``training``) and the sweep's own."""
    options = {"space": space, "heartbeat": 0, **sweep}
    own = [item for key, value in options.items() for item in (f"--{key}", str(value))]
    return ["sweep", *cli_args(model_dir, data_dir, sweep_dir, cache_dir, calibrate=False), *training, *own]


QUICK = ("--num_train_epochs", "1", "--max_train_samples", "32", "--max_eval_samples", "24")
"""Trials of about a second: 4 steps, one epoch."""


def rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "trials.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------
# The space file


@pytest.mark.parametrize(
    ("space", "said"),
    [
        ("- learning_rate\n", "must map recipe keys to ranges"),
        ("learning_rate: {low: 1, high\n", "is not valid YAML at line"),
        (
            "learnig_rate: {low: 1.0e-5, high: 1.0e-4}\n",
            "unknown recipe keys ['learnig_rate'] (did you mean 'learning_rate'?)",
        ),
        ("output_dir: {choices: [a, b]}\n", "output_dir cannot be searched"),
        ("learning_rate: {low: 1.0e-4, high: 1.0e-5}\n", "the range from 0.0001 to 1e-05 is empty"),
        ("learning_rate: {low: 1.0e-4, high: 1.0e-4}\n", "(one value: write it as a fixed value)"),
        ("learning_rate: {low: 0.0, high: 1.0e-4, log: true}\n", "a log range needs low > 0"),
        ("learning_rate: {low: 1.0e-5, hi: 1.0e-4}\n", "unknown field 'hi' (did you mean 'high'?)"),
        ("num_train_epochs: {low: 2.5, high: 4}\n", "num_train_epochs: low: 2.5 is not an integer"),
        ("packing: {low: 0, high: 1}\n", "a bool key has no range: use {choices: [...]}"),
        ("per_device_train_batch_size: {choices: []}\n", "choices must be a non-empty list"),
        ("per_device_train_batch_size: {choices: [8, eight]}\n", "choice 'eight': 'eight' is not an integer"),
        ("seed: 1\n", "searches nothing"),
        ("label_smoothing: {low: 0.0, high: 0.2}\nfocal_gamma: {choices: [0.0, 1.0]}\n", "cannot be combined"),
        (
            "packing: {choices: [true, false]}\nmicro_batches: {choices: [1, 4]}\n",
            "the trial packing=True, micro_batches=4 cannot run",
        ),
    ],
)
def test_space_file_errors(tmp_path, space, said):
    from hf_indosent.experiments.space import load_space

    path = write(tmp_path / "space.yaml", space)
    groups = [ModelArguments(model_name_or_path="m"), DataArguments(), FineTuneArguments(output_dir=str(tmp_path))]
    with pytest.raises(RecipeError) as refused:
        load_space(str(path), groups)
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_the_shipped_space_holds_its_recipe():
    """configs/sweeps/minilm-vocab-tapt.yaml fits the best offline recipe, whose own values are all inside it (the
    sweep's first trial is that recipe)."""
    from hf_indosent.experiments.space import load_space, recipe_values

    groups = parse_args(
        [ModelArguments, DataArguments, FineTuneArguments],
        ["--config", str(ROOT / "configs/smsa-minilm-vocab-tapt.yaml")],
    )
    params = load_space(str(ROOT / "configs/sweeps/minilm-vocab-tapt.yaml"), groups)
    assert set(recipe_values(params, groups)) == {param.name for param in params}


def test_a_bad_space_is_one_line_before_any_trial(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, capsys):
    space = write(
        tmp_path / "space.yaml", "learning_rate: {low: 1.0e-3, high: 1.0e-2}\nmax_seq_len: {choices: [32, 0]}\n"
    )
    sweep_dir = tmp_path / "sweep"
    code = cli.main(sweep_argv(tiny_model_dir, tiny_smsa_dir, sweep_dir, tmp_path / "cache", space))
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "max_seq_len=0" in line and "cannot run" in line
    assert not sweep_dir.exists()


def test_a_missing_optuna_names_the_extra(tmp_path, capsys, monkeypatch):
    from hf_indosent.experiments import arguments

    real = importlib.util.find_spec
    monkeypatch.setattr(arguments.importlib.util, "find_spec", lambda name: None if name == "optuna" else real(name))
    space = write(tmp_path / "space.yaml", "seed: {choices: [1, 2]}\n")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["sweep", "--space", str(space), "--output_dir", str(tmp_path / "sweep")])
    assert stopped.value.code == 2
    assert 'pip install "hf-indosent[sweep]"' in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# A sweep, in this process


def test_pruning_the_best_recipe_and_what_the_sweep_leaves(
    tiny_model_dir, tiny_classifier_dir, tiny_smsa_dir, tmp_path, cache_dir
):
    """Trial 0 starts from a trained classifier (validation F1 ~1 after epoch 1), trial 1 from the untrained model
    (F1 0.17): the median pruner stops trial 1 after its first epoch and its folder is deleted. The best trial's
    recipe is a YAML that train's parser takes, its model is copied to best/, every trial is in the tables."""
    import optuna

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    space = write(
        tmp_path / "space.yaml",
        f"model_name_or_path: {{choices: ['{tiny_classifier_dir}', '{tiny_model_dir}']}}\n"
        "learning_rate: {low: 1.0e-5, high: 1.0e-4, log: true}\nweight_decay: 0.001\n",
    )
    study = optuna.create_study(storage=f"sqlite:///{sweep_dir / 'study.db'}", study_name="sweep", direction="maximize")
    study.enqueue_trial({"model_name_or_path": str(tiny_classifier_dir), "learning_rate": 1e-4})
    study.enqueue_trial({"model_name_or_path": str(tiny_model_dir), "learning_rate": 1e-4})
    argv = sweep_argv(
        tiny_model_dir,
        tiny_smsa_dir,
        sweep_dir,
        cache_dir,
        space,
        *QUICK,
        "--num_train_epochs",
        "2",
        pruner_startup_trials=1,
    )
    assert cli.main([*argv, "--n_trials", "3"]) == 0

    table = rows(sweep_dir)
    assert [row["state"] for row in table][:2] == ["complete", "pruned"] and len(table) == 3
    assert table[1]["note"] == "pruned after epoch 1" and not (sweep_dir / "trial-0001").exists()
    assert (sweep_dir / "trial-0000" / "metrics.json").is_file() and (sweep_dir / "trial-0002" / "log.jsonl").is_file()
    assert (
        "| trial | state | validation.f1 | model_name_or_path | learning_rate |"
        in (sweep_dir / "trials.md").read_text()
    )
    for name in ("optimization_history.png", "param_importances.png", "sweep.json", "best_recipe.yaml"):
        assert (sweep_dir / name).is_file(), name

    best = json.loads((sweep_dir / "best_trial.json").read_text())
    assert (sweep_dir / "best" / "model.safetensors").is_file()
    model_args, data_args, args = parse_args(
        [ModelArguments, DataArguments, FineTuneArguments], ["--config", str(sweep_dir / "best_recipe.yaml")]
    )
    assert model_args.model_name_or_path == best["params"]["model_name_or_path"]
    assert args.learning_rate == pytest.approx(best["params"]["learning_rate"]) and args.weight_decay == 0.001
    assert args.num_train_epochs == 2 and args.per_device_train_batch_size == FAST["per_device_train_batch_size"]
    assert data_args.data_dir == str(tiny_smsa_dir) and args.output_dir == f"{sweep_dir}-best"

    # the same command with more trials extends the study; with another space it is refused
    assert cli.main([*argv, "--n_trials", "4"]) == 0
    assert len(rows(sweep_dir)) == 4
    write(space, space.read_text().replace("0.001", "0.01"))
    assert cli.main([*argv, "--n_trials", "5"]) == 1 and len(rows(sweep_dir)) == 4


def test_ctrl_c_saves_the_trial_and_the_same_command_continues_it(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, capsys, monkeypatch
):
    """Ctrl-C during a trial's first epoch: the trial saves its checkpoint, the sweep stops (exit 130) with the
    command that continues it, and that command resumes the trial from its checkpoint."""
    from hf_indosent.training import loop

    original, calls = loop.end_of_epoch, []

    def ctrl_c_in_epoch_1(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # while the epoch ends: answered after its checkpoint
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "end_of_epoch", ctrl_c_in_epoch_1)
    space = write(tmp_path / "space.yaml", "learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sweep_dir = tmp_path / "sweep"
    argv = sweep_argv(tiny_model_dir, tiny_smsa_dir, sweep_dir, cache_dir, space, *QUICK, n_trials=1)
    argv += ["--num_train_epochs", "2"]
    assert cli.main(argv) == 130
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sweep stopped" in said and "Continue it with:" in said
    assert [(row["state"], row["note"]) for row in rows(sweep_dir)] == [
        ("fail", "the recipe's own values; stopped: SIGINT; retried as trial 1"),
        ("waiting", "retry of trial 0"),
    ]
    assert cli.main(argv) == 0
    assert [row["state"] for row in rows(sweep_dir)] == ["fail", "complete"]
    assert [entry["epoch"] for entry in log_lines(sweep_dir / "trial-0000")] == [1, 2]
    assert len(json.loads((sweep_dir / "trial-0000" / "args.json").read_text())["resumes"]) == 1


# ----------------------------------------------------------------------------------------------------------------
# Workers: killed, and two at once


def run_sweep_process(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hf_indosent", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_resume_after_a_killed_worker(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    """A worker killed (SIGKILL) in the middle of trial 0: the same command marks it failed, retries its parameters
    from trial 0's last checkpoint, and finishes the study: no trial lost, none run twice."""
    space = write(tmp_path / "space.yaml", "learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sweep_dir = tmp_path / "sweep"
    argv = sweep_argv(tiny_model_dir, tiny_smsa_dir, sweep_dir, cache_dir, space, *QUICK, n_trials=1)
    argv += ["--num_train_epochs", "4", "--early_stopping_patience", "10"]
    worker = run_sweep_process(argv, env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoints = sweep_dir / "trial-0000" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints.is_dir() and any(p.name.startswith("checkpoint-") for p in checkpoints.iterdir())):
        assert worker.poll() is None, worker.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "trial 0 wrote no checkpoint in time"
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    assert cli.main(argv) == 0
    table = rows(sweep_dir)
    assert [(row["trial"], row["state"]) for row in table] == [("0", "fail"), ("1", "complete")]
    assert "its worker died" in table[0]["note"] and "retried as trial 1" in table[0]["note"]
    assert table[1]["note"] == "retry of trial 0" and table[1]["learning_rate"] == table[0]["learning_rate"]
    assert table[1]["run_folder"] == "trial-0000" and not (sweep_dir / "trial-0001").exists()
    assert [entry["epoch"] for entry in log_lines(sweep_dir / "trial-0000")] == [1, 2, 3, 4]  # resumed, not rerun
    assert len(json.loads((sweep_dir / "trial-0000" / "args.json").read_text())["resumes"]) == 1


def test_a_trial_of_a_worker_lost_elsewhere_is_retried(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    """A trial whose worker, on another machine, stopped beating for twice --heartbeat is failed and retried."""
    from hf_indosent.experiments.study import make_pruner, open_study

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    study = open_study(
        f"sqlite:///{sweep_dir / 'study.db'}",
        "sweep",
        "maximize",
        sampler="tpe",
        seed=0,
        base_seed=0,
        pruner=make_pruner("none", 0),
        heartbeat=1,
    )
    import optuna

    with warnings.catch_warnings():  # "heartbeat ... supposed to be used with Study.optimize"
        warnings.simplefilter("ignore")
        lost = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
    lost.set_user_attr("worker", {"host": "another-machine", "pid": 1})
    study._storage.record_heartbeat(lost._trial_id)
    time.sleep(3.2)  # two heartbeats missed (SQLite keeps whole seconds: more than 2 s after the last one)
    space = write(tmp_path / "space.yaml", "learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    argv = sweep_argv(tiny_model_dir, tiny_smsa_dir, sweep_dir, cache_dir, space, *QUICK, n_trials=1, heartbeat=1)
    assert cli.main(argv) == 0
    assert [(row["state"], row["note"]) for row in rows(sweep_dir)] == [
        ("fail", "its worker was lost (no heartbeat); retried as trial 1"),
        ("complete", "retry of trial 0"),
    ]


def test_two_workers_on_one_sqlite_study(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    """The same command in two processes (two terminals, or two machines with a shared --storage): the second joins
    the study the first is running; every trial is run once, by one of them, into its own folder, and the study
    ends with --n_trials finished trials."""
    import optuna

    space = write(tmp_path / "space.yaml", "learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sweep_dir = tmp_path / "sweep"
    argv = sweep_argv(tiny_model_dir, tiny_smsa_dir, sweep_dir, cache_dir, space, *QUICK, n_trials=3)
    other = run_sweep_process(argv, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (sweep_dir / "trial-0000").is_dir():
        assert other.poll() is None, other.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the first worker started no trial in time"
        time.sleep(0.05)
    assert cli.main(argv) == 0
    output = other.communicate(timeout=240)[0]
    assert other.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    trials = study.get_trials()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and len(trials) in (3, 4)  # one may overlap
    folders = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(folders)) == len(folders) and all(Path(f, "metrics.json").is_file() for f in folders)
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {os.getpid(), other.pid}  # both worked
    assert len(rows(sweep_dir)) == len(trials)


def test_more_workers_run_the_same_sweep(tmp_path):
    """--n_jobs N starts N - 1 more workers with the same recipe (from the sweep folder), space and settings, each
    with its own sampler seed and one job."""
    from hf_indosent.experiments.arguments import SweepArguments
    from hf_indosent.experiments.settings import RECIPE_FILE, recipe_record, worker_command

    space = write(tmp_path / "space.yaml", "learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    groups = [
        ModelArguments(model_name_or_path="m"),
        DataArguments(max_seq_len=64),
        FineTuneArguments(output_dir=str(tmp_path / "sweep"), learning_rate=1e-3, report_to="none"),
    ]
    (tmp_path / "sweep").mkdir()
    import yaml

    (tmp_path / "sweep" / RECIPE_FILE).write_text(yaml.safe_dump(recipe_record(groups)))
    settings = SweepArguments(space=str(space), n_trials=7, n_jobs=3, keep="best")
    command = worker_command(tmp_path / "sweep", settings, seed=43)
    assert command[1:4] == ["-m", "hf_indosent", "sweep"]
    *parsed, own = parse_args([ModelArguments, DataArguments, FineTuneArguments, SweepArguments], command[4:])
    assert parsed == groups
    assert own == SweepArguments(space=str(space), n_trials=7, n_jobs=1, keep="best", sampler_seed=43)
