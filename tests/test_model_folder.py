"""Model folders whose files do not make the model they claim: refused in one line by every command that loads one.

A folder is a model only if every parameter the classifier needs comes from its weights with the shape its config
gives it; an export only if its ONNX files are whole. Everything that can be checked from the files alone is checked
while the arguments are parsed, before torch or transformers' models are imported.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FAKE_TOKEN, ROOT

from hf_indosent import cli
from hf_indosent.inference.arguments import ExportArguments, InferenceArguments
from hf_indosent.inference.export import export
from hf_indosent.inference.predictor import Predictor, predict
from hf_indosent.modeling.loading import ModelSourceError, load_classifier, load_model
from hf_indosent.sharing.arguments import DemoArguments, PushArguments
from hf_indosent.sharing.hub import push_to_hub

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO_ID = "someone/indobert-smsa"
OTHER_LABELS = [f"label{index}" for index in range(5)]


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")) | changes), encoding="utf-8")


def remove_head(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    tensors = {name: tensor for name, tensor in load_file(weights).items() if not name.startswith("classifier.")}
    save_file(tensors, weights, metadata={"format": "pt"})


def put_weights_of_another_size(folder: Path, model_class: str) -> None:
    """The weights of a model like this one but wider (hidden 48, not 32): every tensor has another shape."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder, hidden_size=48, intermediate_size=96)
    other = folder.with_name(folder.name + "-other")
    getattr(transformers, model_class)(config).save_pretrained(other)
    shutil.move(other / "model.safetensors", folder / "model.safetensors")
    shutil.rmtree(other)


# kind -> (how the folder is spoilt, what the one line must name)
MISMATCHES = {
    "head removed": (remove_head, ["classifier.bias, classifier.weight (the classification head)", "not a fine-tuned"]),
    "weights of another size": (
        lambda folder: put_weights_of_another_size(folder, "BertForSequenceClassification"),
        ["tensors have another shape than its config.json", "[48] in the weights, [32] by config.json"],
    ),
    "config says roberta": (
        lambda folder: edit_config(folder, model_type="roberta"),
        ["its weights lack classifier.dense.bias", "its weights hold bert.embeddings", "no place for"],
    ),
    "config says distilbert": (
        lambda folder: edit_config(folder, model_type="distilbert", architectures=None),
        ["its weights lack distilbert.embeddings", "no place for"],
    ),
    "config has 5 labels": (
        lambda folder: edit_config(
            folder,
            id2label=dict(enumerate(OTHER_LABELS)),
            label2id={name: index for index, name in enumerate(OTHER_LABELS)},
        ),
        ["classifier.weight [3, 32] in the weights, [5, 32] by config.json"],
    ),
    "config has fewer layers": (
        lambda folder: edit_config(folder, num_hidden_layers=1),
        ["its weights hold bert.encoder.layer.1.", "which its config.json has no place for"],
    ),
}


@pytest.fixture(scope="module")
def spoilt(tiny_classifier_dir, tmp_path_factory) -> dict[str, Path]:
    """One copy of the tiny classifier per kind of mismatch, each saved as a run's best/ (with a run folder)."""
    root = tmp_path_factory.mktemp("spoilt")
    folders = {}
    for kind, (spoil, _) in MISMATCHES.items():
        folder = root / kind.replace(" ", "-") / "best"
        shutil.copytree(tiny_classifier_dir, folder)
        spoil(folder)
        folders[kind] = folder
    return folders


def last_line(err: str, prog: str, *needles: str) -> str:
    """The error line of a refused command: one line, no traceback and no load report, naming every needle."""
    assert "Traceback" not in err and "LOAD REPORT" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"hf-indosent {prog}: error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.mark.parametrize("kind", MISMATCHES)
def test_predict_refuses_weights_that_do_not_match_the_config(kind, spoilt, capsys):
    folder, needles = spoilt[kind], MISMATCHES[kind][1]
    for backend in ("auto", "torch", "torch-int8"):
        with pytest.raises(ModelSourceError) as refused:
            Predictor(folder, backend=backend)
        assert str(folder) in str(refused.value) and "\n" not in str(refused.value)
        assert all(needle in str(refused.value) for needle in needles), str(refused.value)
    with pytest.raises(ModelSourceError):
        predict(["makanan nya enak"], folder)
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(folder.parent), "--texts", "makanan nya enak"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no label invented by freshly initialised layers
    last_line(err, "predict", str(folder), *needles)


