"""Setup of a training run: the Accelerator, the checks that come before an old run is replaced, data, model, loaders.

:func:`setup` returns the :class:`Run` the loop in :mod:`hf_indosent.training.loop` works on, and the
:class:`TrainState` to start from (fresh, or restored from a checkpoint).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from evaluate import EvaluationModule
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.core.files import check_output_folder, recover_dir
from hf_indosent.core.stopping import StopRequests
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.builders import has_labels, label_columns
from hf_indosent.data.loading import load_data
from hf_indosent.data.tokenization import LENGTH_COLUMN, build_collator, tokenize_dataset
from hf_indosent.metrics.scores import load_metric
from hf_indosent.modeling.loading import (
    BEST_DIR,
    adaptation_of,
    load_config,
    load_model,
    load_tokenizer,
    resolve_model_source,
)
from hf_indosent.sharing.hub import check_hub_access
from hf_indosent.training.arguments import FineTuneArguments, ModelArguments
from hf_indosent.training.checkpoints import (
    CheckpointClock,
    TrainState,
    load_checkpoint,
    remove_staging,
    resolve_checkpoint,
)
from hf_indosent.training.device_defaults import DeviceDefaults, device_defaults, resolve_mixed_precision
from hf_indosent.training.packing import PackedCollator, packing_unavailable, unfit_for_packing
from hf_indosent.training.reporting import start_summary
from hf_indosent.training.run_folder import (
    arguments_record,
    check_free_space,
    check_output_dir,
    check_overwrite_spares_inputs,
    check_resume_arguments,
    recorded_launch,
    replace_old_run,
    write_arguments,
)
from hf_indosent.training.sampling import EpochBatchSampler
from hf_indosent.training.step import MicroBatchCollator, balanced_class_weights
from hf_indosent.training.trackers import GuardedTracker, build_trackers, recorded_trackers, run_name_of

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything :func:`setup` builds for the loop."""

    accelerator: Accelerator
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader
    train_sampler: EpochBatchSampler
    eval_loaders: dict[str, DataLoader]
    label_names: list[str]
    metric: EvaluationModule
    run_dir: Path
    args: FineTuneArguments
    stops: StopRequests = field(default_factory=StopRequests)
    clock: CheckpointClock = field(default_factory=lambda: CheckpointClock(None))
    progress: tqdm | None = None  # one bar over all epochs, made by train()
    class_weights: torch.Tensor | None = None  # per label, for the training loss (--class_weights)
    aspects: tuple[str, ...] = ()  # an aspect task's aspects, one head each (hf_indosent.modeling.aspects)

    @property
    def num_aspects(self) -> int:
        """Heads stacked in the model's output: one per aspect, or 1 for a single-label task."""
        return len(self.aspects) or 1

    def say(self, text: str) -> None:
        """Print on the main process without breaking the progress bar."""
        if self.accelerator.is_main_process:
            (self.progress or tqdm).write(text)


def class_weights_of(args: FineTuneArguments, labels: list[int], num_labels: int) -> list[float] | None:
    """``--class_weights`` as one weight per label id: computed from the training labels for 'balanced'."""
    if args.class_weights in (None, "none"):
        return None
    if args.class_weights == "balanced":
        return balanced_class_weights(np.bincount(labels, minlength=num_labels).tolist())
    weights = [float(item) for item in args.class_weights.split(",")]
    if len(weights) != num_labels:
        raise ArgumentError(
            f"class_weights={args.class_weights!r} gives {len(weights)} weights for {num_labels} labels: give one per "
            "label in id order, or 'balanced'"
        )
    return weights


def make_loader(
    dataset: datasets.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    args: FineTuneArguments,
    collator,
    pin_memory: bool = False,
) -> tuple[DataLoader, EpochBatchSampler]:
    sampler = EpochBatchSampler(
        dataset[LENGTH_COLUMN], batch_size, shuffle=shuffle, group_by_length=args.group_by_length, seed=args.seed
    )
    loader = DataLoader(
        dataset.remove_columns(LENGTH_COLUMN),  # the collator only sees model inputs and labels
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=args.dataloader_num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(args.seed),  # never draw from the global RNG (exact resume)
    )
    return loader, sampler


