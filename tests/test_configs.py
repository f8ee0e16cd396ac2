"""Every recipe in configs/ parses with its command's arguments, and the chained recipes fit together."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_indosent.core.arguments import parse_args
from hf_indosent.data.arguments import DataArguments
from hf_indosent.inference.arguments import BaselineArguments
from hf_indosent.training.arguments import AdaptArguments, FineTuneArguments, ModelArguments

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ADAPT_RECIPES = {path.name for path in CONFIGS.glob("*.yaml") if "adapt" in path.stem.split("-")}
"""``hf-indosent adapt`` recipes: ``smsa-minilm-adapt.yaml``, ``casa-minilm-adapt-vocab.yaml``, ... (not ``-tapt``)."""
FAMILY = ("emot", "casa", "hoasa")
"""IndoNLU's sentiment tasks beside SmSA (issue 31): each has an IndoBERT, an offline MiniLM and a baseline recipe."""
BASELINE_RECIPES = {f"{task}-baseline.yaml" for task in FAMILY}


def command_of(name: str) -> tuple[type, ...]:
    """The argument classes of the command a recipe is for: adapt, baseline or train."""
    if name in ADAPT_RECIPES:
        return (DataArguments, AdaptArguments)
    if name in BASELINE_RECIPES:
        return (DataArguments, BaselineArguments)
    return (ModelArguments, DataArguments, FineTuneArguments)