@pytest.mark.parametrize("kind", MISMATCHES)
def test_evaluate_export_and_push_refuse_them_in_one_line(kind, spoilt, tiny_smsa_dir, tmp_path, hub_calls, capsys):
    folder, needles = spoilt[kind], MISMATCHES[kind][1]
    evaluation = ["evaluate", "--model", str(folder), "--data_dir", str(tiny_smsa_dir), "--output_dir"]
    assert cli.main([*evaluation, str(tmp_path / "eval"), "--dataset_cache_dir", str(tmp_path / "cache")]) == 1
    last_line(capsys.readouterr().err, "evaluate", str(folder), *needles)
    assert not (tmp_path / "eval").exists()

    with pytest.raises(ModelSourceError, match=re.escape(needles[0])):
        export(folder, tmp_path / "onnx")
    assert cli.main(["export", "--model", str(folder), "--output_dir", str(tmp_path / "onnx")]) == 1
    last_line(capsys.readouterr().err, "export", str(folder), *needles)
    assert not (tmp_path / "onnx").exists()

    with pytest.raises(ModelSourceError, match=re.escape(needles[0])):
        push_to_hub(folder.parent, REPO_ID, token=FAKE_TOKEN)
    assert cli.main(["push", "--model", str(folder.parent), "--repo-id", REPO_ID]) == 1
    last_line(capsys.readouterr().err, "push", str(folder), *needles)
    assert hub_calls == {}  # refused before the Hub was asked anything


def test_demo_refuses_a_model_without_its_head(spoilt):
    from hf_indosent.sharing import demo

    with pytest.raises(ModelSourceError, match=r"\(the classification head\)"):
        demo.build_app(spoilt["head removed"].parent)


@pytest.fixture
def good_run(tiny_classifier_dir, tmp_path) -> Path:
    shutil.copytree(tiny_classifier_dir, tmp_path / "run" / "best")
    return tmp_path / "run"


@pytest.mark.parametrize("kind", ["head removed", "config has 5 labels"])
def test_training_refuses_a_best_model_that_does_not_load_whole(kind, spoilt, good_run, tiny_classifier_dir):
    from hf_indosent.training.loop import load_best_weights

    model = load_classifier(tiny_classifier_dir)
    unwrap = SimpleNamespace(unwrap_model=lambda wrapped: wrapped)
    load_best_weights(SimpleNamespace(accelerator=unwrap, model=model, run_dir=good_run))
    with pytest.raises(ModelSourceError, match=re.escape(MISMATCHES[kind][1][0])):
        load_best_weights(SimpleNamespace(accelerator=unwrap, model=model, run_dir=spoilt[kind].parent))


@pytest.mark.parametrize(
    ("spoil", "named"),
    [
        (lambda folder: edit_config(folder, model_type="distilbert"), "distilbert.transformer.layer.0."),
        (lambda folder: put_weights_of_another_size(folder, "BertModel"), "have another shape there"),
    ],
)
def test_fine_tuning_keeps_a_fresh_head_but_refuses_an_encoder_without_weights(spoil, named, tiny_model_dir, tmp_path):
    fresh_head = load_model(str(tiny_model_dir), ["negative", "positive"])
    assert fresh_head.config.id2label == {0: "negative", 1: "positive"}
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    spoil(base)
    with pytest.raises(ModelSourceError) as refused:
        load_model(str(base), ["negative", "positive"])
    message = str(refused.value)
    assert re.match(rf"model folder {re.escape(str(base))}: \d+ of the \d+ encoder tensors", message), message
    assert named in message and "pooler" not in message


def pickle_garbage(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"old weights, not a pickle")


@pytest.mark.parametrize(
    ("spoil", "named"),
    [
        (lambda folder: (folder / "config.json").write_text("{not json", encoding="utf-8"), "not a valid JSON file"),
        (lambda folder: edit_config(folder, model_type="no-such-model"), "has model type `no-such-model`"),
        (pickle_garbage, "UnpicklingError: Weights only load failed)"),  # not torch's advice to unpickle anyway
        (lambda folder: (folder / "tokenizer.json").write_text('{"model": {"type": "?"}}', encoding="utf-8"), "("),
    ],
)
def test_transformers_load_errors_become_one_line(spoil, named, tiny_classifier_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_classifier_dir, folder)
    spoil(folder)
    with pytest.raises(ModelSourceError, match=rf"model folder {re.escape(str(folder))}: transformers .* cannot load"):
        Predictor(folder)
    assert cli.main(["predict", "--model", str(folder), "--texts", "bagus"]) == 1
    last_line(capsys.readouterr().err, "predict", str(folder), named, "re-save the model that way")