def check_max_seq_len(model_args: ModelArguments, data_args: DataArguments) -> PretrainedConfig:
    """Refuses a ``max_seq_len`` beyond the model's position embeddings; returns the model's config."""
    config = load_config(model_args.model_name_or_path, model_args.revision)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and data_args.max_seq_len > limit:
        raise ArgumentError(
            f"max_seq_len={data_args.max_seq_len} exceeds what {model_args.model_name_or_path} accepts ({limit}); "
            f"pass --max_seq_len {limit} or less"
        )
    return config


def make_accelerator(args: FineTuneArguments) -> Accelerator:
    return Accelerator(
        mixed_precision=resolve_mixed_precision(
            args.mixed_precision, Path(args.output_dir) if args.resume_from_checkpoint is not None else None
        ),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # StepLR steps once per epoch, by us
        log_with=run_trackers(args) or None,  # guarded: a tracker's failure never stops the run (training/trackers.py)
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "runs")
        ),
        dataloader_config=DataLoaderConfiguration(non_blocking=True),  # with pinned batches on a GPU
    )


def launch_facts(accelerator: Accelerator, defaults: DeviceDefaults) -> dict[str, Any]:
    """How the run computes, recorded in args.json (a resumed run must match it)."""
    return {
        "num_processes": accelerator.num_processes,
        "device": accelerator.device.type,
        "mixed_precision": accelerator.mixed_precision,
        **dataclasses.asdict(defaults),
    }


def setup(
    accelerator: Accelerator, model_args: ModelArguments, data_args: DataArguments, args: FineTuneArguments
) -> tuple[Run, TrainState]:
    """Build everything the loop needs. Every input is checked before an old run in output_dir is replaced."""
    run_dir = Path(args.output_dir)
    resuming = args.resume_from_checkpoint is not None
    inputs = {"--model_name_or_path": model_args.model_name_or_path, **data_args.input_paths}
    check_output_folder(run_dir, "--output_dir", inputs)
    check_output_dir(run_dir, args.overwrite_output_dir, resuming)
    if args.overwrite_output_dir and not resuming:
        check_overwrite_spares_inputs(run_dir, inputs)
    checkpoint = resolve_checkpoint(run_dir, args.resume_from_checkpoint) if resuming else None
    resolve_model_source(model_args.model_name_or_path, "--model_name_or_path")
    config = check_max_seq_len(model_args, data_args)
    defaults = device_defaults(
        accelerator.device,
        args,
        packing_unavailable(config, accelerator.num_processes),
        recorded_launch(run_dir) if resuming else None,
    )
    record = arguments_record(model_args, data_args, args, launch=launch_facts(accelerator, defaults))
    record["adapted_from"] = adaptation_of(model_args.model_name_or_path)  # for the model card; None if not adapted
    changed = check_resume_arguments(run_dir, record) if resuming else {}
    if args.push_to_hub:
        check_hub_access(args.hub_model_id)  # now, not after hours of training
    set_seed(args.seed)

    dataset = load_data(data_args, accelerator)
    columns = label_columns(dataset["train"])
    aspects = () if columns == ["label"] else tuple(columns)  # an aspect task: one head per aspect
    label_names = dataset["train"].features[columns[0]].names
    train_labels = [label for column in columns for label in dataset["train"][column]]
    class_weights = class_weights_of(args, train_labels, len(label_names))
    tokenizer = load_tokenizer(model_args.model_name_or_path, revision=model_args.revision)
    model = load_model(
        model_args.model_name_or_path,
        label_names,
        revision=model_args.revision,
        attn_implementation=model_args.attn_implementation,
        aspects=aspects,
        task=None if data_args.data_files else data_args.task,
    )
    unfit = unfit_for_packing(model) if defaults.packing else None  # the packing contract, before the first step
    if unfit:  # auto falls back to micro-batches (one line); --packing true is refused, before the old run is replaced
        packed = defaults
        defaults = device_defaults(accelerator.device, args, unfit, recorded_launch(run_dir) if resuming else None)
        logger.warning("Packing off (%s): training with %d micro-batches per batch.", unfit, defaults.micro_batches)
        record["launch"] = launch_facts(accelerator, defaults)  # args.json records what runs
        if resuming:  # same loss and gradients either way (tests/test_packing.py): a change the resume honours
            changed.update(
                {name: [getattr(packed, name), getattr(defaults, name)] for name in ("packing", "micro_batches")}
            )
    weight_bytes = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    check_free_space(run_dir, weight_bytes, args.save_total_limit, args.overwrite_output_dir and not resuming)
    if not resuming:
        replace_old_run(run_dir, accelerator)  # only now: everything above could still refuse the run

    with accelerator.main_process_first():
        tokenized = tokenize_dataset(dataset, tokenizer, data_args.max_seq_len)
    if defaults.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.torch_compile:
        model = torch.compile(model, dynamic=True)

    collator = build_collator(
        tokenizer, tensor_cores=accelerator.mixed_precision != "no" and accelerator.device.type == "cuda"
    )
    train_loader, train_sampler = make_loader(
        tokenized["train"],
        args.per_device_train_batch_size,
        shuffle=True,
        args=args,
        collator=PackedCollator() if defaults.packing else MicroBatchCollator(collator, defaults.micro_batches),
        pin_memory=defaults.pin_memory,
    )
    eval_splits = ["validation"]
    if "test" in tokenized and has_labels(dataset["test"]):
        eval_splits.append("test")
    eval_loaders = {
        split: make_loader(
            tokenized[split],
            args.per_device_eval_batch_size,
            shuffle=False,
            args=args,
            collator=collator,
            pin_memory=defaults.pin_memory,
        )[0]
        for split in eval_splits
    }
    optimizer = torch.optim.Adam(
        model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay, fused=args.fused_adam
    )
    scheduler = StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma)
    model, optimizer, train_loader, scheduler, *prepared = accelerator.prepare(
        model, optimizer, train_loader, scheduler, *eval_loaders.values()
    )
    eval_loaders = dict(zip(eval_loaders, prepared, strict=True))

    state = TrainState()
    if checkpoint is not None:
        if accelerator.is_main_process:
            recover_dir(run_dir / BEST_DIR)
            remove_staging(run_dir)
        accelerator.wait_for_everyone()
        state = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"Resumed from {checkpoint} (epoch {state.epoch}, step {state.global_step})")
    if accelerator.is_main_process:
        write_arguments(run_dir, record, checkpoint, changed)
    run = Run(
        accelerator=accelerator,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        train_sampler=train_sampler,
        eval_loaders=eval_loaders,
        label_names=list(label_names),
        metric=load_metric(),
        run_dir=run_dir,
        args=args,
        class_weights=None if class_weights is None else torch.tensor(class_weights, device=accelerator.device),
        aspects=aspects,
    )
    if accelerator.is_main_process:
        print(start_summary(run_facts(run, model_args, dataset, defaults)), flush=True)
    return run, state


