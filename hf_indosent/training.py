"""Fine-tuning with a custom Accelerate loop that keeps the IndoNLU tutorial's recipe.

Adam, StepLR stepped once per epoch, gradient clipping, evaluation every epoch, early stopping on validation macro F1
and the best model kept. Runs unchanged on a laptop CPU, one GPU or many GPUs:

    accelerate launch --config_file accelerate_config.yaml scripts/train.py --config configs/smsa-indobert-base-p1.yaml

The loop is split into setup (:func:`setup`), one epoch (:func:`train_one_epoch`), evaluation (:func:`evaluate`) and
saving (:func:`save_best`, checkpoints in :mod:`hf_indosent.checkpointing`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from evaluate import EvaluationModule
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from hf_indosent.arguments import ArgumentError, DataArguments, ModelArguments, TrainingArguments
from hf_indosent.checkpointing import (
    CHECKPOINTS,
    CheckpointClock,
    StopRequests,
    TrainState,
    load_checkpoint,
    make_readable,
    recover_dir,
    remove_staging,
    removed_on_error,
    replace_dir,
    resolve_checkpoint,
    save_checkpoint,
)
from hf_indosent.cli import Interrupted
from hf_indosent.data import NO_LABEL, load_smsa, require_labels
from hf_indosent.devices import usable_cpu_cores
from hf_indosent.hub import HubPushError, check_hub_access, push_to_hub
from hf_indosent.metrics import compute_metrics, confusion, load_metric, per_class_report
from hf_indosent.modeling import BEST_DIR, load_model, load_tokenizer, resolve_model_path, resolve_model_source
from hf_indosent.reporting import (
    final_summary,
    metrics_to_string,
    plot_confusion_matrix,
    plot_training_curves,
    start_summary,
    write_json,
    write_log,
)
from hf_indosent.run_folder import (
    arguments_record,
    check_free_space,
    check_output_dir,
    check_resume_arguments,
    lock_run_dir,
    replace_old_run,
    write_arguments,
)
from hf_indosent.sampling import EpochBatchSampler
from hf_indosent.tokenization import LENGTH_COLUMN, MicroBatchCollator, build_collator, tokenize_dataset

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


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
    args: TrainingArguments
    stops: StopRequests = field(default_factory=StopRequests)
    clock: CheckpointClock = field(default_factory=lambda: CheckpointClock(None))
    progress: tqdm | None = None  # one bar over all epochs, made by train()

    def say(self, text: str) -> None:
        """Print on the main process without breaking the progress bar."""
        if self.accelerator.is_main_process:
            (self.progress or tqdm).write(text)


# ----------------------------------------------------------------------------------------------------------------
# Setup


def warn_if_few_cpu_threads(accelerator: Accelerator) -> None:
    """On CPU, `accelerate launch` sets OMP_NUM_THREADS=1 unless told otherwise: one core of a laptop would train."""
    cores = usable_cpu_cores() // accelerator.num_processes
    threads = torch.get_num_threads()
    if accelerator.device.type == "cpu" and threads < cores and accelerator.is_local_main_process:
        logger.warning(
            "Training on the CPU with %d thread(s) per process although %d core(s) per process are free "
            "(OMP_NUM_THREADS=%s). `accelerate launch` uses 1 thread unless told otherwise: add "
            "--num_cpu_threads_per_process %d to the launch command (before the script) to use them all.",
            threads,
            cores,
            os.environ.get("OMP_NUM_THREADS", "unset"),
            cores,
        )


def load_data(data_args: DataArguments, accelerator: Accelerator) -> datasets.DatasetDict:
    with accelerator.main_process_first():
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


def make_loader(
    dataset: datasets.Dataset, batch_size: int, *, shuffle: bool, args: TrainingArguments, collator
) -> tuple[DataLoader, EpochBatchSampler]:
    sampler = EpochBatchSampler(
        dataset[LENGTH_COLUMN], batch_size, shuffle=shuffle, group_by_length=args.group_by_length, seed=args.seed
    )
    loader = DataLoader(
        dataset.remove_columns(LENGTH_COLUMN),  # the collator only sees model inputs and labels
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),  # never draw from the global RNG (exact resume)
    )
    return loader, sampler


def check_max_seq_len(model_args: ModelArguments, data_args: DataArguments) -> None:
    config = AutoConfig.from_pretrained(resolve_model_path(model_args.model_name_or_path), revision=model_args.revision)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and data_args.max_seq_len > limit:
        raise ArgumentError(
            f"max_seq_len={data_args.max_seq_len} exceeds what {model_args.model_name_or_path} accepts ({limit}); "
            f"pass --max_seq_len {limit} or less"
        )


def make_accelerator(args: TrainingArguments) -> Accelerator:
    return Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # StepLR steps once per epoch, by us
        log_with="tensorboard" if args.report_to == "tensorboard" else None,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "runs")
        ),
    )


def launch_facts(accelerator: Accelerator) -> dict[str, Any]:
    """How the run computes, recorded in args.json (a resumed run must match it)."""
    return {"num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision}


def setup(
    accelerator: Accelerator, model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments
) -> tuple[Run, TrainState]:
    """Build everything the loop needs. Every input is checked before an old run in output_dir is replaced."""
    run_dir = Path(args.output_dir)
    resuming = args.resume_from_checkpoint is not None
    check_output_dir(run_dir, args.overwrite_output_dir, resuming)
    checkpoint = resolve_checkpoint(run_dir, args.resume_from_checkpoint) if resuming else None
    record = arguments_record(model_args, data_args, args, launch=launch_facts(accelerator))
    changed = check_resume_arguments(run_dir, record) if resuming else {}
    resolve_model_source(model_args.model_name_or_path, "--model_name_or_path")
    check_max_seq_len(model_args, data_args)
    if args.push_to_hub:
        check_hub_access(args.hub_model_id)  # now, not after hours of training
    set_seed(args.seed)

    dataset = load_data(data_args, accelerator)
    label_names = dataset["train"].features["label"].names
    tokenizer = load_tokenizer(model_args.model_name_or_path, revision=model_args.revision)
    model = load_model(
        model_args.model_name_or_path,
        label_names,
        revision=model_args.revision,
        attn_implementation=model_args.attn_implementation,
    )
    weight_bytes = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    check_free_space(run_dir, weight_bytes, args.save_total_limit, args.overwrite_output_dir and not resuming)
    if not resuming:
        replace_old_run(run_dir, accelerator)  # only now: everything above could still refuse the run

    with accelerator.main_process_first():
        tokenized = tokenize_dataset(dataset, tokenizer, data_args.max_seq_len)
    if args.torch_compile:
        model = torch.compile(model, dynamic=True)

    collator = build_collator(tokenizer, mixed_precision=accelerator.mixed_precision != "no")
    train_loader, train_sampler = make_loader(
        tokenized["train"],
        args.per_device_train_batch_size,
        shuffle=True,
        args=args,
        collator=MicroBatchCollator(collator, args.micro_batches),
    )
    eval_splits = ["validation"]
    if "test" in tokenized and NO_LABEL not in dataset["test"]["label"]:
        eval_splits.append("test")
    eval_loaders = {
        split: make_loader(
            tokenized[split], args.per_device_eval_batch_size, shuffle=False, args=args, collator=collator
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
    if args.report_to != "none":
        accelerator.init_trackers("hf_indosent", config=_flat_config(model_args, data_args, args))
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
    )
    if accelerator.is_main_process:
        print(start_summary(run_facts(run, model_args, dataset, weight_bytes)), flush=True)
    return run, state


def run_facts(run: Run, model_args: ModelArguments, dataset: datasets.DatasetDict, weight_bytes: int) -> dict:
    """The start summary's figures (see :func:`hf_indosent.reporting.start_summary`)."""
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
        "splits": splits,
        "steps_per_epoch": len(run.train_loader),
        "epochs": args.num_train_epochs,
        "batch_size": args.per_device_train_batch_size,
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "threads": torch.get_num_threads(),
        "precision": accelerator.mixed_precision if accelerator.mixed_precision != "no" else "fp32",
        "run_dir": run.run_dir,
        "checkpoint_every": f", every {' and '.join(every)}" if every else "",
    }