@pytest.mark.parametrize("name", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_every_recipe_parses_with_its_command(name):
    classes = command_of(name)
    parsed = parse_args(classes, ["--config", str(CONFIGS / name)])
    assert len(parsed) == len(classes)


def test_tapt_recipe_fine_tunes_what_the_adapt_recipe_writes():
    adapt = yaml.safe_load((CONFIGS / "smsa-minilm-adapt.yaml").read_text())
    tapt = yaml.safe_load((CONFIGS / "smsa-minilm-tapt.yaml").read_text())
    offline = yaml.safe_load((CONFIGS / "smsa-minilm-offline.yaml").read_text())
    assert tapt["model_name_or_path"] == adapt["output_dir"]
    assert adapt["model_name_or_path"] == offline["model_name_or_path"]
    # the ablation changes one thing: the starting model; the fine-tuning recipe is the offline one
    different = {key for key in offline if offline[key] != tapt.get(key)}
    assert different == {"model_name_or_path", "output_dir"}


def test_continued_adaptation_starts_from_the_first_stage_with_its_settings():
    adapt = yaml.safe_load((CONFIGS / "smsa-minilm-adapt.yaml").read_text())
    more = yaml.safe_load((CONFIGS / "smsa-minilm-adapt-more.yaml").read_text())
    assert more["model_name_or_path"] == adapt["output_dir"] != more["output_dir"]
    # another seed: the continued stage masks other tokens than the first one did
    assert {key for key in adapt if adapt[key] != more.get(key)} == {"model_name_or_path", "output_dir", "seed"}


def test_vocabulary_recipes_change_only_the_vocabulary_and_the_loss():
    adapt = yaml.safe_load((CONFIGS / "smsa-minilm-adapt.yaml").read_text())
    vocab = yaml.safe_load((CONFIGS / "smsa-minilm-adapt-vocab.yaml").read_text())
    tapt = yaml.safe_load((CONFIGS / "smsa-minilm-tapt.yaml").read_text())
    vocab_tapt = yaml.safe_load((CONFIGS / "smsa-minilm-vocab-tapt.yaml").read_text())
    assert {key for key in vocab if vocab[key] != adapt.get(key)} == {"extend_vocab", "output_dir"}
    assert vocab["extend_vocab"] > 0
    assert vocab_tapt["model_name_or_path"] == vocab["output_dir"]
    assert {key for key in tapt if tapt[key] != vocab_tapt.get(key)} == {"model_name_or_path", "output_dir"}
    # and the loss: focal loss with gamma 1, measured as accurate as cross-entropy and better calibrated
    assert set(vocab_tapt) - set(tapt) == {"focal_gamma", "adapt_config"} and vocab_tapt["focal_gamma"] == 1
    # and it is one command: its stage 1 is the vocabulary adaptation, written where its stage 2 reads
    assert vocab_tapt["adapt_config"] == "configs/smsa-minilm-adapt-vocab.yaml"


def test_indobert_recipe_is_the_tutorials():
    recipe = yaml.safe_load((CONFIGS / "smsa-indobert-base-p1.yaml").read_text())
    assert recipe["model_name_or_path"] == "indobenchmark/indobert-base-p1"
    assert (recipe["learning_rate"], recipe["num_train_epochs"], recipe["per_device_train_batch_size"]) == (3e-6, 5, 32)


def test_second_indobert_recipe_is_the_tutorials_fine_tuning_from_the_adapted_indobert():
    tutorial = yaml.safe_load((CONFIGS / "smsa-indobert-base-p1.yaml").read_text())
    adapt = yaml.safe_load((CONFIGS / "smsa-indobert-base-p1-adapt.yaml").read_text())
    tapt = yaml.safe_load((CONFIGS / "smsa-indobert-base-p1-tapt.yaml").read_text())
    assert adapt["model_name_or_path"] == tutorial["model_name_or_path"]
    assert tapt["model_name_or_path"] == adapt["output_dir"]
    assert {key for key in tutorial if tutorial[key] != tapt.get(key)} == {"model_name_or_path", "output_dir"}


def recipe(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.mark.parametrize("task", FAMILY)
def test_every_task_recipe_reads_its_task_from_the_local_copy(task):
    for kind in ("indobert-base-p1", "minilm-offline", "baseline"):
        name = f"{task}-{kind}.yaml"
        parsed = {type(args): args for args in parse_args(command_of(name), ["--config", str(CONFIGS / name)])}
        data = parsed[DataArguments]
        assert (data.task, data.data_dir) == (task, f"../shared/indonlu/{task}"), name
        assert recipe(name)["output_dir"] == f"outputs/{task}-{kind}", name
    assert parsed[BaselineArguments].C is None  # the baseline picks C on validation


@pytest.mark.parametrize(
    ("task", "notebook"),
    [("emot", (3e-6, 5, 32)), ("casa", (5e-6, 5, 16)), ("hoasa", (5e-6, 5, 16))],  # HoASA: CASA's notebook
)
def test_indobert_task_recipes_are_indonlus_notebooks_on_the_smsa_recipes_loop(task, notebook):
    """IndoNLU's examples/finetune_emot.ipynb and finetune_casa.ipynb (lr, epochs, batch) on the SmSA recipe's loop."""
    smsa, ours = recipe("smsa-indobert-base-p1.yaml"), recipe(f"{task}-indobert-base-p1.yaml")
    assert (ours["learning_rate"], ours["num_train_epochs"], ours["per_device_train_batch_size"]) == notebook
    different = {key for key in set(smsa) | set(ours) if smsa.get(key) != ours.get(key)}
    assert different <= {"task", "data_dir", "output_dir", "learning_rate", "per_device_train_batch_size"}


@pytest.mark.parametrize("task", FAMILY)
def test_offline_task_recipes_are_the_vocabulary_recipes_without_adaptation_and_focal_loss(task):
    """As on SmSA (plain MiniLM, then adapted, then with focal loss), each step changes one thing: the offline recipe
    fine-tunes the packaged MiniLM with the task's schedule of ``<task>-minilm-vocab-tapt.yaml``, cross-entropy."""
    offline, vocab_tapt = recipe(f"{task}-minilm-offline.yaml"), recipe(f"{task}-minilm-vocab-tapt.yaml")
    smsa = recipe("smsa-minilm-offline.yaml")
    assert offline["model_name_or_path"] == smsa["model_name_or_path"] and "focal_gamma" not in offline
    different = {key for key in set(offline) | set(vocab_tapt) if offline.get(key) != vocab_tapt.get(key)}
    assert different == {"adapt_config", "focal_gamma", "model_name_or_path", "output_dir"}
