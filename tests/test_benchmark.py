"""benchmarks/benchmark.py end to end on the tiny fixtures (every path in its own process): the JSON it writes,
never its timings; plus the MFU rule, the indobert-base shape and device resolution."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from hf_indosent.data.parsing import LABEL_NAMES

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TRAINING_PEERS = ("tutorial", "trainer", "trainer_grouped")
N_TRAIN, N_EVAL, MAX_SEQ_LEN = 96, 30, 64

# The tutorial's metrics warn when a barely trained model never predicts some class; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    """benchmarks/ is no package (its scripts import each other as siblings), so the folder goes on sys.path."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("benchmark")


@pytest.fixture(scope="module")
def report(benchmark, tiny_model_dir, tiny_smsa_dir, tmp_path_factory) -> dict:
    """One whole benchmark run on the tiny model and data (one torch thread per path: tiny matrices, shared CPU)."""
    tmp = tmp_path_factory.mktemp("benchmark")
    argv = [
        *("--model", str(tiny_model_dir), "--data_dir", str(tiny_smsa_dir), "--device", "cpu", "--threads", "1"),
        *("--max_train_samples", str(N_TRAIN), "--max_eval_samples", str(N_EVAL), "--max_seq_len", str(MAX_SEQ_LEN)),
        *("--batch_size", "4", "--epochs", "1", "--lr", "1e-3", "--inference_batch_size", "4"),
        *("--inference_repeats", "2", "--matmul_sizes", "32", "64", "--no_progress"),
        *("--work_dir", str(tmp / "work"), "--output", str(tmp / "benchmark.json")),
    ]
    assert benchmark.main(argv) == 0
    written = json.loads((tmp / "benchmark.json").read_text())
    assert (tmp / "benchmark.md").read_text() == written["table"], "the .md is the JSON's table"
    return written


def rows_of(report: dict) -> dict[str, dict]:
    return {row["key"]: row for row in report["comparison"]}


def test_every_path_ran_alike_in_its_own_process(report, tiny_model_dir, tiny_smsa_dir):
    paths = report["paths"]
    assert set(paths) == {*TRAINING_PEERS, "ours", "inference"}
    assert {paths[name]["path"] for name in paths} == set(paths)
    for name, path in paths.items():
        assert (path["device"], path["torch_threads"]) == ("cpu", 1), name
        assert {peak["threads"] for peak in path["matmul_peaks"]} == {1}, "the peak runs on the timed threads"
        assert {peak["when"] for peak in path["matmul_peaks"]} == {"before", "after"}
        assert path["peak_device_memory_mib"] is None and path["peak_rss_mib"] > 0
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [line.split("\t")[0] for line in (tiny_smsa_dir / "train_preprocess.tsv").read_text().splitlines()]
    real_tokens = sum(min(len(tokenizer.encode(text)), MAX_SEQ_LEN) for text in texts[:N_TRAIN])
    seen = [sum(paths["tutorial"]["train_real_tokens"]), *(paths[p]["train_real_tokens"] for p in TRAINING_PEERS[1:])]
    assert [*seen, paths["ours"]["train_real_tokens"]] == [real_tokens] * 4, "same rows and truncation for all"
    # --mixed_precision auto (the default): ours computes in what it resolved, each peer in its own default (fp32)
    resolved = paths["ours"]["settings"]["launch"]["mixed_precision"]
    assert paths["ours"]["compute_dtype"] == {"no": "float32", "bf16": "bfloat16"}[resolved]
    assert {paths[peer]["compute_dtype"] for peer in TRAINING_PEERS} == {"float32"}
    assert paths["trainer"]["settings"]["mixed_precision"] == "no"
    assert {peak["dtype"] for peak in paths["ours"]["matmul_peaks"]} == {"float32", "bfloat16"}
    assert paths["trainer"]["settings"]["train_sampling_strategy"] == "random"
    assert paths["trainer"]["settings"]["optim"].startswith("adamw"), "Trainer's own optimizer, by its name"
    assert paths["trainer_grouped"]["settings"]["train_sampling_strategy"] == "group_by_length"
    assert paths["trainer_grouped"]["padding_fraction"] < paths["trainer"]["padding_fraction"], "grouping took effect"
    inference = paths["inference"]
    assert inference["n_texts"] == N_EVAL
    assert inference["plain_pipeline"]["real_tokens"] == inference["predict"]["real_tokens"], "same truncation"
    for figures in (inference["plain_pipeline"], inference["predict"]):  # the fastest of 2 timed passes counts
        assert len(figures["all_seconds"]) == 2 and figures["seconds"] == min(figures["all_seconds"])


