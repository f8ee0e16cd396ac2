"""Measurement helpers: timer, per-phase peak RSS, matmul peak FLOP/s and the encoder FLOPs formula."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertModel

from hf_indosent.profiling import (
    PeakRSSSampler,
    Timer,
    current_rss_mib,
    encoder_flops_per_token,
    encoder_forward_flops,
    encoder_training_flops,
    measure_matmul_peak_flops,
)


def test_timer_measures_the_block():
    with Timer() as timer:
        time.sleep(0.05)
    assert 0.05 <= timer.seconds < 1


def test_peak_rss_sees_a_freed_allocation():
    size_mib = 128
    with PeakRSSSampler(interval_s=0.005) as rss:
        block = torch.ones(size_mib * 2**20 // 4)  # float32, every page written
        time.sleep(0.1)
        del block
    assert rss.peak_mib - rss.start_mib >= 0.8 * size_mib
    assert rss.end_mib < rss.peak_mib - 0.5 * size_mib, "the freed block must not count at the end"
    assert current_rss_mib() < rss.peak_mib


def test_flops_per_token_by_hand():
    config = SimpleNamespace(hidden_size=4, num_hidden_layers=2, intermediate_size=8)
    # per layer: 2 * (4*4*4 + 2*4*8) = 256 for the matmuls, 2*2*seq*4 = 160 for attention at seq 10
    assert encoder_flops_per_token(config, 10) == 2 * (256 + 160)
    # sequences of 10 and 3 tokens, plus pooler + 3-label classifier 2 * (4*4 + 4*3) = 56 per sequence
    forward = 10 * 832 + 3 * 2 * (256 + 48) + 2 * 56
    assert encoder_forward_flops(config, [10, 3], num_labels=3) == forward
    assert encoder_training_flops(config, [10, 3], num_labels=3) == 3 * forward


def test_flops_per_token_matches_a_real_bert_encoder():
    config = BertConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96)
    encoder = BertModel(config, add_pooling_layer=False).encoder
    matmul_weights = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    assert encoder_flops_per_token(config, seq_len=0) == 2 * matmul_weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_peak_is_positive(dtype):
    flops = measure_matmul_peak_flops(dtype, size=128, repeats=2, warmup=1)
    assert 0 < flops < 1e16