def test_a_hub_model_that_cannot_be_fetched_is_one_line():
    with pytest.raises(ModelSourceError, match=r"model 'someone/no-such-model': .* check the Hub id and --revision"):
        Predictor("someone/no-such-model")  # the tests run offline


# ---------------------------------------------------------------------------------------------------------------
# Corrupt exports


@pytest.fixture(scope="module")
def exported(tiny_classifier_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "onnx"
    export(tiny_classifier_dir, folder)
    return folder


def truncated_copy(exported: Path, target: Path, name: str) -> Path:
    shutil.copytree(exported, target)
    data = (target / name).read_bytes()
    (target / name).write_bytes(data[: len(data) // 2])
    return target


@pytest.mark.parametrize(
    ("name", "backend"), [("model.onnx", "onnx"), ("model_int8.onnx", "onnx-int8"), ("model_int8.onnx", "auto")]
)
def test_truncated_export_is_one_line_saying_export_again(name, backend, exported, tmp_path, capsys):
    folder = truncated_copy(exported, tmp_path / "onnx", name)
    needles = (f"{folder / name} is truncated or corrupt", "export it again with hf-indosent export --model")
    with pytest.raises(ModelSourceError) as refused:
        InferenceArguments(model=str(folder), backend=backend)  # found while the arguments are parsed
    assert all(needle in str(refused.value) for needle in needles)
    with pytest.raises(ModelSourceError, match="is truncated or corrupt"):
        Predictor(folder, backend=backend)
    assert cli.main(["predict", "--model", str(folder), "--backend", backend, "--texts", "bagus"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    last_line(err, "predict", *needles)


def test_int8_fallback_checks_the_fp32_file_it_also_loads(exported, tmp_path):
    folder = truncated_copy(exported, tmp_path / "onnx", "model.onnx")
    with pytest.raises(ModelSourceError, match=r"model\.onnx is truncated or corrupt"):
        Predictor(folder, backend="onnx-int8")  # its close calls are recomputed by model.onnx


def test_an_export_onnx_runtime_cannot_load_is_one_line_too(exported, tmp_path):
    folder = tmp_path / "onnx"
    shutil.copytree(exported, folder)
    # Whole by its layout (ir_version, graph, opset_import, each as long as it says) but no ONNX graph inside.
    (folder / "model.onnx").write_bytes(b"\x08\x08" + b"\x3a\x03abc" + b"\x42\x02xy")
    with pytest.raises(ModelSourceError, match=r"model\.onnx: ONNX Runtime cannot load it \(.*\): export it again"):
        Predictor(folder, backend="onnx")


# ---------------------------------------------------------------------------------------------------------------
# Refusals that need no model come before torch


def test_model_checks_answer_before_torch_is_imported(exported, tiny_classifier_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_classifier_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # its header is longer
    onnx = truncated_copy(exported, tmp_path / "onnx", "model_int8.onnx")
    refusals = [
        (["predict", "--model", "/no/such/dir", "--texts", "x"], "no model at that path"),
        (["evaluate", "--model", str(tmp_path / "runs" / "never-trained")], "no model at that path"),
        (["predict", "--model", str(onnx), "--texts", "x"], "model_int8.onnx is truncated or corrupt"),
        (
            ["export", "--model", str(broken), "--output_dir", str(tmp_path / "out")],
            f"{weights} is corrupt or truncated",
        ),
        (["push", "--model", str(broken), "--repo-id", REPO_ID], f"{weights} is corrupt or truncated"),
        (["demo", "--model", "./no/such/run"], "no model at that path"),
    ]
    code = (
        "import json, sys\nfrom hf_indosent.cli import main\n"
        f"codes = [main(argv) for argv in {[argv for argv, _ in refusals]!r}]\n"
        "heavy = [name for name in ('torch', 'datasets', 'transformers.modeling_utils') if name in sys.modules]\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"codes": [1] * len(refusals), "heavy": []}
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(refusals), result.stderr  # one line each, no traceback
    for line, (argv, needle) in zip(lines, refusals, strict=True):
        assert line.startswith(f"hf-indosent {argv[0]}: error: ") and needle in line, line


def test_every_model_command_checks_its_model_argument(tmp_path):
    missing = str(tmp_path / "no-such-run")
    for arguments in (
        lambda: InferenceArguments(model=missing),
        lambda: DemoArguments(model=missing),
        lambda: ExportArguments(model=missing, output_dir=str(tmp_path / "out")),
    ):
        with pytest.raises(ModelSourceError, match="no model at that path"):
            arguments()
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(ModelSourceError, match="incomplete"):
        PushArguments(model=str(tmp_path / "empty-run"), repo_id=REPO_ID)
