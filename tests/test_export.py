"""export and the inference backends: ONNX folders, parity with PyTorch, ``auto``, refusals, row order."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import interrupt_after_pieces, make_rows

from hf_indosent import cli
from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.inference.arguments import ExportArguments, InferenceArguments
from hf_indosent.inference.backends import onnx_session
from hf_indosent.inference.export import MANIFEST_FILE, export
from hf_indosent.inference.inputs import BadInput
from hf_indosent.inference.predictor import Predictor
from hf_indosent.modeling.loading import ModelSourceError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tiny_classifier_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "onnx"
    export(tiny_classifier_dir, folder)
    return folder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Texts of very different lengths, so length sorting really reorders them."""
    rows = make_rows(120, seed=21)
    return [" ".join([text] * (1 + index % 6)) for index, (text, _) in enumerate(rows)]


@pytest.fixture(scope="module")
def torch_results(tiny_classifier_dir, texts) -> list[dict]:
    return Predictor(tiny_classifier_dir, backend="torch", batch_size=16, chunk_size=50)(texts)


def labels(results: list[dict]) -> list[str | None]:
    return [result["label"] for result in results]


def test_export_writes_an_onnx_runtime_folder(exported, tiny_classifier_dir):
    files = {path.name for path in exported.iterdir()}
    assert {"model.onnx", "model_int8.onnx", "config.json", "tokenizer.json", MANIFEST_FILE} <= files
    assert not any(name.endswith(".safetensors") for name in files)
    manifest = json.loads((exported / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["source"] == str(Path(tiny_classifier_dir).resolve())
    assert manifest["opset"] == 18
    assert manifest["labels"] == list(LABEL_NAMES)
    assert manifest["int8"] == {
        "file": "model_int8.onnx",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
    }
    assert set(manifest["versions"]) == {"torch", "transformers", "onnx", "onnxscript", "onnxruntime"}
    assert sorted(files) == manifest["files"]
    assert manifest["max_abs_logit_difference_vs_torch"]["model.onnx"] < 1e-4
    session = onnx_session(exported / "model.onnx", "test")
    inputs = {item.name: item.shape for item in session.get_inputs()}
    assert inputs == {name: ["batch", "sequence"] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert [(item.name, item.shape) for item in session.get_outputs()] == [("logits", ["batch", 3])]


def test_onnx_fp32_matches_torch(exported, texts, torch_results):
    predictor = Predictor(exported, backend="onnx", batch_size=16, chunk_size=50)
    results = predictor(texts)
    assert predictor.label_names == list(LABEL_NAMES)  # read from the exported config.json, by name
    assert labels(results) == labels(torch_results)
    for result, reference in zip(results, torch_results, strict=True):
        assert result["scores"] == pytest.approx(reference["scores"], abs=1e-4)


@pytest.mark.parametrize("backend", ["onnx-int8", "torch-int8", "torch-bf16"])
def test_low_precision_backends_keep_the_labels(backend, exported, tiny_classifier_dir, texts, torch_results):
    model = exported if backend.startswith("onnx") else tiny_classifier_dir
    # int8 alone: the fp32 fallback for close calls (tested below) would recompute every text of this tiny model
    results = Predictor(model, backend=backend, batch_size=16, chunk_size=50, int8_fallback_margin=0)(texts)
    # Exact on this model: int8 moves its scores by ~3e-4 (measured), and no text here has its top two scores closer
    # than 0.025. A real model has such texts, and int8 may flip a few of them (see docs: agreement on SmSA).
    assert labels(results) == labels(torch_results)
    for result, reference in zip(results, torch_results, strict=True):
        # 0.05: on an AVX2-only CPU (AMD Zen 3, no VNNI) ONNX Runtime's u8s8 int8 moved a score by 0.032
        assert result["scores"] == pytest.approx(reference["scores"], abs=0.05)
    # and the backend really computes in its own precision: not one score bit for bit the fp32 one
    assert any(
        result["scores"] != reference["scores"] for result, reference in zip(results, torch_results, strict=True)
    )


def top_two_margin(result: dict) -> float:
    first, second = sorted(result["scores"].values(), reverse=True)[:2]
    return first - second


def test_int8_recomputes_its_close_calls_in_fp32(exported, texts):
    """onnx-int8 with a fallback margin: a text whose top two int8 probabilities are closer than the margin gets
    model.onnx's (fp32) scores, every other text keeps its int8 scores; rows and order are unchanged."""
    settings = {"batch_size": 16, "chunk_size": 50}
    fp32 = Predictor(exported, backend="onnx", **settings)(texts)
    int8 = Predictor(exported, backend="onnx-int8", int8_fallback_margin=0, **settings)(texts)
    margins = [top_two_margin(result) for result in int8]
    # a quarter to three quarters of the texts are close calls; the threshold lies in the widest gap between their
    # margins there, never at one, so float32 (the model) vs float64 (the scores here) cannot decide a text's side
    ordered = sorted(margins)
    middle = range(len(ordered) // 4, 3 * len(ordered) // 4)
    gap = max(middle, key=lambda index: ordered[index + 1] - ordered[index])
    assert ordered[gap + 1] - ordered[gap] > 1e-4
    margin = (ordered[gap] + ordered[gap + 1]) / 2
    close = [value < margin for value in margins]
    assert 0 < sum(close) < len(texts)
    apart = [
        max(abs(a - b) for a, b in zip(x["scores"].values(), y["scores"].values(), strict=True))
        for x, y in zip(int8, fp32, strict=True)
    ]
    assert min(apart) > 1e-6  # int8 alone moves every score here: the checks below can tell the two apart

    predictor = Predictor(exported, backend="onnx-int8", int8_fallback_margin=margin, **settings)
    results = predictor(texts)
    for result, is_close, exact, quantized in zip(results, close, fp32, int8, strict=True):
        expected = exact if is_close else quantized
        assert result["label"] == expected["label"]
        assert result["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert (predictor.pipe.model.rechecked, predictor.pipe.model.seen) == (sum(close), len(texts))
    # the two sessions take turns: their threads must sleep, not spin-wait against each other, after each run
    for session in (predictor.pipe.model.session, predictor.pipe.model.fallback):
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert Predictor(exported, backend="onnx-int8", **settings).int8_fallback_margin == 0.3  # on by default


def test_int8_fallback_needs_the_fp32_export(exported, tmp_path, texts):
    int8_only = shutil.copytree(exported, tmp_path / "int8-only")
    (int8_only / "model.onnx").unlink()
    message = r"no model\.onnx to recompute close calls in fp32: pass --int8_fallback_margin 0"
    with pytest.raises(ValueError, match=message):
        Predictor(int8_only, backend="onnx-int8")
    assert len(Predictor(int8_only, backend="onnx-int8", int8_fallback_margin=0)(texts[:3])) == 3


@pytest.mark.parametrize("margin", [-0.1, 1, 2.5])
def test_int8_fallback_margin_out_of_range_is_refused(exported, margin, capsys):
    message = rf"int8_fallback_margin={margin!r} must be in \[0, 1\)"
    with pytest.raises(ValueError, match=message):
        InferenceArguments(model=str(exported), int8_fallback_margin=margin)
    with pytest.raises(ValueError, match=message):
        Predictor(exported, int8_fallback_margin=margin)
    with pytest.raises(SystemExit) as exited:
        cli.main(["predict", "--model", str(exported), "--int8_fallback_margin", str(margin), "--texts", "a"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "must be in [0, 1)" in err


def test_auto_picks_the_fastest_backend_the_folder_holds(exported, tiny_classifier_dir, tmp_path):
    assert Predictor(exported).backend == "onnx-int8"
    assert Predictor(tiny_classifier_dir).backend == "torch"
    fp32_only = tmp_path / "fp32-only"
    shutil.copytree(exported, fp32_only)
    (fp32_only / "model_int8.onnx").unlink()
    assert Predictor(fp32_only).backend == "onnx"
    with pytest.raises(ModelSourceError, match=r"no weights \(model_int8\.onnx\)"):
        Predictor(fp32_only, backend="onnx-int8")


def test_rows_and_bad_rows_keep_their_place_through_onnx(exported, texts, torch_results):
    rows = [texts[0], "", texts[1], None, 7, BadInput("line 6 is not valid UTF-8"), texts[2], "   "]
    results = Predictor(exported, backend="onnx")(rows)
    assert [result["error"] for result in results] == [
        None,
        "empty text",
        None,
        "not a text: got NoneType",
        "not a text: got int",
        "line 6 is not valid UTF-8",
        None,
        "empty text",
    ]
    expected = [torch_results[index]["label"] for index in range(3)]
    assert labels(results) == [expected[0], None, expected[1], None, None, None, expected[2], None]
    assert results[6]["scores"] == pytest.approx(torch_results[2]["scores"], abs=1e-4)


def test_bad_backend_names_are_refused(tiny_classifier_dir, capsys):
    message = "backend='tensorrt' is unknown: use one of auto, torch, torch-bf16, torch-int8, onnx, onnx-int8"
    with pytest.raises(ValueError, match=message):
        InferenceArguments(model=str(tiny_classifier_dir), backend="tensorrt")
    with pytest.raises(ValueError, match=message):
        Predictor(tiny_classifier_dir, backend="tensorrt")
    with pytest.raises(SystemExit) as stop:  # a usage error: exit code 2, one line
        cli.main(["predict", "--model", str(tiny_classifier_dir), "--backend", "tensorrt", "--texts", "a"])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_backend_and_folder_must_match(exported, tiny_classifier_dir, capsys):
    assert cli.main(["predict", "--model", str(exported), "--backend", "torch", "--texts", "bagus"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an ONNX export" in err and "--backend onnx" in err
    with pytest.raises(ModelSourceError, match="holds PyTorch weights, not an ONNX export: write one with"):
        Predictor(tiny_classifier_dir, backend="onnx")


def test_export_refuses_incomplete_sources_and_foreign_folders(exported, tiny_classifier_dir, tiny_model_dir, tmp_path):
    incomplete = tmp_path / "incomplete"
    shutil.copytree(tiny_classifier_dir, incomplete, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelSourceError, match=r"incomplete, it has no weights \(model\.safetensors\)"):
        export(incomplete, tmp_path / "out")
    with pytest.raises(ModelSourceError, match="is an ONNX export"):
        export(exported, tmp_path / "out")  # nothing to export from: it has no PyTorch weights
    with pytest.raises(ValueError, match="has no label names"):
        export(tiny_model_dir, tmp_path / "out")  # a bare encoder, no classification head
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match="already holds files that are not an `hf-indosent export`"):
        export(tiny_classifier_dir, foreign)
    with pytest.raises(ValueError, match="is the model folder itself"):
        export(tiny_classifier_dir, tiny_classifier_dir)
    with pytest.raises(ValueError, match="--opset 17 is too old"):
        ExportArguments(model=str(tiny_classifier_dir), output_dir=str(tmp_path / "out"), opset=17)
    assert not (tmp_path / "out").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["incomplete", "notes"]  # no temporary folder left


def test_cli_export_no_int8_then_again_replaces_it(tiny_classifier_dir, tmp_path, capsys):
    output = tmp_path / "served"
    argv = ["export", "--model", str(tiny_classifier_dir), "--output_dir", str(output)]
    assert cli.main([*argv, "--no_int8"]) == 0
    assert "run it with: hf-indosent predict --model" in capsys.readouterr().err
    assert not (output / "model_int8.onnx").exists()
    assert Predictor(output).backend == "onnx"
    assert cli.main(argv) == 0  # a former export is replaced, in one go
    assert (output / "model_int8.onnx").is_file()
    predictions = tmp_path / "predictions.jsonl"
    assert cli.main(["predict", "--model", str(output), "--texts", "enak", "kotor", "--output", str(predictions)]) == 0
    records = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert [record["text"] for record in records] == ["enak", "kotor"]
    assert all(record["label"] in LABEL_NAMES for record in records)


def test_missing_onnx_packages_fail_in_one_line(exported, tiny_classifier_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails as if not installed
    message = r'--backend onnx needs the optional ONNX packages \(onnxruntime is missing\): pip install -e "\.\[onnx\]"'
    with pytest.raises(ImportError, match=message):
        Predictor(exported, backend="onnx")
    argv = ["export", "--model", str(tiny_classifier_dir), "--output_dir", str(tmp_path / "out")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[onnx]"' in err


def test_piecewise_predict_runs_an_export_folder(exported, texts, torch_results, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    argv = ["predict", "--model", str(exported), "--backend", "onnx", "--file", str(source), "--output", str(output)]
    assert cli.main([*argv, "--resumable", "--piece_size", "7"]) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["label"] for row in rows] == labels(torch_results)
    assert not (tmp_path / "out.jsonl.parts").exists()  # merged and cleaned up


def test_piecewise_int8_refuses_a_resume_with_another_fallback_margin(exported, texts, tmp_path, monkeypatch, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    argv = ["predict", "--model", str(exported), "--file", str(source), "--output", str(output)]
    argv += ["--resumable", "--piece_size", "40"]  # auto: the export's onnx-int8
    with monkeypatch.context() as patch:
        interrupt_after_pieces(patch, 1)
        assert cli.main(argv) == 130
    capsys.readouterr()
    assert cli.main([*argv, "--int8_fallback_margin", "0.1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "arguments --int8_fallback_margin 0.3 -> 0.1" in err
    assert cli.main(argv) == 0
    assert len(output.read_text(encoding="utf-8").splitlines()) == len(texts)
