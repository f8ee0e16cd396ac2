"""Fine-tuning with a custom Accelerate loop that keeps the IndoNLU tutorial's recipe.

Adam, StepLR stepped once per epoch, gradient clipping, evaluation every epoch, early stopping on validation macro F1
and the best model kept. Runs unchanged on a laptop CPU, one GPU or many GPUs:

    accelerate launch --config_file accelerate_config.yaml scripts/train.py --config configs/smsa-indobert-base-p1.yaml

The loop is split into setup (:func:`hf_indosent.training.setup.setup`), one epoch (:func:`train_one_epoch`, its
steps in :mod:`hf_indosent.training.step`), evaluation (:func:`evaluate`) and saving (:func:`save_best`, checkpoints in
:mod:`hf_indosent.training.checkpoints`).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hf_indosent.core.files import make_readable, staged_dir, write_json
from hf_indosent.core.shell import command
from hf_indosent.core.stopping import Interrupted, StopRequests
from hf_indosent.data.arguments import DataArguments
from hf_indosent.metrics.report import metrics_to_string, plot_confusion_matrix
from hf_indosent.metrics.scores import (
    compute_metrics,
    confusion,
    pairs_from_confusion,
    per_aspect_report,
    per_class_report,
)
from hf_indosent.modeling.aspects import predicted_ids
from hf_indosent.modeling.folders import CHECKPOINTS
from hf_indosent.modeling.loading import BEST_DIR, load_classifier
from hf_indosent.sharing.hub import HubPushError, push_to_hub
from hf_indosent.training.arguments import FineTuneArguments, ModelArguments
from hf_indosent.training.calibration import apply_temperature, calibration_report, earlier_calibration
from hf_indosent.training.checkpoints import CheckpointClock, TrainState, save_checkpoint
from hf_indosent.training.device_defaults import warn_if_few_cpu_threads
from hf_indosent.training.evaluation import evaluate
from hf_indosent.training.reporting import epoch_scalars, final_scalars, final_summary, plot_training_curves, write_log
from hf_indosent.training.run_folder import lock_run_dir, recorded_launch, stopped_message
from hf_indosent.training.setup import Run, make_accelerator, setup
from hf_indosent.training.skeleton import any_process, progress_bar, train_steps
from hf_indosent.training.stages import adapt_first
from hf_indosent.training.step import EpochTally, computed_masks, current_lr, forward_backward
from hf_indosent.training.trackers import hyperparameters, start_trackers

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
"""Called after each epoch with (epochs completed, that epoch's validation metrics)."""


# ----------------------------------------------------------------------------------------------------------------
# One epoch


def train_one_epoch(run: Run, state: TrainState) -> dict[str, float]:
    """Train over the epoch's remaining batches; returns the epoch's loss, train metrics and throughput counts."""
    accelerator, model, optimizer, args = run.accelerator, run.model, run.optimizer, run.args
    model.train()
    run.train_sampler.epoch = state.epoch
    loader = run.train_loader
    if state.step_in_epoch:
        loader = accelerator.skip_first_batches(loader, state.step_in_epoch)
    tally = EpochTally(accelerator.device, state.global_step, len(run.label_names))
    progress = run.progress or tqdm(disable=True)
    epochs = f"{state.epoch + 1}/{args.num_train_epochs}"
    progress.set_description(f"(Epoch {epochs})")

    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_backward(
            accelerator, model, batch, run.class_weights, args.label_smoothing, args.focal_gamma, run.num_aspects
        )

    def after_step(batch: dict[str, Any], result: tuple[torch.Tensor, torch.Tensor]) -> bool:
        loss, logits = result
        step_loss = accelerator.gather(loss.reshape(1)).mean()
        preds = predicted_ids(logits, run.num_aspects)
        preds, refs = accelerator.gather_for_metrics((preds, batch["labels"]))
        tally.add(step_loss, preds.reshape(-1), refs.reshape(-1), computed_masks(batch))  # aspects: every pair
        state.step_in_epoch += 1
        state.train_samples += len(refs)
        progress.update(1)
        if not accelerator.sync_gradients:
            return False
        state.global_step += 1
        tally.step += 1
        if state.global_step % args.logging_steps == 0:
            running, lr = tally.running_loss(state), current_lr(optimizer)
            progress.set_description(f"(Epoch {epochs}) TRAIN LOSS:{running:.4f} LR:{lr:.8f}")
            accelerator.log({"train/loss": running, "train/lr": lr}, step=state.global_step)  # to --report_to
        stop, due = checkpoint_wanted(run, state)
        if stop or (due and state.step_in_epoch < len(run.train_loader)):  # the epoch end saves its own
            tally.fold_into(state, accelerator)
            path = checkpoint(run, state)
            tally.started = time.perf_counter()  # saving is not training time
            if stop:
                raise Interrupted(run.stops.signum or signal.SIGINT, stopped_message(state, path))
        return False

    train_steps(
        accelerator,
        model,
        optimizer,
        loader,
        forward_backward=step,
        after_step=after_step,
        max_grad_norm=args.max_grad_norm,
    )
    tally.fold_into(state, accelerator)
    sums = state.epoch_sums
    return {
        "loss": sums["loss"] / max(sums["batches"], 1),
        **compute_metrics(*pairs_from_confusion(sums["confusion"]), run.metric),
        "seconds": sums["seconds"],
        "tokens": sums["tokens"],
        "padding_fraction": 1 - sums["tokens"] / max(sums["positions"], 1),
    }


# ----------------------------------------------------------------------------------------------------------------
# Calibration


def calibrate_best(run: Run) -> dict[str, Any]:
    """Temperature scaling fitted on validation and baked into best/'s classifier layer (labels never change).

    Plain ``pipeline()`` on the saved model then returns calibrated probabilities; the report (T, NLL and expected
    calibration error before and after) goes to metrics.json and the model card.
    """
    load_best_weights(run)
    earlier = earlier_calibration(run.run_dir)
    if earlier is not None:  # a resumed run whose best/ an earlier finish already calibrated: never scale twice
        return earlier
    scored = evaluate(run, run.eval_loaders["validation"], desc="calibration (validation)")
    report = calibration_report(scored.logits.numpy(), scored.references)
    apply_temperature(run.accelerator.unwrap_model(run.model), report["temperature"])  # its config.num_labels
    save_best(run)
    run.say(
        f"Calibrated best/: temperature {report['temperature']:.3f}, validation ECE {report['ece_before']:.4f} -> "
        f"{report['ece_after']:.4f}"
    )
    return report


# ----------------------------------------------------------------------------------------------------------------
# Saving


def save_best(run: Run) -> None:
    """Write the unwrapped model (safetensors) and tokenizer to best/ atomically: never a half-written folder."""
    accelerator = run.accelerator
    state_dict = accelerator.get_state_dict(run.model)  # every process takes part (sharded setups)
    if accelerator.is_main_process:
        model: PreTrainedModel = accelerator.unwrap_model(run.model)
        with staged_dir(run.run_dir / BEST_DIR) as staging:
            model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
            run.tokenizer.save_pretrained(staging)
            make_readable(staging)
    accelerator.wait_for_everyone()


def load_best_weights(run: Run) -> None:
    """Put the best model's weights back into the (wrapped) model, e.g. to score the test split.

    Loaded through :func:`~hf_indosent.modeling.loading.load_classifier` (which restores tied weights and refuses
    weights
    that do not match best/'s config) and copied with ``strict=True``: a missing, unexpected or differently shaped
    tensor is an error, never a silently half-loaded model.
    """
    model = run.accelerator.unwrap_model(run.model)
    best = load_classifier(run.run_dir / BEST_DIR, attn_implementation=model.config._attn_implementation)
    model.load_state_dict(best.state_dict(), strict=True)


def end_of_epoch(run: Run, state: TrainState, train_metrics: dict[str, float], lr: float, started: float) -> bool:
    """Evaluate, update early stopping, save best/log/checkpoint. Returns True when training should stop.

    ``started`` is when the epoch began (``time.perf_counter()``), for the epoch's wall time in log.jsonl.
    """
    accelerator, args = run.accelerator, run.args
    epoch = state.epoch + 1
    run.say(f"(Epoch {epoch}) TRAIN LOSS:{train_metrics['loss']:.4f} {metrics_to_string(train_metrics)} LR:{lr:.8f}")
    validation_started = time.perf_counter()
    scored = evaluate(run, run.eval_loaders["validation"], desc=f"(Epoch {epoch}) validation")
    validation, preds, refs = scored.metrics, scored.predictions, scored.references
    validation_seconds = time.perf_counter() - validation_started
    run.say(f"(Epoch {epoch}) VALID LOSS:{validation['loss']:.4f} {metrics_to_string(validation)}")

    state.epoch = epoch
    state.step_in_epoch = 0
    state.epoch_sums = TrainState().epoch_sums
    score = validation[args.metric_for_best_model]
    per_class = per_class_report(preds, refs, run.label_names)  # in log.jsonl every epoch, metrics.json for the best
    per_aspect = per_aspect_report(preds, refs, run.aspects, run.label_names, run.metric) if run.aspects else None
    improved = score > state.best_metric
    if improved:
        state.best_metric, state.best_epoch, state.epochs_without_improvement = score, epoch, 0
        state.best_validation = {
            **validation,
            "per_class": per_class,
            "confusion": confusion(preds, refs, run.label_names),
            **({"per_aspect": per_aspect} if per_aspect else {}),
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
            "validation_per_class": per_class,
            **(
                {"validation_per_aspect_f1": {name: row["f1"] for name, row in per_aspect.items()}}
                if per_aspect
                else {}
            ),
            "is_best": improved,
        }
    )
    accelerator.log(epoch_scalars(state.history[-1]), step=state.global_step)
    if accelerator.is_main_process:
        write_log(run.run_dir / "log.jsonl", state.history)
        plot_training_curves(state.history, run.run_dir / "training_curves.png")
    checkpoint(run, state)
    return state.epochs_without_improvement >= args.early_stopping_patience


