"""benchmarks/measure.py and hf_indosent.modeling.devices: timers, memory peaks, matmul peak, FLOPs, MFU rule, the
table."""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertModel

from hf_indosent.modeling.devices import usable_cpu_cores

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def measure() -> ModuleType:
    """benchmarks/ is no package (its scripts import each other as siblings), so the folder goes on sys.path."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("measure")


@pytest.fixture
def fake_cuda(monkeypatch) -> list[str]:
    """Stand-ins for the torch.cuda calls the meters make; returns the calls in order."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: calls.append("peak") or 3 * 2**20)
    return calls


def test_timer_measures_the_block(measure):
    with measure.Timer() as timer:
        time.sleep(0.05)
    assert 0.05 <= timer.seconds < 1


def test_cuda_meters_synchronise_and_read_the_allocator_peak(measure, fake_cuda):
    with measure.DeviceMemoryPeak("cuda") as memory, measure.Timer("cuda"):
        assert fake_cuda == ["reset", "synchronize"], "peak reset, then the clock starts on an idle device"
    assert fake_cuda[2:] == ["synchronize", "synchronize", "peak"]
    assert memory.peak_mib == 3
    with measure.DeviceMemoryPeak("cpu") as cpu_memory, measure.Timer("cpu"):
        pass
    assert cpu_memory.peak_mib is None and len(fake_cuda) == 5, "the CPU path must not touch torch.cuda"


def test_peak_rss_sees_a_freed_allocation(measure):
    size_mib = 128
    with measure.PeakRSSSampler(interval_s=0.005) as rss:
        block = torch.ones(size_mib * 2**20 // 4)  # float32, every page written
        time.sleep(0.1)
        del block
    assert rss.peak_mib - rss.start_mib >= 0.8 * size_mib
    assert rss.end_mib < rss.peak_mib - 0.5 * size_mib, "the freed block must not count at the end"
    assert measure.process_max_rss_mib() >= rss.peak_mib * 0.95, "ru_maxrss is the whole process's peak"


def test_flops_per_token_by_hand(measure):
    config = SimpleNamespace(hidden_size=4, num_hidden_layers=2, intermediate_size=8)
    # per layer: 2 * (4*4*4 + 2*4*8) = 256 for the matmuls, 2*2*seq*4 = 160 for attention at seq 10
    assert measure.encoder_flops_per_token(config, 10) == 2 * (256 + 160)
    # sequences of 10 and 3 tokens, plus pooler + 3-label classifier 2 * (4*4 + 4*3) = 56 per sequence
    forward = 10 * 832 + 3 * 2 * (256 + 48) + 2 * 56
    assert measure.encoder_forward_flops(config, [10, 3], num_labels=3) == forward
    assert measure.encoder_training_flops(config, [10, 3], num_labels=3) == 3 * forward


def test_flops_per_token_matches_a_real_bert_encoder(measure):
    config = BertConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96)
    encoder = BertModel(config, add_pooling_layer=False).encoder
    matmul_weights = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    assert measure.encoder_flops_per_token(config, seq_len=0) == 2 * matmul_weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_peak_is_the_best_size_on_the_current_threads(measure, dtype, one_torch_thread):
    peak = measure.measure_matmul_peak(dtype, sizes=(32, 96), repeats=2, warmup_s=0.01, sample_s=0.002)
    assert (peak.dtype, peak.device, peak.threads) == (str(dtype).removeprefix("torch."), "cpu", 1)
    assert set(peak.by_size) == {32, 96} and peak.flops_per_s == max(peak.by_size.values())
    assert 1e6 < peak.flops_per_s < 1e14, "a 2-core CPU thread does between a MFLOP/s and 100 TFLOP/s"
    with pytest.raises(ValueError, match="sizes"):
        measure.measure_matmul_peak(dtype, sizes=())


def test_utilisation_above_the_peak_is_invalid_never_a_figure(measure):
    assert measure.utilisation(flops=50, seconds=1, peak_flops_per_s=100) == 0.5
    assert measure.utilisation(flops=100, seconds=1, peak_flops_per_s=100) == 1
    assert measure.utilisation(flops=170, seconds=1, peak_flops_per_s=100) == measure.INVALID_MFU
    with pytest.raises(ValueError, match="was any work timed"):
        measure.utilisation(flops=0, seconds=1, peak_flops_per_s=100)


def test_padding_fraction(measure):
    assert measure.padding_fraction(real_tokens=11, positions=16) == pytest.approx(5 / 16)
    assert measure.padding_fraction(real_tokens=0, positions=0) == 0


def test_table_ratios_are_ours_over_each_peer(measure):
    names = {"tutorial": "tutorial", "trainer": "Trainer", "pipeline": "pipeline()"}
    rows = [
        measure.Comparison("throughput", "samples/s", 10.0, {"tutorial": 4.0, "trainer": 5.0}, True),
        measure.Comparison("padding", "%", 0.05, {"tutorial": 0.5}, False),
        measure.Comparison("utilisation", "%", measure.INVALID_MFU, {"tutorial": 0.2, "trainer": 0.3}, True),
    ]
    assert (rows[0].ratio("tutorial"), rows[0].ratio("trainer"), rows[1].ratio("tutorial")) == (2.5, 2, 0.1)
    assert rows[2].ratio("tutorial") is None and rows[1].ratio("trainer") is None
    assert rows[0].as_dict()["ratios"] == {"tutorial": 2.5, "trainer": 2}
    table = measure.render_table(rows, names).splitlines()
    assert table[0] == "| figure | unit | tutorial | Trainer | hf_indosent | ours / tutorial | ours / Trainer |"
    assert table[2] == "| throughput | samples/s | 4.000 | 5.000 | 10.0 | 2.50x | 2.00x |"
    assert table[3] == "| padding | % | 50.0% |  | 5.0% | 0.10x |  |", "no Trainer figure: blank, not n/a"
    assert table[4] == "| utilisation | % | 20.0% | 30.0% | invalid (peak measured too low) | n/a | n/a |"


def test_cpu_info_reads_model_and_vnni_amx_flags(measure, tmp_path):
    cpu_info = measure.cpu_info  # benchmarks/machine.py, through measure, its user
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512_vnni amx_tile\n"
        "processor\t: 1\nmodel name\t: ignored second CPU\n",
        encoding="utf-8",
    )
    info = cpu_info(str(cpuinfo))
    assert info.model == "Intel(R) Xeon(R) Platinum 8480+"
    features = info.features()
    assert features["avx512_vnni"] and features["amx_tile"] and features["amx"]
    assert not features["avx512_bf16"] and not features["amx_bf16"]
    assert not cpu_info(str(tmp_path / "absent")).flags, "no /proc/cpuinfo: no flags, and no crash"


def test_usable_cores_follow_the_affinity_mask_not_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert usable_cpu_cores() == 1


def test_synchronize_waits_on_cuda_only(measure, fake_cuda):
    synchronize = measure.synchronize  # benchmarks/machine.py, through measure, its user
    synchronize("cpu")
    assert fake_cuda == []
    synchronize("cuda")
    assert fake_cuda == ["synchronize"]