def test_ratios_are_ours_over_each_peer_from_the_recorded_figures(report):
    rows, paths = rows_of(report), report["paths"]
    for key, figure in (("train_samples_per_s", "samples_per_s"), ("peak_rss_mib", "peak_rss_mib")):
        assert rows[key]["ours"] == paths["ours"][figure]
        assert rows[key]["peers"] == {peer: paths[peer][figure] for peer in TRAINING_PEERS}
    assert rows["val_f1"]["peers"]["trainer_grouped"] == paths["trainer_grouped"]["final_val_f1"]
    assert rows["inference_texts_per_s"]["peers"] == {"pipeline": paths["inference"]["plain_pipeline"]["texts_per_s"]}
    assert rows["inference_texts_per_s"]["ours"] == paths["inference"]["predict"]["texts_per_s"]
    numeric = 0
    for row in rows.values():
        for peer, theirs in row["peers"].items():
            if isinstance(row["ours"], float) and isinstance(theirs, float) and theirs != 0:
                assert row["ratios"][peer] == pytest.approx(row["ours"] / theirs), (row["key"], peer)
                numeric += 1
        assert row["figure"] in report["table"]
    assert numeric >= 15
    targets = report["targets"]
    assert targets["training_speedup"] == pytest.approx(rows["train_samples_per_s"]["ratios"]["tutorial"])
    assert targets["inference_speedup"] == pytest.approx(rows["inference_texts_per_s"]["ratios"]["pipeline"])
    assert targets["labels_identical"] == (paths["inference"]["mismatched_indices"] == [])


def test_mfu_is_a_fraction_of_the_best_peak_or_marked_invalid(benchmark, report):
    measure = importlib.import_module("measure")
    paths, peak = report["paths"], report["matmul_peak"]["float32"]
    measured = [p["flops_per_s"] for path in paths.values() for p in path["matmul_peaks"] if p["dtype"] == "float32"]
    assert peak["flops_per_s"] == max(measured) and len(measured) == 2 * len(paths)
    rows = rows_of(report)
    cells = {
        **{peer: (rows["train_mfu"]["peers"][peer], paths[peer]) for peer in TRAINING_PEERS},
        "ours": (rows["train_mfu"]["ours"], paths["ours"]),
    }
    for name, (cell, path) in cells.items():
        if cell == measure.INVALID_MFU:
            assert rows["train_mfu"]["ratios"].get(name) is None
        else:
            own_peak = report["matmul_peak"][path["compute_dtype"]]["flops_per_s"]  # the dtype the path ran in
            assert 0 < cell <= 1
            flops_per_s = path["train_flops_total"] / path["train_s"]
            assert cell == pytest.approx(flops_per_s / own_peak), name
            over_fp32 = rows["train_over_fp32_peak"]["ours" if name == "ours" else "peers"]
            over_fp32 = over_fp32 if name == "ours" else over_fp32[name]
            assert over_fp32 == pytest.approx(flops_per_s / peak["flops_per_s"]), name  # fp32's peak, whatever dtype
    for cell in (rows["inference_mfu"]["ours"], rows["inference_mfu"]["peers"]["pipeline"]):
        assert cell == measure.INVALID_MFU or 0 < cell <= 1


def test_too_low_a_peak_makes_every_mfu_invalid_not_a_result(benchmark, report):
    measure = importlib.import_module("measure")
    too_low = benchmark.comparisons(report["paths"], {"float32": 1.0, "bfloat16": 1.0}, random_weights=False)
    for key in ("train_mfu", "train_over_fp32_peak", "inference_mfu"):
        row = too_low[key]
        assert row.ours == measure.INVALID_MFU and set(row.peers.values()) == {measure.INVALID_MFU}
        assert all(row.ratio(peer) is None for peer in row.peers)
    table = measure.render_table(list(too_low.values()), benchmark.PEER_NAMES)
    assert table.count(measure.INVALID_MFU) == 10 and "%" in table
    generous = benchmark.comparisons(report["paths"], {"float32": 1e18, "bfloat16": 1e18}, random_weights=False)
    assert 0 < generous["train_mfu"].ours < 1e-3, "a high enough peak gives a number again"


