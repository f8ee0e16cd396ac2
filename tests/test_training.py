"""The Accelerate training loop on a tiny BERT (CPU, seconds): files written, early stopping, StepLR, resume."""

from __future__ import annotations

import json

import pytest
from accelerate.state import AcceleratorState
from conftest import FAST, comparable, log_lines, run_cli, run_train
from transformers import AutoConfig, pipeline


def test_one_epoch_writes_every_file(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    results = run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)

    for name in ("metrics.json", "log.jsonl", "args.json", "training_curves.png", "confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    for name in ("training_curves.png", "confusion_matrix.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert metrics["best_epoch"] == 1 and metrics["epochs_completed"] == 1
    assert metrics["validation"]["num_examples"] == 45
    assert set(metrics["validation"]) >= {"accuracy", "f1", "precision", "recall", "loss"}
    assert "test" not in metrics  # the tiny SmSA test split is masked: no test metrics
    assert metrics["label_names"] == ["positive", "neutral", "negative"]
    assert sum(sum(row.values()) for row in metrics["validation_confusion"]["matrix"].values()) == 45
    assert len(log_lines(run_dir)) == 1
    assert json.loads((run_dir / "args.json").read_text())["training"]["learning_rate"] == FAST["learning_rate"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["checkpoint-e0001-s000000012"]

    best = run_dir / "best"
    assert sorted(p.name for p in best.iterdir() if p.suffix in (".safetensors", ".bin")) == ["model.safetensors"]
    classifier = pipeline("text-classification", model=str(best), device="cpu")
    assert classifier("makanan nya enak sekali")[0]["label"] in {"positive", "neutral", "negative"}
    assert AutoConfig.from_pretrained(best).id2label == {0: "positive", 1: "neutral", 2: "negative"}


def test_early_stopping_after_patience_and_steplr_halves(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    """A learning rate too small to change predictions: epoch 1 stays best, so training stops after 1 + patience."""
    run_dir = tmp_path / "run"
    results = run_train(
        tiny_model_dir,
        tiny_smsa_dir,
        run_dir,
        cache_dir,
        learning_rate=1e-12,
        lr_gamma=0.5,
        num_train_epochs=10,
        early_stopping_patience=2,
    )
    history = log_lines(run_dir)
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert results["stopped_early"] is True and results["best_epoch"] == 1 and results["epochs_completed"] == 3
    assert [entry["lr"] for entry in history] == pytest.approx([1e-12, 5e-13, 2.5e-13], rel=1e-9)
    assert [entry["is_best"] for entry in history] == [True, False, False]


def test_gradient_accumulation_counts_optimizer_steps(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1, gradient_accumulation_steps=4)
    assert log_lines(run_dir)[0]["global_step"] == 3  # 12 batches / 4


def test_resume_between_epochs_matches_uninterrupted(no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_train(no_dropout_model, tiny_smsa_dir, straight, cache_dir, num_train_epochs=3)
    run_train(no_dropout_model, tiny_smsa_dir, resumed, cache_dir, num_train_epochs=1)
    AcceleratorState._reset_state(reset_partial_state=True)
    run_train(no_dropout_model, tiny_smsa_dir, resumed, cache_dir, num_train_epochs=3, resume_from_checkpoint="latest")
    assert comparable(resumed) == comparable(straight)


def test_existing_run_is_not_overwritten(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)
    before = (run_dir / "metrics.json").read_bytes()
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)
    assert (run_dir / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--lr_gamma", "2", "lr_gamma=2.0 must be in (0, 1]"),
        ("--label_smoothing", "1", "label_smoothing=1.0 must be in [0, 1)"),
        ("--focal_gamma", "-2", "focal_gamma=-2.0 must be in [0, 10]"),
    ],
)
def test_invalid_value_fails_before_loading_anything(tmp_path, flag, value, said):
    result = run_cli("scripts/train.py", "--output_dir", str(tmp_path / "x"), flag, value)
    assert result.returncode == 2
    assert said in result.stderr
    assert not (tmp_path / "x").exists()


def test_tensorboard_tracker_writes_events(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1, report_to="tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = {events.parent for events in (run_dir / "runs").rglob("events.out.tfevents.*")}
    scalars = {}
    for folder in folders:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        scalars.update({tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]})
    assert {"train/loss", "train/lr", "validation/f1", "validation/loss"} <= set(scalars)
    (logged,) = log_lines(run_dir)
    (f1,) = scalars["validation/f1"]
    assert f1.value == pytest.approx(logged["validation"]["f1"]) and f1.step == logged["global_step"]


def test_log_reports_throughput_counts(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    """Real tokens and padding per epoch: micro-batches and length grouping each pad less than whole random batches."""
    fractions, tokens = {}, set()
    for name, overrides in {
        "whole": {"micro_batches": 1},
        "micro": {"micro_batches": 4},
        "grouped": {"micro_batches": 1, "group_by_length": True},
    }.items():
        run_dir = tmp_path / name
        run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1, **overrides)
        AcceleratorState._reset_state(reset_partial_state=True)
        train = log_lines(run_dir)[0]["train"]
        assert train["seconds"] > 0 and 0 <= train["padding_fraction"] < 1
        fractions[name] = train["padding_fraction"]
        tokens.add(train["tokens"])
    from hf_indosent.data.smsa import load_smsa
    from hf_indosent.modeling.loading import load_tokenizer

    texts = load_smsa(data_dir=tiny_smsa_dir, cache_dir=cache_dir)["train"]["text"]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert tokens == {sum(len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=64)["input_ids"])}
    assert fractions["micro"] < fractions["whole"]
    assert fractions["grouped"] < fractions["whole"]


def test_micro_batches_train_like_whole_batches(no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir):
    """Micro-batches change the padding, not the optimisation: same losses and metrics as whole batches."""
    runs = {}
    for micro_batches in (1, 4):
        run_dir = tmp_path / f"micro-{micro_batches}"
        run_train(no_dropout_model, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=2, micro_batches=micro_batches)
        AcceleratorState._reset_state(reset_partial_state=True)
        runs[micro_batches] = comparable(run_dir)
    whole, micro = runs[1]["history"], runs[4]["history"]
    for a, b in zip(whole, micro, strict=True):
        assert b["train"]["padding_fraction"] < a["train"]["padding_fraction"]
        assert b["train"]["loss"] == pytest.approx(a["train"]["loss"], rel=1e-4)
        assert b["validation"]["loss"] == pytest.approx(a["validation"]["loss"], rel=1e-4)
        assert b["validation"]["f1"] == a["validation"]["f1"]
        assert b["train"]["f1"] == a["train"]["f1"]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(("cores", "warned"), [(4, True), (1, False)])
def test_cpu_run_on_fewer_threads_than_cores_says_how_to_use_them(monkeypatch, caplog, cores, warned):
    """`accelerate launch` leaves a CPU run on one thread (OMP_NUM_THREADS=1) unless told otherwise."""
    from accelerate import Accelerator

    from hf_indosent.training import device_defaults

    monkeypatch.setattr(device_defaults, "usable_cpu_cores", lambda: cores)
    with caplog.at_level("WARNING", logger="hf_indosent.training.device_defaults"):
        device_defaults.warn_if_few_cpu_threads(Accelerator(cpu=True))
    assert ("--num_cpu_threads_per_process 4" in caplog.text) is warned


@pytest.mark.parametrize(
    ("device", "given", "expected"),
    [
        ("cpu", {"packing": False}, (4, False, False)),  # packing, the CPU default, in test_packing.py
        ("cuda", {}, (1, True, True)),
        ("mps", {}, (1, False, False)),
        ("cuda", {"micro_batches": 2, "tf32": False}, (2, True, False)),
        ("cpu", {"micro_batches": 1, "tf32": True}, (1, False, False)),  # TF32 exists only on NVIDIA GPUs
    ],
)
def test_device_defaults_resolve_per_device_and_yield_to_explicit_flags(device, given, expected):
    import torch

    from hf_indosent.training.arguments import FineTuneArguments
    from hf_indosent.training.device_defaults import device_defaults

    defaults = device_defaults(torch.device(device), FineTuneArguments(output_dir="x", **given))
    assert (defaults.micro_batches, defaults.pin_memory, defaults.tf32) == expected


@pytest.mark.parametrize(
    ("given", "launched", "speedup", "expected"),
    [
        (None, None, 4.5, "bf16"),  # a CPU whose bf16 matmuls are fast (AMD Zen 4 here)
        (None, None, 0.54, "no"),  # avx512_bf16 without AMX on an Intel Xeon: slower, so fp32
        ("no", None, 4.5, "no"),  # the explicit flag wins
        (None, "bf16", 0.54, "bf16"),  # so does accelerate launch --mixed_precision bf16
        (None, "no", 4.5, "bf16"),  # accelerate_config.yaml's 'no' is the file's default, not a choice
    ],
)
def test_precision_resolves_from_a_measurement_on_cpu(monkeypatch, given, launched, speedup, expected):
    from hf_indosent.training import device_defaults as training_setup
    from hf_indosent.training.arguments import FineTuneArguments

    if launched is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launched)
    monkeypatch.setattr(training_setup, "bf16_matmul_speedup", lambda: speedup)
    assert (
        training_setup.resolve_mixed_precision(FineTuneArguments(output_dir="x", mixed_precision=given).mixed_precision)
        == expected
    )


