"""Packed training batches (hf_indosent/training/packing.py): the padded model's logits, loss and gradients from one
padding-free pass, chosen per device and model, and never leaking into a saved model; the contract with transformers
(public APIs only, the model's structure, a launch self-test, a tested version range), whose every failure falls back
to micro-batches."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator
from conftest import comparable, log_lines, run_train
from transformers import (
    AttentionInterface,
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PretrainedConfig,
)

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.training.arguments import FineTuneArguments
from hf_indosent.training.device_defaults import device_defaults
from hf_indosent.training.packing import (
    KEEP_LEVELS,
    PACKED_ATTENTION,
    DropoutMasks,
    PackedCollator,
    check_structure,
    packed_attention,
    packed_logits,
    packing_unavailable,
    self_test,
    unfit_for_packing,
    untested_transformers,
)
from hf_indosent.training.step import computed_masks, forward_backward

TEXTS = [
    "makanan enak sekali",
    "tidak",
    "pelayanan buruk dan lama sekali menunggu makanan datang",
    "biasa saja",
    "mantap",
    "tempatnya nyaman tapi harga mahal sekali untuk porsi sekecil itu",
    "oke",
]
LABELS = [0, 1, 2, 1, 0, 2, 1]


def features(tokenizer, texts=TEXTS, with_types=True):
    rows = []
    for text, label in zip(texts, LABELS, strict=False):
        encoded = dict(tokenizer(text))
        if not with_types:
            encoded.pop("token_type_ids", None)
        rows.append({**encoded, "labels": label})
    return rows


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def fresh_model(model_dir):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)


@pytest.mark.parametrize("groups", [1, 3, 8])
@pytest.mark.parametrize("with_types", [True, False])
def test_packed_logits_are_the_padded_model_s(tiny_model_dir, tokenizer, groups, with_types):
    model = fresh_model(tiny_model_dir).eval()
    rows = features(tokenizer, with_types=with_types)
    batch = PackedCollator(groups)(rows)
    assert batch["packed"]["input_ids"].shape == (1, sum(len(row["input_ids"]) for row in rows))  # no padding
    with torch.no_grad():
        packed = packed_logits(model, batch["packed"])[batch["restore"]]
        padded = DataCollatorWithPadding(tokenizer)(rows)
        padded.pop("labels")
        expected = model(**padded).logits
    assert torch.allclose(packed, expected, atol=1e-5)
    assert model.config._attn_implementation != PACKED_ATTENTION  # switched back after the packed pass
    assert torch.equal(batch["sorted_labels"][batch["restore"]], torch.tensor(LABELS))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_masks_drop_at_the_rate_and_keep_the_expectation(dtype, p):
    """Each element is dropped with probability p (to 16 bits), the rest scaled by the exact inverse keep rate, and
    the gradient goes through the same mask and scale."""
    states = torch.ones(400_000, dtype=dtype, requires_grad=True)
    out = DropoutMasks(seed=3).apply(states, p)
    out.sum().backward()
    dropped = out == 0
    assert abs(dropped.float().mean().item() - p) < 5 * (p * (1 - p) / states.numel()) ** 0.5
    keep_rate = 1 - round(p * KEEP_LEVELS) / KEEP_LEVELS
    expected = torch.tensor(1 / keep_rate, dtype=dtype)  # what `1 * scale` rounds to in this dtype
    assert torch.equal(out[~dropped], expected.expand(int((~dropped).sum())))
    assert torch.equal(states.grad, out.detach())  # d(out)/d(states) is the mask times the scale
    assert out.dtype == dtype


def test_dropout_masks_are_reproducible_and_fresh_per_call():
    states = torch.ones(10_000)
    first, second = DropoutMasks(seed=7), DropoutMasks(seed=7)
    masks = [first.apply(states, 0.1) == 0 for _ in range(2)]
    assert torch.equal(masks[0], second.apply(states, 0.1) == 0)  # same seed, same masks
    assert not torch.equal(masks[0], masks[1])  # each call draws new numbers
    assert not torch.equal(masks[0], DropoutMasks(seed=8).apply(states, 0.1) == 0)
    assert torch.equal(first.apply(states, 0.0), states)
    assert torch.equal(first.apply(states, 1.0), torch.zeros_like(states))
    elsewhere = first.apply(torch.ones(4, 5, device="meta"), 0.1)  # a GPU's tensors keep torch's dropout
    assert (elsewhere.device.type, elsewhere.shape) == ("meta", (4, 5))


def test_a_packed_training_pass_draws_every_dropout_mask_from_numpy(tiny_model_dir, tokenizer, monkeypatch):
    """torch's dropout (a Mersenne Twister draw per element on CPUs) never draws a mask inside a packed training pass:
    the model's nn.Dropout layers (through forward hooks) and the attention probabilities use DropoutMasks, seeded
    from torch's generator; the layers are plain torch dropout in training mode again afterwards."""
    model = fresh_model(tiny_model_dir).train()
    batch = PackedCollator(3)(features(tokenizer))
    with torch.no_grad():
        model.eval()
        state = torch.get_rng_state()
        without_dropout = packed_logits(model, batch["packed"])
        assert torch.equal(torch.get_rng_state(), state), "evaluation draws nothing from torch's generator"
        model.train()

        def refused(input, p=0.5, training=True, inplace=False):
            if training and p > 0:
                raise AssertionError("torch's dropout drew a mask")
            return input

        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.functional, "dropout", refused)
            torch.manual_seed(1)
            first = packed_logits(model, batch["packed"])
            torch.manual_seed(1)
            again = packed_logits(model, batch["packed"])
            torch.manual_seed(2)
            other = packed_logits(model, batch["packed"])
    assert not torch.allclose(first, without_dropout)  # dropout did act
    assert torch.equal(first, again) and not torch.equal(first, other)  # reproducible from torch's seed
    dropouts = [module for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    assert dropouts and all(module.training and "forward" not in module.__dict__ for module in dropouts)
    states = torch.ones(1000)
    for module in dropouts:  # no hook left: each layer is torch's own dropout again
        torch.manual_seed(3)
        expected = F.dropout(states, module.p, training=True)
        torch.manual_seed(3)
        assert torch.equal(module(states), expected)


def test_packed_dropout_layers_keep_their_own_rate(tiny_model_dir, tokenizer):
    """Each hooked nn.Dropout applies its own p: a layer set to 1.0 zeroes its output, one at 0.0 passes it on."""
    model = fresh_model(tiny_model_dir).train()
    model.dropout.p = 1.0  # the classifier's dropout: every pooled feature dropped, the logits are the bias alone
    batch = PackedCollator(2)(features(tokenizer))
    with torch.no_grad():
        logits = packed_logits(model, batch["packed"])
    assert torch.allclose(logits, model.classifier.bias.expand_as(logits))
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        trained = packed_logits(model, batch["packed"])
        model.eval()
        assert torch.allclose(trained, packed_logits(model, batch["packed"]), atol=1e-6)


def test_a_packed_step_never_writes_the_config_s_attention(no_dropout_model, tokenizer, monkeypatch):
    """The attention is switched through the public set_attn_implementation only: a trap on the config's private
    ``_attn_implementation`` setter stays untouched through a packed training step, and the model's own attention
    is back after it."""
    model = fresh_model(no_dropout_model)
    before = model.config._attn_implementation
    getter = PretrainedConfig._attn_implementation.fget

    def trap(config, value):
        raise AssertionError(f"config._attn_implementation written ({value!r})")

    monkeypatch.setattr(PretrainedConfig, "_attn_implementation", property(getter, trap))
    forward_backward(Accelerator(cpu=True), model, PackedCollator(2)(features(tokenizer)))
    assert model.config._attn_implementation == before != PACKED_ATTENTION
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def expected_loss(logits, labels, weights, smoothing, gamma):
    if gamma == 0:
        return F.cross_entropy(logits, labels, weight=weights, label_smoothing=smoothing)
    log_p = F.log_softmax(logits, -1).gather(1, labels[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()  # focal loss, written out


@pytest.mark.parametrize("precision", ["no", "bf16"])
@pytest.mark.parametrize(
    ("weights", "smoothing", "gamma"), [(None, 0.0, 1.0), ([1.0, 3.0, 0.5], 0.0, 0.0), (None, 0.1, 0.0)]
)
def test_a_packed_step_gives_the_whole_batch_s_loss_and_gradients(
    no_dropout_model, tokenizer, precision, weights, smoothing, gamma
):
    """Every loss option (focal, class weights, label smoothing) sees the whole batch, in fp32 and under bf16."""
    rows = features(tokenizer)
    accelerator = Accelerator(cpu=True, mixed_precision=precision)
    model = fresh_model(no_dropout_model)
    weights = None if weights is None else torch.tensor(weights)
    batch = PackedCollator(2)(rows)
    loss, logits = forward_backward(accelerator, model, batch, weights, label_smoothing=smoothing, focal_gamma=gamma)
    packed_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # the gradient reaches the embeddings

    reference = fresh_model(no_dropout_model)
    padded = DataCollatorWithPadding(tokenizer)(rows)
    labels = padded.pop("labels")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        expected_logits = reference(**padded).logits.float()
    expected = expected_loss(expected_logits, labels, weights, smoothing, gamma)
    expected.backward()
    tolerance = 1e-5 if precision == "no" else 3e-2
    assert loss.item() == pytest.approx(expected.item(), rel=tolerance)
    assert torch.allclose(logits.float(), expected_logits, atol=tolerance * 3)
    for name, parameter in reference.named_parameters():
        if parameter.grad is not None:
            scale = parameter.grad.abs().max().item() + 1e-6
            assert (packed_grads[name] - parameter.grad).abs().max().item() <= tolerance * 10 * scale, name


def test_packed_training_trains_like_micro_batches_and_is_recorded(
    no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir
):
    """Packing changes how a batch is computed, not the optimisation: the same losses and metrics as micro-batches,
    no padding counted; args.json records it, and the saved model loads with a standard attention."""
    runs = {}
    for name, overrides in {"packed": {}, "micro": {"micro_batches": 4}}.items():  # packing is the CPU default
        run_dir = tmp_path / name
        run_train(no_dropout_model, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=2, **overrides)
        runs[name] = comparable(run_dir)
    for packed, micro in zip(runs["packed"]["history"], runs["micro"]["history"], strict=True):
        assert packed["train"]["padding_fraction"] == 0 < micro["train"]["padding_fraction"]
        assert packed["train"]["tokens"] == micro["train"]["tokens"]
        assert packed["train"]["loss"] == pytest.approx(micro["train"]["loss"], rel=1e-4)
        assert packed["validation"]["loss"] == pytest.approx(micro["validation"]["loss"], rel=1e-4)
        assert packed["validation"]["f1"] == micro["validation"]["f1"]
    launch = json.loads((tmp_path / "packed" / "args.json").read_text())["launch"]
    assert (launch["packing"], launch["micro_batches"]) == (True, 1)
    assert json.loads((tmp_path / "micro" / "args.json").read_text())["launch"]["packing"] is False
    saved = (tmp_path / "packed" / "best" / "config.json").read_text()
    assert PACKED_ATTENTION not in saved
    assert AutoConfig.from_pretrained(tmp_path / "packed" / "best")._attn_implementation != PACKED_ATTENTION
    assert log_lines(tmp_path / "packed")[0]["train"]["padding_fraction"] == 0


def test_computed_masks_count_what_each_kind_of_batch_computed(tokenizer):
    from hf_indosent.training.step import MicroBatchCollator

    rows = features(tokenizer)
    tokens = sum(len(row["input_ids"]) for row in rows)
    (packed,) = computed_masks(PackedCollator()(rows))
    assert packed.sum() == packed.numel() == tokens
    parts = computed_masks(MicroBatchCollator(DataCollatorWithPadding(tokenizer), 2)(rows))
    assert sum(mask.sum() for mask in parts) == tokens < sum(mask.numel() for mask in parts)


def test_packing_knows_when_it_cannot_run(tiny_model_dir):
    bert = AutoConfig.from_pretrained(tiny_model_dir)
    assert packing_unavailable(bert, 1) is None
    assert "single process" in packing_unavailable(bert, 2)
    other = AutoConfig.for_model("distilbert", dim=32, n_layers=1, n_heads=2, hidden_dim=37)
    assert "'distilbert'" in packing_unavailable(other, 1)
    decoder = AutoConfig.from_pretrained(tiny_model_dir, is_decoder=True)
    assert "BERT encoders" in packing_unavailable(decoder, 1)


@pytest.mark.parametrize(
    ("device", "given", "unavailable", "expected"),
    [
        ("cpu", {}, None, (1, True)),  # auto: packed on a CPU
        ("cpu", {}, "not a BERT", (4, False)),  # auto falls back to micro-batches
        ("cpu", {"micro_batches": 2}, None, (2, False)),  # an explicit choice of micro-batches wins
        ("cpu", {"packing": False}, None, (4, False)),
        ("cpu", {"torch_compile": True}, None, (4, False)),
        ("cuda", {}, None, (1, False)),  # not measured on GPUs: padded batches there
        ("cuda", {"packing": True}, None, (1, True)),
    ],
)
def test_packing_resolves_per_device_and_model(device, given, unavailable, expected):
    defaults = device_defaults(torch.device(device), FineTuneArguments(output_dir="x", **given), unavailable)
    assert (defaults.micro_batches, defaults.packing) == expected


def test_packing_asked_for_where_it_cannot_run_is_refused():
    with pytest.raises(ArgumentError, match="--packing true: needs one process; drop --packing"):
        device_defaults(torch.device("cpu"), FineTuneArguments(output_dir="x", packing=True), "needs one process")
    for clash in ({"micro_batches": 4}, {"torch_compile": True}):
        with pytest.raises(ArgumentError, match="packing=true"):
            FineTuneArguments(output_dir="x", packing=True, **clash)


@pytest.mark.parametrize(
    ("recorded", "given", "unavailable", "expected"),
    [
        ({"micro_batches": 4, "packing": False, "tf32": False}, {}, None, (4, False)),  # started with micro-batches
        ({"micro_batches": 4, "tf32": False}, {}, None, (4, False)),  # recorded before packing existed
        ({"micro_batches": 1, "packing": True, "tf32": False}, {}, None, (1, True)),
        ({"micro_batches": 1, "packing": True, "tf32": False}, {}, "needs one process", (4, False)),  # unpacked
        ({"micro_batches": 4, "packing": False, "tf32": False}, {"packing": True}, None, (1, True)),  # explicit wins
    ],
)
def test_a_resumed_run_keeps_how_it_was_launched(recorded, given, unavailable, expected):
    """Unset settings resolve to what the resumed run recorded, so a default that changed between releases (packing)
    does not refuse the resume of a run started with micro-batches."""
    args = FineTuneArguments(output_dir="x", **given)
    defaults = device_defaults(torch.device("cpu"), args, unavailable, resumed=recorded)
    assert (defaults.micro_batches, defaults.packing) == expected


def test_resuming_a_micro_batched_run_with_the_packing_default(no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_train(no_dropout_model, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1, micro_batches=4)
    results = run_train(
        no_dropout_model, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=2, resume_from_checkpoint="latest"
    )
    assert results["epochs_completed"] == 2
    launch = json.loads((run_dir / "args.json").read_text())["launch"]
    assert (launch["micro_batches"], launch["packing"]) == (4, False)


# ----------------------------------------------------------------------------------------------------------------
# The contract: the model's structure, the launch self-test, the tested transformers, a fallback for each


def test_the_structure_check_accepts_a_bert_classifier_and_names_what_packing_misses(tiny_model_dir):
    assert check_structure(fresh_model(tiny_model_dir)) is None
    damages = {
        "its pooler": lambda model: setattr(model.bert, "pooler", None),
        "dropout layer": lambda model: setattr(model, "dropout", torch.nn.Identity()),
        "linear classifier": lambda model: setattr(model, "classifier", torch.nn.Sequential(model.classifier)),
        "own self-attention": lambda model: setattr(model.bert.encoder.layer[1].attention, "self", torch.nn.Identity()),
        "bidirectional": lambda model: setattr(model.config, "is_decoder", True),
        "absolute position": lambda model: setattr(model.config, "position_embedding_type", "relative_key"),
    }
    for words, damage in damages.items():
        model = fresh_model(tiny_model_dir)
        damage(model)
        assert words in (check_structure(model) or ""), words
    other = AutoConfig.for_model("distilbert", dim=32, n_layers=1, n_heads=2, hidden_dim=37, vocab_size=50)
    assert "DistilBertForSequenceClassification" in check_structure(
        AutoModelForSequenceClassification.from_config(other)
    )
    assert "a BertModel" in check_structure(transformers.AutoModel.from_pretrained(tiny_model_dir))


def test_the_self_test_passes_and_leaves_the_model_as_it_was(tiny_model_dir):
    model = fresh_model(tiny_model_dir).train()
    attention, state = model.config._attn_implementation, torch.get_rng_state()
    assert self_test(model) is None
    assert torch.equal(torch.get_rng_state(), state), "the self-test draws nothing: a run stays reproducible"
    assert model.training and all(module.training for module in model.modules())
    assert model.config._attn_implementation == attention != PACKED_ATTENTION


def leaky_attention(module, query, key, value, attention_mask, packing_layout=None, **kwargs):
    """The packed attention with a bug: no padding keys masked (a short text attends to its group's padding)."""
    layout = {**packing_layout, "key_biases": [torch.zeros_like(bias) for bias in packing_layout["key_biases"]]}
    return packed_attention(module, query, key, value, attention_mask, packing_layout=layout, **kwargs)


def failing_attention(*args, **kwargs):
    raise RuntimeError("unexpected keyword argument 'packing_layout'\nsecond line")


@pytest.fixture
def registered():
    """Register a broken function as the packed attention for one test; the real one again after it."""
    yield lambda function: AttentionInterface.register(PACKED_ATTENTION, function)
    AttentionInterface.register(PACKED_ATTENTION, packed_attention)


@pytest.mark.parametrize(
    ("attention", "reason"),
    [(leaky_attention, "differs from the padded forward"), (failing_attention, "failed its self-test")],
)
def test_the_self_test_catches_a_wrong_or_failing_packed_forward(tiny_model_dir, registered, attention, reason):
    registered(attention)
    model = fresh_model(tiny_model_dir)
    found = self_test(model)
    assert reason in found and "\n" not in found
    assert unfit_for_packing(model) == found
    assert model.config._attn_implementation != PACKED_ATTENTION  # switched back after the failure


@pytest.mark.parametrize(
    ("version", "tested"), [("5.25.0", True), ("5.25.2", True), ("5.24.0", False), ("5.26.0", False), ("6.0.0", False)]
)
def test_packing_runs_only_on_the_tested_transformers(tiny_model_dir, monkeypatch, version, tested):
    monkeypatch.setattr(transformers, "__version__", version)
    reason = untested_transformers()
    assert (reason is None) == tested
    if not tested:
        assert f"this is {version}" in reason
        assert unfit_for_packing(fresh_model(tiny_model_dir)) == reason


def packing_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("Packing off")]


def test_a_run_whose_self_test_fails_warns_once_and_trains_with_micro_batches(
    no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir, registered, caplog
):
    registered(leaky_attention)
    with caplog.at_level(logging.WARNING, logger="hf_indosent.training.setup"):
        results = run_train(no_dropout_model, tiny_smsa_dir, tmp_path / "run", cache_dir, num_train_epochs=1)
    assert results["epochs_completed"] == 1
    (warning,) = packing_warnings(caplog)
    assert "self-test" in warning and "4 micro-batches" in warning and "\n" not in warning
    launch = json.loads((tmp_path / "run" / "args.json").read_text())["launch"]
    assert (launch["packing"], launch["micro_batches"]) == (False, 4)  # args.json records what ran
    assert log_lines(tmp_path / "run")[0]["train"]["padding_fraction"] > 0


def test_a_model_packing_cannot_serve_falls_back_before_the_first_step(
    no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch, caplog
):
    from hf_indosent.training import setup as setup_module

    loaded = setup_module.load_model

    def without_head_dropout(*args, **kwargs):  # a head packing does not know; the padded forward runs it fine
        model = loaded(*args, **kwargs)
        model.dropout = torch.nn.Identity()
        return model

    monkeypatch.setattr(setup_module, "load_model", without_head_dropout)
    with caplog.at_level(logging.WARNING, logger="hf_indosent.training.setup"):
        results = run_train(no_dropout_model, tiny_smsa_dir, tmp_path / "run", cache_dir, num_train_epochs=1)
    assert results["epochs_completed"] == 1
    (warning,) = packing_warnings(caplog)
    assert "dropout layer" in warning
    assert json.loads((tmp_path / "run" / "args.json").read_text())["launch"]["packing"] is False


def test_packing_asked_for_on_a_model_that_fails_the_contract_is_refused(
    no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir, registered
):
    registered(leaky_attention)
    with pytest.raises(ArgumentError, match="--packing true: the packed forward differs"):
        run_train(no_dropout_model, tiny_smsa_dir, tmp_path / "run", cache_dir, num_train_epochs=1, packing=True)
    assert not (tmp_path / "run" / "args.json").exists()  # refused before anything was written


def test_a_packed_run_resumed_where_packing_fails_goes_on_with_micro_batches(
    no_dropout_model, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch
):
    run_dir = tmp_path / "run"
    run_train(no_dropout_model, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)
    monkeypatch.setattr(transformers, "__version__", "5.99.0")  # say, transformers was upgraded in between
    results = run_train(
        no_dropout_model, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=2, resume_from_checkpoint="latest"
    )
    assert results["epochs_completed"] == 2
    recorded = json.loads((run_dir / "args.json").read_text())
    assert (recorded["launch"]["packing"], recorded["launch"]["micro_batches"]) == (False, 4)
    changed = recorded["resumes"][-1]["changed"]
    assert (changed["packing"], changed["micro_batches"]) == ([True, False], [1, 4])  # honoured, and recorded
