"""Task-adaptive pre-training (TAPT): masked-LM training on the task's own texts before fine-tuning.

A model pre-trained on other text (MiniLM on English, or IndoBERT on other Indonesian) first learns the words and
subword combinations of SmSA's reviews by predicting masked tokens of the training texts, labels unused; fine-tuning
then starts from there (Gururangan et al. 2020, "Don't Stop Pretraining"). ``hf-indosent adapt`` writes the adapted
model as a folder that ``train --model_name_or_path`` takes like any other.

The loss is computed on the masked positions only: the vocabulary projection, as large as the encoder for a small
model, runs on 15% of the tokens instead of all of them. Held-out masked-LM loss on the validation texts (fixed
masks, so epochs compare) is measured before and after every epoch and written to ``adapt.json``.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    get_linear_schedule_with_warmup,
)

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.core.files import check_output_folder, make_readable, staged_dir, write_json
from hf_indosent.core.folder_lock import holds_files
from hf_indosent.core.shell import command, rerun_command
from hf_indosent.core.stopping import Interrupted, StopRequests
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.loading import load_data
from hf_indosent.data.tokenization import LENGTH_COLUMN, tokenize_dataset
from hf_indosent.modeling.loading import (
    ADAPT_FILE,
    adaptation_stages,
    load_tokenizer,
    resolve_model_path,
    resolve_model_source,
)
from hf_indosent.training.arguments import AdaptArguments, ModelArguments
from hf_indosent.training.device_defaults import resolve_mixed_precision
from hf_indosent.training.reporting import final_scalars
from hf_indosent.training.run_folder import lock_run_dir
from hf_indosent.training.sampling import EpochBatchSampler
from hf_indosent.training.setup import check_max_seq_len
from hf_indosent.training.skeleton import any_process, progress_bar, train_steps
from hf_indosent.training.trackers import (
    GuardedTracker,
    build_trackers,
    finish_trackers,
    hyperparameters,
    run_name_of,
    start_trackers,
)
from hf_indosent.training.vocabulary import extend_vocabulary

logger = logging.getLogger(__name__)

EVAL_MASK_SEED = 1234
LOG_EVERY = 10
"""Steps between two masked-LM losses sent to the trackers (--report_to)."""
"""Seed of the validation texts' masks: the same tokens are masked before and after every epoch."""


class MaskedPositionsLoss(torch.nn.Module):
    """The masked-LM loss over the masked positions only, as one module (accelerate and DDP wrap its forward).

    BERT-family models (``cls`` head over ``base_model``, IndoBERT and MiniLM included) project only the masked
    positions onto the vocabulary; any other masked-LM model computes its usual full loss."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, labels: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        head = getattr(self.model, "cls", None)
        if head is None:
            return self.model(**inputs, labels=labels).loss
        hidden = self.model.base_model(**inputs).last_hidden_state
        selected = labels != -100
        return F.cross_entropy(head(hidden[selected]).float(), labels[selected])


def check_output(folder: Path, overwrite: bool) -> None:
    """Refuse to write into a folder holding anything but a former adapted model (that one only with overwrite)."""
    if not holds_files(folder):
        return
    if not (folder / ADAPT_FILE).is_file():
        raise FileExistsError(
            f"output_dir {str(folder)!r} is not empty and holds no adapted model ({ADAPT_FILE}): choose another "
            "--output_dir"
        )
    if not overwrite:
        raise FileExistsError(
            f"output_dir {str(folder)!r} already holds an adapted model: pass --overwrite_output_dir to replace it, "
            "or choose another --output_dir"
        )


def text_loader(
    dataset, collator, batch_size: int, *, shuffle: bool, seed: int
) -> tuple[DataLoader, EpochBatchSampler]:
    """Batches of texts of similar length (no labels are involved, so grouping costs nothing in quality)."""
    sampler = EpochBatchSampler(dataset[LENGTH_COLUMN], batch_size, shuffle=shuffle, group_by_length=True, seed=seed)
    columns = [name for name in dataset.column_names if name in ("input_ids", "attention_mask", "token_type_ids")]
    return DataLoader(dataset.select_columns(columns), batch_sampler=sampler, collate_fn=collator), sampler


def fixed_masks(loader: DataLoader, seed: int) -> list[dict[str, torch.Tensor]]:
    """The validation batches masked once, with their own RNG: every measurement sees the same masked tokens."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return list(loader)


