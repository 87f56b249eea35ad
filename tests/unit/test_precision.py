"""Choosing a graph per machine: CPU features, the ``auto`` rule, and the int8 saturation bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fruitstream.core.precision import (
    INT8_WEIGHT_BOUND,
    CpuFeatures,
    cpu_features,
    parse_cpuinfo,
)
from tests.helpers import ARM_DOTPROD, ARM_PLAIN, AVX2_ONLY, AVX512_NO_VNNI, VNNI, X86_HEAD


@pytest.mark.parametrize(
    ("text", "arch", "dot"),
    [
        (AVX2_ONLY, "x86_64", None),
        (AVX512_NO_VNNI, "x86_64", None),
        (VNNI, "x86_64", "avx512_vnni"),
        (X86_HEAD + "flags\t: avx2 avx_vnni\n", "x86_64", "avx_vnni"),
        (X86_HEAD + "flags\t: avx2 avx512_vnni amx_int8 amx_tile\n", "x86_64", "amx_int8"),
        (ARM_DOTPROD, "aarch64", "asimddp"),
        (ARM_PLAIN, "aarch64", None),
    ],
)
def test_cpuinfo_tells_whether_int8_has_a_32_bit_dot_product(
    text: str, arch: str, dot: str | None
) -> None:
    cpu = parse_cpuinfo(text, arch)
    assert cpu.int8_dot == dot
    assert cpu.arch in cpu.describe()
    if dot:
        assert dot in cpu.describe()


def test_this_machines_cpu_is_read_once() -> None:
    cpu = cpu_features()
    assert cpu is cpu_features()
    flags = Path("/proc/cpuinfo").read_text().split()
    assert ("avx512_vnni" in flags) == ("avx512_vnni" in cpu.flags)


def _vpmaddubsw(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x86's ``vpmaddubsw``: adjacent uint8 x int8 products added, saturated to int16."""
    pairs = a.astype(np.int32).reshape(-1, 2) * w.astype(np.int32).reshape(-1, 2)
    return np.clip(pairs.sum(axis=1), -32768, 32767)


def test_seven_bit_weights_cannot_saturate_a_16_bit_lane() -> None:
    # The worst pairs: both activations 255, both weights at the bound of their range.
    worst = np.array([255, 255], dtype=np.uint8)
    for w in (INT8_WEIGHT_BOUND, -INT8_WEIGHT_BOUND):
        exact = 2 * 255 * w
        assert _vpmaddubsw(worst, np.array([w, w], dtype=np.int8))[0] == exact
    # With 8-bit weights the same pair is clipped: the error the AVX2 path made.
    assert _vpmaddubsw(worst, np.array([-128, -128], dtype=np.int8))[0] == -32768 != 2 * 255 * -128


def test_cpu_features_describe_an_unknown_machine() -> None:
    cpu = CpuFeatures("riscv64", "riscv64", frozenset())
    assert cpu.int8_dot is None and "no SIMD flags read" in cpu.describe()