def finish(run: Run, state: TrainState, stopped_early: bool) -> dict[str, Any]:
    """metrics.json (best epoch, its validation metrics, calibration, test metrics when labelled), confusion matrix."""
    accelerator = run.accelerator
    details = ("per_class", "confusion", "per_aspect")
    best = {key: value for key, value in state.best_validation.items() if key not in details}
    results: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "metric_for_best_model": run.args.metric_for_best_model,
        "epochs_completed": state.epoch,
        "stopped_early": stopped_early,
        "label_names": run.label_names,
        "validation": best,
        "validation_per_class": state.best_validation.get("per_class"),
        "validation_confusion": state.best_validation.get("confusion"),
        **(
            {"aspects": list(run.aspects), "validation_per_aspect": state.best_validation.get("per_aspect")}
            if run.aspects
            else {}
        ),
        "train_runtime_s": state.train_seconds,
        "train_samples_per_second": state.train_samples / state.train_seconds if state.train_seconds else None,
    }
    if run.args.calibrate:
        results["calibration"] = calibrate_best(run)  # the model now holds best/'s (calibrated) weights
    if "test" in run.eval_loaders:
        if not run.args.calibrate:
            load_best_weights(run)
        test = evaluate(run, run.eval_loaders["test"], desc="test (best model)").metrics
        results["test"] = test
        run.say(f"TEST (best model) LOSS:{test['loss']:.4f} {metrics_to_string(test)}")
    if accelerator.is_main_process:
        write_json(run.run_dir / "metrics.json", results)
        plot_confusion_matrix(
            state.best_validation["confusion"],
            run.run_dir / "confusion_matrix.png",
            title=f"Validation, best model (epoch {state.best_epoch})",
        )
    accelerator.log(final_scalars(results), step=state.global_step)
    accelerator.wait_for_everyone()
    return results


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: FineTuneArguments,
    after_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Run (or resume) a training run; returns what metrics.json holds.

    ``after_epoch(epoch, validation_metrics)`` is called after each epoch's validation and checkpoint (a
    hyperparameter search's pruner); an exception it raises ends the run there, trackers and lock released."""
    started = time.perf_counter()
    args = adapt_first(model_args, args)  # stage 1 of a two-stage recipe (adapt_config), else nothing
    accelerator = make_accelerator(args)
    warn_if_few_cpu_threads(accelerator)
    lock = lock_run_dir(Path(args.output_dir), accelerator)  # a second run into this folder stops here, at once
    try:
        run, state = setup(accelerator, model_args, data_args, args)
        start_trackers(accelerator, args.tracker_project, run_hyperparameters(run, model_args, data_args), run.run_dir)
        with (
            StopRequests() as run.stops,
            progress_bar(
                accelerator,
                len(run.train_loader) * args.num_train_epochs,
                state.epoch * len(run.train_loader) + state.step_in_epoch,
            ) as run.progress,
        ):
            run.clock = CheckpointClock(args.checkpointing_minutes)
            results = fit(run, state, after_epoch)
    finally:
        accelerator.end_training()
        lock.release()
    if accelerator.is_main_process:
        print(final_summary(run.run_dir, results, (time.perf_counter() - started) / 60, data_args.data_dir), flush=True)
    if args.push_to_hub and accelerator.is_main_process:
        push_best(run)
    return results