@torch.no_grad()
def held_out_loss(accelerator: Accelerator, loss_module: torch.nn.Module, batches: list[dict]) -> float:
    """Mean masked-LM loss per masked token over ``batches`` (summed over every process)."""
    loss_module.eval()
    total = torch.zeros(2, device=accelerator.device)
    for batch in batches:
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        masked = (batch["labels"] != -100).sum()
        loss = loss_module(**batch)  # prepared: accelerate's autocast is already part of its forward
        total += torch.stack([loss.float() * masked, masked.float()])
    total = accelerator.reduce(total, reduction="sum")
    loss_module.train()
    return (total[0] / total[1].clamp(min=1)).item()


def save_adapted(
    accelerator: Accelerator, loss_module: torch.nn.Module, pooler: torch.nn.Module | None, tokenizer, folder, record
) -> None:
    """Write the adapted model, tokenizer and ``adapt.json`` atomically (a staged folder renamed into place).

    Masked-LM classes drop BERT's pooler; the source model's one is written back, so a sequence classifier trained
    from this folder starts from the same pooler as one trained from the source model."""
    unwrapped = accelerator.unwrap_model(loss_module).model
    state = dict(unwrapped.state_dict())
    if pooler is not None:
        prefix = unwrapped.base_model_prefix
        state.update({f"{prefix}.pooler.{name}": value for name, value in pooler.state_dict().items()})
    if accelerator.is_main_process:
        with staged_dir(folder) as staging:
            unwrapped.save_pretrained(staging, state_dict=state)
            tokenizer.save_pretrained(staging)
            write_json(staging / ADAPT_FILE, record)
            make_readable(staging)
    accelerator.wait_for_everyone()


def epochs_left(stopped: dict[str, Any], num_train_epochs: int) -> int:
    """Epochs still to run after a stop; the epoch it stopped in counts as not run unless its last step was done."""
    return num_train_epochs - stopped["epoch"] + (stopped["step"] < stopped["steps_in_epoch"])


def stopped_message(folder: Path, stopped: dict[str, Any], args: AdaptArguments) -> str:
    """Where an interrupted adaptation's work is, and the command that adapts it further for the epochs left."""
    continued = rerun_command(
        drop_flags=("--overwrite_output_dir",),
        drop_values=("--model_name_or_path", "--output_dir", "--num_train_epochs"),
        add=(
            *("--model_name_or_path", str(folder), "--output_dir", f"{folder}-continued"),
            *("--num_train_epochs", str(epochs_left(stopped, args.num_train_epochs))),
        ),
    )
    return (
        f"stopped at epoch {stopped['epoch']}, step {stopped['step']} of {stopped['steps_in_epoch']}: the model "
        f"adapted so far is saved in {folder} ({ADAPT_FILE} records where it stopped). Continue with: {continued}"
    )