def _flat_config(*groups: Any) -> dict[str, Any]:
    flat = {}
    for group in groups:
        for key, value in dataclasses.asdict(group).items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


# ----------------------------------------------------------------------------------------------------------------
# One epoch


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


class EpochTally:
    """The epoch's running sums, kept on the device so that steps never wait on the host.

    They are folded into the checkpointed :class:`TrainState` at checkpoints and at the epoch end, so a run resumed
    mid-epoch reports the same epoch figures as an uninterrupted one.
    """

    def __init__(self, device: torch.device, global_step: int) -> None:
        def zero(dtype: torch.dtype = torch.int64, value: int = 0) -> torch.Tensor:
            return torch.full((), value, device=device, dtype=dtype)

        self.loss, self.batches, self.tokens, self.positions = zero(torch.float64), zero(), zero(), zero()
        self.step, self.first_bad_step = zero(value=global_step), zero(value=-1)
        self.predictions: list[torch.Tensor] = []
        self.references: list[torch.Tensor] = []
        self.started = time.perf_counter()

    def add(
        self, loss: torch.Tensor, preds: torch.Tensor, refs: torch.Tensor, attention_masks: list[torch.Tensor]
    ) -> None:
        self.loss += loss
        self.batches += 1
        for mask in attention_masks:
            self.tokens += mask.sum()
            self.positions += mask.numel()
        self.predictions.append(preds)
        self.references.append(refs)
        bad = (self.first_bad_step < 0) & ~torch.isfinite(loss)
        self.first_bad_step = torch.where(bad, self.step, self.first_bad_step)

    def running_loss(self, state: TrainState) -> float:
        """Mean loss of the epoch so far; raises :class:`NonFiniteLossError` if any step's loss was NaN/inf."""
        bad_step = int(self.first_bad_step.item())
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"training loss became NaN/inf at optimizer step {bad_step + 1} (epoch {state.epoch + 1}). "
                "Stopped before saving anything from that point: best/ holds the last good best model and "
                "checkpoints/ the last good state. Lower --learning_rate or check the data, then resume with "
                "--resume_from_checkpoint latest."
            )
        sums = state.epoch_sums
        return (sums["loss"] + self.loss.item()) / max(sums["batches"] + int(self.batches.item()), 1)

    def fold_into(self, state: TrainState, accelerator: Accelerator) -> None:
        """Add the device sums to ``state`` (every process calls this at the same point) and start from zero."""
        self.running_loss(state)
        seconds = time.perf_counter() - self.started
        sums = state.epoch_sums
        sums["loss"] += self.loss.item()
        sums["batches"] += int(self.batches.item())
        sums["tokens"] += int(accelerator.reduce(self.tokens, "sum").item())  # tokens of every process
        sums["positions"] += int(accelerator.reduce(self.positions, "sum").item())
        sums["seconds"] += seconds
        state.train_seconds += seconds
        if self.predictions:
            sums["predictions"] += torch.cat(self.predictions).tolist()
            sums["references"] += torch.cat(self.references).tolist()
        for tensor in (self.loss, self.batches, self.tokens, self.positions):
            tensor.zero_()
        self.predictions, self.references = [], []
        self.started = time.perf_counter()


