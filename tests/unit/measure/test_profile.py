"""Profiler op names fall into the report's categories (moved from tests/e2e/test_profile.py, which
keeps the profiled run and TensorBoard)."""
from __future__ import annotations

from bench.measure.profile import categorize


def test_categorize():
    assert categorize("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert categorize("aten::addmm") == "matmul"
    assert categorize("aten::mkldnn_convolution") == "conv"
    assert categorize("aten::native_layer_norm") == "norm"
    assert categorize("aten::add_") == "elementwise"
    assert categorize("gloo:all_reduce") == "communication"