def adapt_epoch(
    accelerator: Accelerator,
    training: tuple[torch.nn.Module, torch.optim.Optimizer, Any],
    loader: DataLoader,
    args: AdaptArguments,
    epoch: int,
    stops: StopRequests,
    progress: Any,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One epoch of masked-LM steps through the shared skeleton (:func:`~hf_indosent.training.skeleton.train_steps`,
    the scheduler stepped per step); returns the epoch's record and where a stop signal stopped it (or None)."""
    loss_module, optimizer, scheduler = training
    running = torch.zeros(2, device=accelerator.device)
    steps = 0
    stopped: dict[str, Any] | None = None

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = loss_module(**batch)
        accelerator.backward(loss)
        return loss.detach().float()

    def after_step(batch: dict[str, torch.Tensor], loss: torch.Tensor) -> bool:
        nonlocal running, steps, stopped
        steps += 1
        running += torch.stack([loss, torch.ones((), device=accelerator.device)])
        progress.update(1)
        progress.set_description(f"(Epoch {epoch}/{args.num_train_epochs}) MLM LOSS:{loss.item():.4f}")
        if steps % LOG_EVERY == 0:  # to --report_to's trackers
            step = (epoch - 1) * len(loader) + steps
            accelerator.log({"train/mlm_loss": loss.item(), "train/lr": scheduler.get_last_lr()[0]}, step=step)
        (stop,) = any_process(accelerator, stops.signum is not None)
        if stop:
            stopped = {"signal": signal.Signals(stops.signum or signal.SIGINT).name, "epoch": epoch}
            stopped |= {"step": steps, "steps_in_epoch": len(loader)}
        return stop

    train_steps(
        accelerator,
        loss_module,
        optimizer,
        loader,
        forward_backward=step,
        after_step=after_step,
        max_grad_norm=args.max_grad_norm,
        scheduler=scheduler,
    )
    running = accelerator.reduce(running, reduction="sum")
    return {"epoch": epoch, "train_mlm_loss": (running[0] / running[1]).item()}, stopped


def adapt(data_args: DataArguments, args: AdaptArguments, *, in_place: bool = False) -> dict[str, Any]:
    """Masked-LM training on the training split's texts; returns what ``adapt.json`` holds.

    The output folder is locked from its check to the written model
    (:func:`~hf_indosent.training.run_folder.lock_run_dir`):
    a second adaptation (or any other writer) into it is refused at once. ``in_place``: the model to adapt further is
    the output folder's own (a two-stage recipe continuing a stopped adaptation,
    :mod:`hf_indosent.training.stages`); it is read whole before the new one replaces the folder in one rename."""
    started = time.perf_counter()
    folder = Path(args.output_dir)
    inputs = {"--model_name_or_path": None if in_place else args.model_name_or_path, **data_args.input_paths}
    check_output_folder(folder, "--output_dir", inputs)
    resolve_model_source(args.model_name_or_path, "--model_name_or_path")
    check_max_seq_len(ModelArguments(model_name_or_path=args.model_name_or_path), data_args)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(args.mixed_precision), log_with=trackers(args) or None
    )
    with lock_run_dir(folder, accelerator, job="adaptation"):
        check_output(folder, args.overwrite_output_dir)
        try:
            return adapt_locked(accelerator, data_args, args, started)
        finally:
            finish_trackers(accelerator)


def trackers(args: AdaptArguments) -> list[GuardedTracker]:
    """``--report_to``'s trackers. Their local files (TensorBoard's events) go beside the output folder, in
    ``<output_dir>-runs``: the output folder itself is replaced whole when the adapted model is written."""
    folder = Path(args.output_dir).resolve()
    return build_trackers(
        args.report_to,
        project=args.tracker_project,
        run_name=run_name_of(folder, args.run_name),
        logging_dir=folder.with_name(f"{folder.name}-runs"),
    )