def forward_backward(
    accelerator: Accelerator, model: torch.nn.Module, batch: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward every micro-batch of ``batch`` (see :class:`MicroBatchCollator`).

    Each part's mean loss is weighted by its share of the batch, so the summed gradients equal those of the whole
    batch. Processes synchronise gradients only on the last part. Returns the batch's mean loss and its logits in
    batch order (both detached).
    """
    parts = batch["micro_batches"]
    size = len(batch["labels"])
    loss = torch.zeros((), device=accelerator.device)
    logits = []
    for index, part in enumerate(parts):
        with nullcontext() if index == len(parts) - 1 else accelerator.no_sync(model):
            outputs = model(**part)
            part_loss = outputs.loss * (len(part["labels"]) / size)
            accelerator.backward(part_loss)
        loss += part_loss.detach().float()
        logits.append(outputs.logits.detach())
    return loss, torch.cat(logits)[batch["restore"]]


def checkpoint_wanted(run: Run, state: TrainState) -> tuple[bool, bool]:
    """(stop now, checkpoint due) after an optimizer step, the same on every process.

    A stop is asked by SIGINT/SIGTERM (:class:`StopRequests`); a checkpoint is due every ``checkpointing_steps`` and
    after ``checkpointing_minutes``. With several processes the flags are combined (any process's signal or clock
    counts) every ``logging_steps``, so steps are not synchronised with the host more often than the log is.
    """
    args, accelerator = run.args, run.accelerator
    stop = run.stops.signum is not None
    due = bool(args.checkpointing_steps) and state.global_step % args.checkpointing_steps == 0
    if accelerator.num_processes == 1:
        return stop, due or run.clock.due()
    if state.global_step % args.logging_steps:
        return False, due
    flags = torch.tensor([float(stop), float(run.clock.due())], device=accelerator.device)
    stop_any, clock_any = (accelerator.reduce(flags, "sum") > 0).tolist()
    return stop_any, due or clock_any


def checkpoint(run: Run, state: TrainState) -> Path:
    path = save_checkpoint(run.accelerator, run.run_dir, state, run.args.save_total_limit)
    run.clock.reset()
    return path


def stopped_message(state: TrainState, path: Path) -> str:
    """What an interrupted run says: where its work is and the exact command that continues it."""
    return (
        f"stopped: checkpoint saved at epoch {state.epoch + 1}, step {state.global_step} ({path}). "
        f"Continue with: {resume_command()}"
    )


def resume_command(argv: list[str] | None = None) -> str:
    """This run's own command line with ``--resume_from_checkpoint latest`` (and without overwriting)."""
    argv = list(sys.argv if argv is None else argv)
    script, rest = argv[0], argv[1:]
    kept: list[str] = []
    skip = False
    for index, arg in enumerate(rest):
        if skip:
            skip = False
            continue
        if arg in ("--overwrite_output_dir", "--resume_from_checkpoint"):
            following = rest[index + 1] if index + 1 < len(rest) else ""
            skip = arg == "--resume_from_checkpoint" or following.lower() in ("true", "false", "yes", "no", "1", "0")
            continue
        kept.append(arg)
    if Path(script).name == "hf-indosent":
        prefix = ["hf-indosent"]
    elif "ACCELERATE_MIXED_PRECISION" in os.environ:  # set by `accelerate launch`
        prefix = ["accelerate", "launch", script]
    else:
        prefix = ["python", script]
    return shlex.join([*prefix, *kept, "--resume_from_checkpoint", "latest"])


def train_one_epoch(run: Run, state: TrainState) -> dict[str, float]:
    """Train over the epoch's remaining batches; returns the epoch's loss, train metrics and throughput counts."""
    accelerator, model, optimizer, args = run.accelerator, run.model, run.optimizer, run.args
    model.train()
    run.train_sampler.epoch = state.epoch
    loader = run.train_loader
    if state.step_in_epoch:
        loader = accelerator.skip_first_batches(loader, state.step_in_epoch)
    tally = EpochTally(accelerator.device, state.global_step)
    progress = run.progress or tqdm(disable=True)
    epochs = f"{state.epoch + 1}/{args.num_train_epochs}"
    progress.set_description(f"(Epoch {epochs})")
    for batch in loader:
        with accelerator.accumulate(model):
            loss, logits = forward_backward(accelerator, model, batch)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        step_loss = accelerator.gather(loss.reshape(1)).mean()
        preds, refs = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        tally.add(step_loss, preds, refs, [part["attention_mask"] for part in batch["micro_batches"]])
        state.step_in_epoch += 1
        state.train_samples += len(refs)
        progress.update(1)
        if not accelerator.sync_gradients:
            continue
        state.global_step += 1
        tally.step += 1
        if state.global_step % args.logging_steps == 0:
            running, lr = tally.running_loss(state), current_lr(optimizer)
            progress.set_description(f"(Epoch {epochs}) TRAIN LOSS:{running:.4f} LR:{lr:.8f}")
            if args.report_to != "none":
                accelerator.log({"train/loss": running, "train/lr": lr}, step=state.global_step)
        stop, due = checkpoint_wanted(run, state)
        if stop or (due and state.step_in_epoch < len(run.train_loader)):  # the epoch end saves its own
            tally.fold_into(state, accelerator)
            path = checkpoint(run, state)
            tally.started = time.perf_counter()  # saving is not training time
            if stop:
                raise Interrupted(run.stops.signum or signal.SIGINT, stopped_message(state, path))
    tally.fold_into(state, accelerator)
    sums = state.epoch_sums
    return {
        "loss": sums["loss"] / max(sums["batches"], 1),
        **compute_metrics(sums["predictions"], sums["references"], run.metric),
        "seconds": sums["seconds"],
        "tokens": sums["tokens"],
        "padding_fraction": 1 - sums["tokens"] / max(sums["positions"], 1),
    }


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(run: Run, loader: DataLoader, desc: str = "Evaluating") -> tuple[dict[str, float], list[int], list[int]]:
    """Loss and the four macro metrics over every example of ``loader`` exactly once, on all processes."""
    accelerator, model = run.accelerator, run.model
    model.eval()
    predictions, references, losses = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        labels = batch.pop("labels")
        logits = model(**batch).logits
        loss = F.cross_entropy(logits.float(), labels, reduction="none")
        preds, refs, loss = accelerator.gather_for_metrics((logits.argmax(-1), labels, loss))
        predictions.append(preds)
        references.append(refs)
        losses.append(loss)
    preds = torch.cat(predictions).tolist()
    refs = torch.cat(references).tolist()
    metrics = compute_metrics(preds, refs, run.metric)
    metrics["loss"] = torch.cat(losses).mean().item()
    metrics["num_examples"] = len(refs)
    return metrics, preds, refs


# ----------------------------------------------------------------------------------------------------------------
# Saving


def save_best(run: Run) -> None:
    """Write the unwrapped model (safetensors) and tokenizer to best/ atomically: never a half-written folder."""
    accelerator = run.accelerator
    target = run.run_dir / BEST_DIR
    staging = run.run_dir / f".{BEST_DIR}.tmp"
    state_dict = accelerator.get_state_dict(run.model)  # every process takes part (sharded setups)
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        model: PreTrainedModel = accelerator.unwrap_model(run.model)
        with removed_on_error(staging):
            model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
            run.tokenizer.save_pretrained(staging)
            make_readable(staging)
        replace_dir(staging, target)
    accelerator.wait_for_everyone()


def load_best_weights(run: Run) -> None:
    """Put the best model's weights back into the (wrapped) model, e.g. to score the test split.

    Loaded through ``from_pretrained`` (which restores tied weights) and copied with ``strict=True``: a missing,
    unexpected or differently shaped tensor is an error, never a silently half-loaded model.
    """
    model = run.accelerator.unwrap_model(run.model)
    best = type(model).from_pretrained(run.run_dir / BEST_DIR, attn_implementation=model.config._attn_implementation)
    model.load_state_dict(best.state_dict(), strict=True)


def end_of_epoch(run: Run, state: TrainState, train_metrics: dict[str, float], lr: float, started: float) -> bool:
    """Evaluate, update early stopping, save best/log/checkpoint. Returns True when training should stop.

    ``started`` is when the epoch began (``time.perf_counter()``), for the epoch's wall time in log.jsonl.
    """
    accelerator, args = run.accelerator, run.args
    epoch = state.epoch + 1
    run.say(f"(Epoch {epoch}) TRAIN LOSS:{train_metrics['loss']:.4f} {metrics_to_string(train_metrics)} LR:{lr:.8f}")
    validation_started = time.perf_counter()
    validation, preds, refs = evaluate(run, run.eval_loaders["validation"], desc=f"(Epoch {epoch}) validation")
    validation_seconds = time.perf_counter() - validation_started
    run.say(f"(Epoch {epoch}) VALID LOSS:{validation['loss']:.4f} {metrics_to_string(validation)}")

    state.epoch = epoch
    state.step_in_epoch = 0
    state.epoch_sums = TrainState().epoch_sums
    score = validation[args.metric_for_best_model]
    improved = score > state.best_metric
    if improved:
        state.best_metric, state.best_epoch, state.epochs_without_improvement = score, epoch, 0
        state.best_validation = {
            **validation,
            "per_class": per_class_report(preds, refs, run.label_names),
            "confusion": confusion(preds, refs, run.label_names),
        }
        save_best(run)
    else:
        state.epochs_without_improvement += 1
        run.say(f"(Epoch {epoch}) no improvement for {state.epochs_without_improvement} epoch(s)")
    state.history.append(
        {
            "epoch": epoch,
            "global_step": state.global_step,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,  # training, validation and best-model saving
            "validation_seconds": validation_seconds,
            "train": train_metrics,
            "validation": validation,
            "is_best": improved,
        }
    )
    if args.report_to != "none":
        accelerator.log({f"validation/{key}": value for key, value in validation.items()}, step=state.global_step)
    if accelerator.is_main_process:
        write_log(run.run_dir / "log.jsonl", state.history)
        plot_training_curves(state.history, run.run_dir / "training_curves.png")
    checkpoint(run, state)
    return state.epochs_without_improvement >= args.early_stopping_patience


def finish(run: Run, state: TrainState, stopped_early: bool) -> dict[str, Any]:
    """metrics.json (best epoch, its validation metrics, test metrics when labelled) and the confusion matrix."""
    accelerator = run.accelerator
    best = {key: value for key, value in state.best_validation.items() if key not in ("per_class", "confusion")}
    results: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "metric_for_best_model": run.args.metric_for_best_model,
        "epochs_completed": state.epoch,
        "stopped_early": stopped_early,
        "label_names": run.label_names,
        "validation": best,
        "validation_per_class": state.best_validation.get("per_class"),
        "validation_confusion": state.best_validation.get("confusion"),
        "train_runtime_s": state.train_seconds,
        "train_samples_per_second": state.train_samples / state.train_seconds if state.train_seconds else None,
    }
    if "test" in run.eval_loaders:
        load_best_weights(run)
        test, _, _ = evaluate(run, run.eval_loaders["test"], desc="test (best model)")
        results["test"] = test
        run.say(f"TEST (best model) LOSS:{test['loss']:.4f} {metrics_to_string(test)}")
    if accelerator.is_main_process:
        write_json(run.run_dir / "metrics.json", results)
        plot_confusion_matrix(
            state.best_validation["confusion"],
            run.run_dir / "confusion_matrix.png",
            title=f"Validation, best model (epoch {state.best_epoch})",
        )
    accelerator.wait_for_everyone()
    return results


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def train(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> dict[str, Any]:
    """Run (or resume) a training run; returns what metrics.json holds."""
    started = time.perf_counter()
    accelerator = make_accelerator(args)
    warn_if_few_cpu_threads(accelerator)
    lock = lock_run_dir(Path(args.output_dir), accelerator)  # a second run into this folder stops here, at once
    try:
        run, state = setup(accelerator, model_args, data_args, args)
        with (
            StopRequests() as run.stops,
            tqdm(
                total=len(run.train_loader) * args.num_train_epochs,
                initial=min(state.epoch * len(run.train_loader) + state.step_in_epoch, 10**12),
                unit="step",
                disable=not accelerator.is_local_main_process,
            ) as run.progress,
        ):
            run.clock = CheckpointClock(args.checkpointing_minutes)
            results = fit(run, state)
    finally:
        accelerator.end_training()
        lock.release()
    if accelerator.is_main_process:
        hint = f" --data_dir {data_args.data_dir}" if data_args.data_dir else ""
        print(final_summary(run.run_dir, results, (time.perf_counter() - started) / 60, hint), flush=True)
    if args.push_to_hub and accelerator.is_main_process:
        push_best(run)
    return results


def fit(run: Run, state: TrainState) -> dict[str, Any]:
    """The epochs: train, step the scheduler, evaluate and save, until the last epoch or early stopping."""
    args = run.args
    stopped_early = state.epochs_without_improvement >= args.early_stopping_patience
    while state.epoch < args.num_train_epochs and not stopped_early:
        started = time.perf_counter()
        lr = current_lr(run.optimizer)
        train_metrics = train_one_epoch(run, state)
        run.scheduler.step()  # StepLR decays once per epoch, after training, as in the tutorial
        stopped_early = end_of_epoch(run, state, train_metrics, lr, started)
        if run.stops.signum is not None:  # a signal during validation: the epoch's checkpoint is saved
            raise Interrupted(run.stops.signum, stopped_message(state, run.run_dir / CHECKPOINTS))
    if stopped_early:
        run.say(
            f"Early stopping: no better validation {args.metric_for_best_model} for {args.early_stopping_patience} "
            f"epoch(s); best epoch {state.best_epoch}"
        )
    return finish(run, state, stopped_early)


def push_best(run: Run) -> None:
    args = run.args
    try:
        url = push_to_hub(run.run_dir / BEST_DIR, args.hub_model_id, private=args.hub_private, run_dir=run.run_dir)
    except HubPushError as err:
        raise HubPushError(
            f"training finished (best model in {run.run_dir / BEST_DIR}) but the upload failed: {err}. "
            f"Retry with: hf-indosent push --model {run.run_dir} --repo-id {args.hub_model_id}"
        ) from None
    print(f"Pushed best model to {url}")


def cli_run(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> int:
    """``hf-indosent train`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    train(model_args, data_args, args)
    return 0