def fit(run: Run, state: TrainState, after_epoch: EpochCallback | None = None) -> dict[str, Any]:
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
        if after_epoch is not None:
            after_epoch(state.epoch, state.history[-1]["validation"])
    if stopped_early:
        run.say(
            f"Early stopping: no better validation {args.metric_for_best_model} for {args.early_stopping_patience} "
            f"epoch(s); best epoch {state.best_epoch}"
        )
    return finish(run, state, stopped_early)


def run_hyperparameters(run: Run, model_args: ModelArguments, data_args: DataArguments) -> dict[str, Any]:
    """What the trackers get as hyperparameters: the resolved recipe and the launch facts args.json records."""
    launch = recorded_launch(run.run_dir) if run.accelerator.is_main_process else {}
    return hyperparameters(model_args, data_args, run.args, launch=launch)


def push_best(run: Run) -> None:
    args = run.args
    try:
        url = push_to_hub(run.run_dir / BEST_DIR, args.hub_model_id, private=args.hub_private, run_dir=run.run_dir)
    except HubPushError as err:
        raise HubPushError(
            f"training finished (best model in {run.run_dir / BEST_DIR}) but the upload failed: {err}. "
            f"Retry with: {command('hf-indosent', 'push', '--model', run.run_dir, '--repo-id', args.hub_model_id)}"
        ) from None
    print(f"Pushed best model to {url}")


def cli_run(model_args: ModelArguments, data_args: DataArguments, args: FineTuneArguments) -> int:
    """``hf-indosent train`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    train(model_args, data_args, args)
    return 0


def checkpoint(run: Run, state: TrainState) -> Path:
    path = save_checkpoint(run.accelerator, run.run_dir, state, run.args.save_total_limit)
    run.clock.reset()
    return path


def checkpoint_wanted(run: Run, state: TrainState) -> tuple[bool, bool]:
    """(stop now, checkpoint due) after an optimizer step, the same on every process.

    A stop is asked by SIGINT/SIGTERM (:class:`StopRequests`); a checkpoint is due every ``checkpointing_steps`` and
    after ``checkpointing_minutes``. With several processes the flags are combined (any process's signal or clock
    counts) every ``logging_steps``, so steps are not synchronised with the host more often than the log is.
    """
    args, accelerator = run.args, run.accelerator
    stop = run.stops.signum is not None
    due = bool(args.checkpointing_steps) and state.global_step % args.checkpointing_steps == 0
    if accelerator.num_processes > 1 and state.global_step % args.logging_steps:
        return False, due
    stop_any, clock_any = any_process(accelerator, stop, run.clock.due())
    return stop_any, due or clock_any