def adapt_locked(
    accelerator: Accelerator, data_args: DataArguments, args: AdaptArguments, started: float
) -> dict[str, Any]:
    """The adaptation itself, once its output folder is locked and checked."""
    folder = Path(args.output_dir)
    set_seed(args.seed)

    dataset = load_data(data_args, accelerator)
    tokenizer = load_tokenizer(args.model_name_or_path)
    if tokenizer.mask_token is None:
        raise ArgumentError(
            f"{args.model_name_or_path!r} has no mask token: masked-LM adaptation needs one (BERT-style)"
        )
    source = resolve_model_path(args.model_name_or_path)
    model = AutoModelForMaskedLM.from_pretrained(source)
    pooler = getattr(AutoModel.from_pretrained(source), "pooler", None)
    tokenizer, vocabulary = extend_vocabulary(model, tokenizer, dataset["train"]["text"], args.extend_vocab)
    with accelerator.main_process_first():
        tokenized = tokenize_dataset(dataset, tokenizer, data_args.max_seq_len)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability)
    batch_size = args.per_device_train_batch_size
    train_loader, sampler = text_loader(tokenized["train"], collator, batch_size, shuffle=True, seed=args.seed)
    eval_loader, _ = text_loader(tokenized["validation"], collator, 64, shuffle=False, seed=args.seed)
    eval_batches = fixed_masks(eval_loader, EVAL_MASK_SEED)
    eval_batches = eval_batches[accelerator.process_index :: accelerator.num_processes]

    loss_module = MaskedPositionsLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    total_steps = math.ceil(len(train_loader) / accelerator.num_processes) * args.num_train_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    loss_module, optimizer, train_loader, scheduler = accelerator.prepare(
        loss_module, optimizer, train_loader, scheduler
    )

    launch = {"mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes}
    start_trackers(accelerator, args.tracker_project, hyperparameters(data_args, args, launch=launch))
    epochs = [{"epoch": 0, "validation_mlm_loss": held_out_loss(accelerator, loss_module, eval_batches)}]
    accelerator.log(epochs[0], step=0)
    accelerator.print(f"validation masked-LM loss before adapting: {epochs[0]['validation_mlm_loss']:.4f}")
    progress = progress_bar(accelerator, total_steps)
    loss_module.train()
    stopped: dict[str, Any] | None = None
    with StopRequests() as stops:
        for epoch in range(1, args.num_train_epochs + 1):
            sampler.epoch = epoch - 1
            record, stopped = adapt_epoch(
                accelerator, (loss_module, optimizer, scheduler), train_loader, args, epoch, stops, progress
            )
            record["validation_mlm_loss"] = held_out_loss(accelerator, loss_module, eval_batches)
            epochs.append(record)
            step = (epoch - 1) * len(train_loader) + (stopped or {}).get("step", len(train_loader))
            accelerator.log(record, step=step)
            accelerator.print(
                f"epoch {epoch}{' (stopped part-way)' if stopped else ''}: train masked-LM loss "
                f"{record['train_mlm_loss']:.4f}, validation {record['validation_mlm_loss']:.4f}"
            )
            if stopped:
                break
    progress.close()
    if stopped and not epochs_left(stopped, args.num_train_epochs):
        stopped = None  # the signal came with the very last step: the adaptation is complete

    earlier = adaptation_stages(args.model_name_or_path)  # adapting an adapted folder further: keep its stages
    record = {
        "source_model": earlier[0]["source_model"] if earlier else args.model_name_or_path,
        "data": {"data_dir": data_args.data_dir, "train_file": data_args.train_file, "texts": len(tokenized["train"])},
        "settings": {key: value for key, value in vars(args).items() if key not in ("output_dir",)},
        "vocabulary": vocabulary,
        "mixed_precision": accelerator.mixed_precision,
        "num_processes": accelerator.num_processes,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if earlier:
        record |= {"continued_from": args.model_name_or_path, "earlier": earlier}
    if stopped:
        record["stopped"] = stopped
    save_adapted(accelerator, loss_module, pooler, tokenizer, folder, record)
    accelerator.log(final_scalars({**epochs[-1], "seconds": record["seconds"]}), step=step)
    if stopped:
        raise Interrupted(signal.Signals[stopped["signal"]], stopped_message(folder, stopped, args))
    accelerator.print(
        f"adapted model written to {folder} in {record['seconds']:.0f} s (validation masked-LM loss "
        f"{epochs[0]['validation_mlm_loss']:.4f} -> {epochs[-1]['validation_mlm_loss']:.4f}). Fine-tune it with: "
        f"{command('hf-indosent', 'train', '--model_name_or_path', folder)} --config <recipe>"
    )
    return record


def cli_run(data_args: DataArguments, args: AdaptArguments) -> int:
    """``hf-indosent adapt`` after argument parsing (errors become one line in :mod:`hf_indosent.cli`)."""
    adapt(data_args, args)
    return 0