def test_table_header_names_the_machine(benchmark, report):
    cpu = importlib.import_module("machine").cpu_info()  # benchmarks/ is on sys.path (the benchmark fixture)
    assert report["system"]["cpu"]["model"] == cpu.model
    assert report["system"]["cpu"]["flags"]["amx"] == cpu.amx
    header = report["table"].split("\n\n| figure")[0]
    vnni = "yes" if "avx512_vnni" in cpu.flags else "no"
    assert f"CPU: {cpu.model} (avx512_vnni: {vnni}, AMX: {'yes' if cpu.amx else 'no'})" in header
    assert str(report["system"]["load_average"]) in header and str(report["load_average_after"]) in header
    assert f"ours {report['paths']['ours']['load_average_before'][0]}" in header, "each path's load is shown"
    assert "GPU: no GPU used" in header and "meaningless" not in header
    assert "mixed precision auto (tutorial float32, trainer float32, trainer_grouped float32, ours " in header
    shaped = {**report, "spec": {**report["spec"], "model_shape": "indobert-base"}}
    assert "Quality is meaningless for the indobert-base shape" in benchmark.markdown_header(shaped)
    random_rows = benchmark.comparisons(report["paths"], {"float32": 1e18, "bfloat16": 1e18}, random_weights=True)
    assert random_rows["val_f1"].figure.endswith("(random weights: meaningless)")


def test_indobert_base_shape(benchmark, tiny_model_dir, tmp_path):
    config = benchmark.shape_config("indobert-base")
    shape = (config.vocab_size, config.num_hidden_layers, config.hidden_size, config.num_attention_heads)
    assert shape == (50_000, 12, 768, 12)
    assert (config.intermediate_size, config.max_position_embeddings) == (3072, 512)
    assert [config.id2label[i] for i in range(config.num_labels)] == list(LABEL_NAMES)
    small = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    folder = benchmark.build_shaped_model("indobert-base", str(tiny_model_dir), tmp_path / "shaped", **small)
    saved = AutoConfig.from_pretrained(folder)
    assert (saved.vocab_size, saved.max_position_embeddings, saved.num_hidden_layers) == (50_000, 512, 1)
    assert saved.architectures == ["BertForSequenceClassification"] and saved.id2label[2] == "negative"
    assert len(AutoTokenizer.from_pretrained(folder)) <= saved.vocab_size
    with pytest.raises(ValueError, match="tokens but the indobert-base shape's vocabulary holds 10"):
        benchmark.build_shaped_model("indobert-base", str(tiny_model_dir), tmp_path / "too-small", vocab_size=10)
    with pytest.raises(ValueError, match="use one of"):
        benchmark.shape_config("indobert-huge")


def test_device_resolution(benchmark, monkeypatch, tiny_smsa_dir, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert benchmark.resolve_benchmark_device(None) == "cpu"
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--data_dir", str(tiny_smsa_dir), "--device", "cuda"])
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert benchmark.resolve_benchmark_device(None) == benchmark.resolve_benchmark_device("cuda") == "cuda"
    on_gpu = benchmark.parse_args(["--data_dir", str(tiny_smsa_dir)])
    assert (on_gpu.device, on_gpu.matmul_sizes) == ("cuda", [2048, 4096, 8192]), "a GPU needs large matmuls"
    on_cpu = benchmark.parse_args(["--data_dir", str(tiny_smsa_dir), "--device", "cpu"])
    assert (on_cpu.device, on_cpu.matmul_sizes) == ("cpu", [512, 1024, 2048])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--data_dir", str(tiny_smsa_dir), "--device", "cpu", "--mixed_precision", "fp16"])
    assert "fp16 needs a GPU" in capsys.readouterr().err


def test_child_env_hides_the_gpu_only_on_cpu(benchmark, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    cpu, cuda = benchmark.child_env("cpu"), benchmark.child_env("cuda")
    assert (cpu["CUDA_VISIBLE_DEVICES"], cpu["ACCELERATE_USE_CPU"]) == ("", "true")
    assert cuda["CUDA_VISIBLE_DEVICES"] == "1" and "ACCELERATE_USE_CPU" not in cuda
    assert str(BENCHMARKS.parent) in cuda["PYTHONPATH"].split(os.pathsep), "hf_indosent importable without install"
