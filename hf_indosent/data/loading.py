"""The splits a job trains or scores on: an IndoNLU task (SmSA by default) or the user's files, cut to the asked
sizes, validation labels required."""

from __future__ import annotations

import datasets
from accelerate import Accelerator

from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.builders import require_labels
from hf_indosent.data.indonlu import load_task
from hf_indosent.data.smsa import load_smsa
from hf_indosent.data.tasks import DEFAULT_TASK


def load_data(data_args: DataArguments, accelerator: Accelerator) -> datasets.DatasetDict:
    with accelerator.main_process_first():
        if data_args.task != DEFAULT_TASK:
            dataset = load_task(data_args.task, data_dir=data_args.data_dir, cache_dir=data_args.dataset_cache_dir)
        else:
            dataset = load_smsa(
                data_dir=data_args.data_dir,
                data_files=data_args.data_files,
                label_names=data_args.label_names,
                text_column=data_args.text_column,
                label_column=data_args.label_column,
                header=data_args.header,
                cache_dir=data_args.dataset_cache_dir,
            )
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    limits["test"] = data_args.max_eval_samples
    for split, limit in limits.items():
        if split in dataset and limit is not None:
            dataset[split] = dataset[split].select(range(min(limit, dataset[split].num_rows)))
    require_labels(dataset["validation"], "validation")  # early stopping needs validation labels
    return dataset