def run_facts(run: Run, model_args: ModelArguments, dataset: datasets.DatasetDict, defaults: DeviceDefaults) -> dict:
    """The start summary's figures (see :func:`hf_indosent.training.reporting.start_summary`)."""
    accelerator, args = run.accelerator, run.args
    splits = {name: split.num_rows for name, split in dataset.items()}
    if "test" in dataset and "test" not in run.eval_loaders:
        splits["test (unlabelled, not scored)"] = splits.pop("test")
    every = [f"{args.checkpointing_steps} steps" if args.checkpointing_steps else ""]
    every.append(f"{args.checkpointing_minutes:g} min" if args.checkpointing_minutes else "")
    every = [item for item in every if item]
    return {
        "model": model_args.model_name_or_path,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "labels": run.label_names,
        "aspects": run.aspects,
        "splits": splits,
        "steps_per_epoch": len(run.train_loader),
        "epochs": args.num_train_epochs,
        "batch_size": args.per_device_train_batch_size,
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "threads": torch.get_num_threads(),
        "precision": accelerator.mixed_precision if accelerator.mixed_precision != "no" else "fp32",
        "micro_batches": defaults.micro_batches,
        "packing": defaults.packing,
        "tf32": defaults.tf32,
        "run_dir": run.run_dir,
        "checkpoint_every": f", every {' and '.join(every)}" if every else "",
    }


def run_trackers(args: FineTuneArguments) -> list[GuardedTracker]:
    """The run's trackers (``--report_to``) for ``Accelerator(log_with=...)``; a resumed run continues the tracker
    runs its folder recorded (trackers.json). Started by :func:`hf_indosent.training.loop.train`."""
    run_dir = Path(args.output_dir)
    return build_trackers(
        args.report_to,
        project=args.tracker_project,
        run_name=run_name_of(run_dir, args.run_name),
        logging_dir=run_dir / "runs",
        recorded=recorded_trackers(run_dir) if args.resume_from_checkpoint is not None else None,
    )