def test_precision_on_a_gpu_is_fp32_and_a_resumed_run_keeps_its_own(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import torch

    from hf_indosent.training import device_defaults as training_setup

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(training_setup, "bf16_matmul_speedup", lambda: pytest.fail("measured on a GPU"))
    gpu = SimpleNamespace(device=torch.device("cuda"), is_main_process=True, num_processes=1)
    monkeypatch.setattr(training_setup, "PartialState", lambda: gpu)
    assert training_setup.resolve_mixed_precision(None) == "no"
    # resuming: what the run recorded, never a new measurement that could flip it mid-run
    (tmp_path / "args.json").write_text(json.dumps({"launch": {"mixed_precision": "bf16"}}))
    assert training_setup.resolve_mixed_precision(None, tmp_path) == "bf16"


def test_only_the_main_process_measures_and_the_others_take_its_choice(monkeypatch):
    from types import SimpleNamespace

    import torch

    from hf_indosent.training import device_defaults as training_setup

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(training_setup, "bf16_matmul_speedup", lambda: pytest.fail("measured on a non-main process"))
    rank_1 = SimpleNamespace(device=torch.device("cpu"), is_main_process=False, num_processes=2)
    monkeypatch.setattr(training_setup, "PartialState", lambda: rank_1)
    sent = []

    def broadcast(objects):  # what rank 0 measured arrives in place, as accelerate's broadcast does
        sent.append(list(objects))
        objects[0] = "bf16"

    monkeypatch.setattr(training_setup, "broadcast_object_list", broadcast)
    assert training_setup.resolve_mixed_precision(None) == "bf16"
    assert sent == [[None]]


def test_bf16_speed_probe_measures_a_ratio():
    import math

    from hf_indosent.modeling.devices import bf16_matmul_speedup

    # no range: on an AMD Zen 3 (AVX2 only) emulated bf16 reads 0.008x, on a Zen 4 4.5x
    ratio = bf16_matmul_speedup(threads=1, repeats=2)
    assert math.isfinite(ratio) and ratio > 0


@pytest.mark.parametrize(
    ("bf16_seconds", "samples", "expected"),
    [(0.5, 5, 2.0), (2.0, 5, 0.5), (100.0, 1, 0.01)],  # native, slower but cheap, emulated: one sample is enough
)
def test_bf16_speed_probe_keeps_the_best_samples_and_stops_early_where_bf16_is_emulated(
    monkeypatch, bf16_seconds, samples, expected
):
    import torch

    from hf_indosent.modeling import devices

    timed = []

    def seconds(a, b):
        timed.append(a.dtype)
        slower = 1 + 0.1 * (timed.count(a.dtype) % 2)  # every other sample of a dtype is slower: the best counts
        return slower * (bf16_seconds if a.dtype == torch.bfloat16 else 1.0)

    monkeypatch.setattr(devices, "matmul_seconds", seconds)
    assert devices.bf16_matmul_speedup(repeats=5) == pytest.approx(expected)
    assert timed == [torch.float32, torch.bfloat16] * samples


def test_evaluation_scores_in_fp32_under_mixed_precision(tiny_model_dir):
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification

    from hf_indosent.training.evaluation import full_precision_forward

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).eval()
    batch = {"input_ids": torch.randint(5, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    with torch.no_grad():
        expected = model(**batch).logits
        prepared = Accelerator(cpu=True, mixed_precision="bf16").prepare(model)
        autocast = prepared(**batch).logits
        scored = full_precision_forward(Accelerator(cpu=True, mixed_precision="bf16"), prepared)(**batch).logits
    assert not torch.equal(autocast, expected)  # the prepared forward runs in bf16
    assert torch.equal(scored, expected)  # evaluation sees exactly what the saved fp32 weights predict


def test_run_records_the_resolved_device_defaults(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)
    launch = json.loads((run_dir / "args.json").read_text())["launch"]
    assert launch == {
        "num_processes": 1,
        "device": "cpu",
        "mixed_precision": "no",
        "micro_batches": 1,
        "pin_memory": False,
        "tf32": False,
        "packing": True,
    }


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_best_model_is_calibrated_and_keeps_its_labels(precision, tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    from hf_indosent.data.smsa import load_smsa
    from hf_indosent.inference.predictor import Predictor
    from hf_indosent.metrics.scores import compute_metrics

    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=2, mixed_precision=precision)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "args.json").read_text())["launch"]["mixed_precision"] == precision
    calibration = metrics["calibration"]
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9  # T = 1 was a candidate
    config = json.loads((run_dir / "best" / "config.json").read_text())
    assert config["calibration_temperature"] == pytest.approx(calibration["temperature"])
    # the calibrated best/ predicts exactly the labels its validation metrics were computed from
    validation = load_smsa(data_dir=tiny_smsa_dir, cache_dir=cache_dir)["validation"]
    predictor = Predictor(run_dir)
    names = predictor.label_names
    predicted = [names.index(result["label"]) for result in predictor(validation["text"])]
    rescored = compute_metrics(predicted, validation["label"])
    assert rescored["f1"] == pytest.approx(metrics["validation"]["f1"])
    assert rescored["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])


def test_class_weights_balanced_and_explicit(no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir):
    from hf_indosent.core.arguments import ArgumentError
    from hf_indosent.training.arguments import FineTuneArguments
    from hf_indosent.training.setup import class_weights_of
    from hf_indosent.training.step import balanced_class_weights

    assert balanced_class_weights([6, 2, 4]) == pytest.approx([12 / 18, 12 / 6, 12 / 12])
    args = FineTuneArguments(output_dir="x", class_weights="1,3,1")
    assert class_weights_of(args, [0, 1, 2], 3) == [1.0, 3.0, 1.0]
    with pytest.raises(ArgumentError, match="3 weights for 2 labels"):
        class_weights_of(args, [0, 1], 2)
    with pytest.raises(ArgumentError, match="class_weights='heavy'"):
        FineTuneArguments(output_dir="x", class_weights="heavy")

    runs = {}
    # the tiny training split is balanced (32 rows per label), so "balanced" is all ones there: weigh explicitly too
    settings = {"plain": {}, "balanced": {"class_weights": "balanced"}, "weighted": {"class_weights": "1,3,1"}}
    for name, overrides in settings.items():
        for micro_batches in (1, 4):  # weighted or not, micro-batches give the whole batch's loss
            run_dir = tmp_path / f"{name}-{micro_batches}"
            run_train(
                no_dropout_model,
                tiny_smsa_dir,
                run_dir,
                cache_dir,
                num_train_epochs=1,
                micro_batches=micro_batches,
                **overrides,
            )
            runs[name, micro_batches] = log_lines(run_dir)[0]
    for name in settings:
        assert runs[name, 1]["train"]["loss"] == pytest.approx(runs[name, 4]["train"]["loss"], rel=1e-5)
    assert runs["plain", 1]["train"]["loss"] == pytest.approx(runs["balanced", 1]["train"]["loss"], rel=1e-6)
    assert runs["plain", 1]["train"]["loss"] != pytest.approx(runs["weighted", 1]["train"]["loss"], rel=1e-3)
    assert set(runs["plain", 1]["validation_per_class"]) >= {"positive", "neutral", "negative"}


@pytest.mark.parametrize("class_weights", [None, [1.0, 3.0, 1.0]])
def test_label_smoothing_is_the_whole_batch_smoothed_loss(tiny_model_dir, class_weights):
    """Split into length-sorted micro-batches or not, the step's loss and gradients are those of
    F.cross_entropy(label_smoothing=0.1) over the whole batch (weighted or not), and differ from plain cross-entropy by
    exactly what smoothing adds. The head starts at zero, so every text's probabilities are exactly 1/K and the
    difference has a closed form: per text, eps (e_y - 1/K) unweighted; PyTorch's weighted form
    (eps/K) (W/K - w) - eps w_y (1/K - e_y), both over the batch's total weight (W = sum of the weights)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from hf_indosent.training.step import MicroBatchCollator, forward_backward

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["makanan enak sekali", "tidak", "pelayanan buruk dan lama sekali menunggu", "biasa saja", "mantap"]
    label_ids = [0, 1, 2, 1, 0]
    features = [{**tokenizer(text), "labels": label} for text, label in zip(texts, label_ids, strict=True)]
    weights = None if class_weights is None else torch.tensor(class_weights)
    accelerator = Accelerator(cpu=True)
    eps, k = 0.1, 3

    def step(micro_batches: int, smoothing: float) -> tuple:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=k).eval()
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
        batch = MicroBatchCollator(DataCollatorWithPadding(tokenizer), micro_batches)(features)
        loss, _ = forward_backward(accelerator, model, batch, weights, smoothing)
        return loss.item(), model.classifier.weight.grad.clone(), model.classifier.bias.grad.clone(), model

    loss, grad, bias_grad, model = step(3, eps)
    model.zero_grad()
    whole = DataCollatorWithPadding(tokenizer)(features)
    labels = whole.pop("labels")
    expected = F.cross_entropy(model(**whole).logits, labels, weight=weights, label_smoothing=eps)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(grad, model.classifier.weight.grad, atol=1e-6)
    assert step(1, eps)[0] == pytest.approx(loss, rel=1e-5)
    plain, _, plain_bias_grad, _ = step(3, 0.0)
    assert plain == pytest.approx(F.cross_entropy(model(**whole).logits, labels, weight=weights).item(), rel=1e-5)
    one_hot = F.one_hot(labels, k).float()
    w = torch.ones(k) if weights is None else weights.float()
    w_y = w[labels].unsqueeze(1)
    per_text = eps / k * (w.sum() / k - w) - eps * w_y * (1 / k - one_hot)
    closed_form = per_text.sum(0) / w_y.sum()
    # fixed by the labels and weights alone (0.013 and 0.0099 here), far above float32 noise on these gradients
    assert closed_form.abs().max() > 0.005
    torch.testing.assert_close(bias_grad - plain_bias_grad, closed_form, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("class_weights", [None, [1.0, 3.0, 1.0]])
def test_focal_loss_is_the_whole_batch_focal_loss(tiny_model_dir, class_weights):
    """With focal_gamma=3, split into length-sorted micro-batches or not, the step's loss and gradients are the whole
    batch's mean of w_y (1 - p_y)^3 (-log p_y) (weighted: over the batch's total weight), written out here from
    softmax; gamma 0 is plain cross-entropy again."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from hf_indosent.training.step import MicroBatchCollator, forward_backward

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["makanan enak sekali", "tidak", "pelayanan buruk dan lama sekali menunggu", "biasa saja", "mantap"]
    label_ids = [0, 1, 2, 1, 0]
    features = [{**tokenizer(text), "labels": label} for text, label in zip(texts, label_ids, strict=True)]
    weights = None if class_weights is None else torch.tensor(class_weights)
    accelerator = Accelerator(cpu=True)

    def step(micro_batches: int, gamma: float) -> tuple:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).eval()
        with torch.no_grad():  # confident, unequal scores, so (1 - p)^gamma differs from text to text
            model.classifier.weight.mul_(40)
        batch = MicroBatchCollator(DataCollatorWithPadding(tokenizer), micro_batches)(features)
        loss, _ = forward_backward(accelerator, model, batch, weights, 0.0, gamma)
        return loss.item(), model.classifier.weight.grad.clone(), model

    loss, grad, model = step(3, 3.0)
    model.zero_grad()
    whole = DataCollatorWithPadding(tokenizer)(features)
    labels = whole.pop("labels")
    p_true = torch.softmax(model(**whole).logits, dim=-1)[torch.arange(len(labels)), labels]
    w = torch.ones(len(labels)) if weights is None else weights[labels]
    expected = (w * (1 - p_true) ** 3 * -torch.log(p_true)).sum() / w.sum()
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(grad, model.classifier.weight.grad, atol=1e-6)
    assert step(1, 3.0)[0] == pytest.approx(loss, rel=1e-5)
    plain = step(3, 0.0)[0]
    assert plain == pytest.approx(F.cross_entropy(model(**whole).logits, labels, weight=weights).item(), rel=1e-5)
    assert loss < 0.9 * plain  # confidently right texts count for less


@pytest.mark.parametrize("value", [-1, 11, "2"])
def test_focal_gamma_out_of_range_is_refused(value):
    from hf_indosent.core.arguments import ArgumentError
    from hf_indosent.training.arguments import FineTuneArguments

    with pytest.raises(ArgumentError, match=f"focal_gamma={value!r} must be in \\[0, 10\\]"):
        FineTuneArguments(output_dir="x", focal_gamma=value)


def test_focal_loss_and_label_smoothing_together_are_refused():
    from hf_indosent.core.arguments import ArgumentError
    from hf_indosent.training.arguments import FineTuneArguments

    with pytest.raises(ArgumentError, match="cannot be combined: set one of them to 0"):
        FineTuneArguments(output_dir="x", focal_gamma=2, label_smoothing=0.1)
    FineTuneArguments(output_dir="x", focal_gamma=2)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.1"])
def test_label_smoothing_out_of_range_is_refused(value):
    from hf_indosent.core.arguments import ArgumentError
    from hf_indosent.training.arguments import FineTuneArguments

    with pytest.raises(ArgumentError, match=f"label_smoothing={value!r} must be in \\[0, 1\\)"):
        FineTuneArguments(output_dir="x", label_smoothing=value)
