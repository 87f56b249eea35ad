"""Which graph of a bundle runs on this machine: the CPU's int8 features and the ``auto`` rule.

ONNX Runtime's int8 convolutions multiply uint8 activations by int8 weights. CPUs with a
32-bit int8 dot product (x86 VNNI or AMX, ARM's dot-product extension) add those products
straight into 32-bit sums, and int8 runs 1.5x faster than fp32 there. x86 CPUs without one
(AVX2, or AVX-512 without VNNI) use ``vpmaddubsw``, which adds pairs of products into 16-bit
lanes: slower than fp32, and with 8-bit weights the pairs can saturate (see
``INT8_WEIGHT_BOUND``). So ``auto`` runs int8 only on a CPU with such an instruction, and only
when the bundle's int8 figures are within ``MAX_INT8_LOSS`` of its fp32 figures; elsewhere fp32.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fruitstream.model.bundle import ModelBundle, default_bundle_dir

# x86 flags (as /proc/cpuinfo names them) and ARM features that give 32-bit int8 dot products.
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp")
# Flags worth printing next to figures: what decides which kernels ONNX Runtime runs.
SHOWN_FLAGS = ("avx2", "avx512f", "avx512bw", *INT8_DOT_FLAGS, "avx512_bf16", "asimd")
# A pair of uint8 x int8 products fits a signed 16-bit lane when 2 * 255 * |w| <= 32767, that
# is |w| <= 64: the 7-bit weights ("s7") of ``fruitstream train`` stay in [-64, 64].
INT8_WEIGHT_BOUND = 64
# ``auto`` takes int8 only when no held-out set loses more top-1 than this against fp32.
MAX_INT8_LOSS = 0.005


@dataclass(frozen=True)
class CpuFeatures:
    """What matters of this CPU for choosing a graph."""

    arch: str
    model: str
    flags: frozenset[str]

    @property
    def int8_dot(self) -> str | None:
        """The instruction set that gives int8 32-bit dot products here, if any."""
        return next((f for f in INT8_DOT_FLAGS if f in self.flags), None)

    def describe(self) -> str:
        """One line for benchmarks and cards: model, architecture and the flags that matter."""
        shown = [f for f in SHOWN_FLAGS if f in self.flags]
        return f"{self.model} ({self.arch}; {' '.join(shown) or 'no SIMD flags read'})"


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU, read once per process."""
    return _from_cpuinfo(Path("/proc/cpuinfo")) or _from_sysctl() or _unknown()


def _unknown() -> CpuFeatures:
    return CpuFeatures(
        platform.machine() or "unknown", platform.processor() or "unknown", frozenset()
    )


def parse_cpuinfo(text: str, arch: str) -> CpuFeatures:
    """Linux's /proc/cpuinfo: x86 lists ``flags``, ARM ``Features``; the first CPU speaks."""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    return CpuFeatures(arch, model or arch, frozenset(flags))


def _from_cpuinfo(path: Path) -> CpuFeatures | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return parse_cpuinfo(text, platform.machine())


def _from_sysctl() -> CpuFeatures | None:
    """macOS: Apple silicon names its dot-product extension ``hw.optional.arm.FEAT_DotProd``."""
    if platform.system() != "Darwin":
        return None
    try:
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string", "hw.optional.arm.FEAT_DotProd"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    flags = {"asimd"} | ({"asimddp"} if len(out) > 1 and out[1].strip() == "1" else set())
    return CpuFeatures(platform.machine(), out[0].strip() or "Apple", frozenset(flags))


@dataclass(frozen=True)
class PrecisionChoice:
    """The graph to run and why, in words for ``status``, ``bench``, the sidebar and /readyz."""

    precision: str
    reason: str


def int8_loss(bundle: ModelBundle) -> tuple[float, str] | None:
    """The largest top-1 loss of the int8 graph against fp32 over the held-out sets the
    bundle records, and which set; None when the bundle records no such pair of figures."""
    fp32 = bundle.metrics.get("fp32", {})
    losses = [
        (float(fp32[name]["accuracy"]) - float(figures["accuracy"]), name)
        for name, figures in bundle.metrics.items()
        if isinstance(figures, dict) and "accuracy" in figures and "accuracy" in fp32.get(name, {})
    ]
    return max(losses) if losses else None


def choose_precision(
    bundle: ModelBundle, requested: str | None, cpu: CpuFeatures | None = None
) -> PrecisionChoice:
    """An explicit ``int8`` or ``fp32`` is obeyed; ``auto`` (or nothing) applies the rule above."""
    if requested in ("int8", "fp32"):
        return PrecisionChoice(requested, f"{requested} asked for (FRUITSTREAM_MODEL_PRECISION)")
    if not bundle.has_precision("int8"):
        return PrecisionChoice("fp32", "auto: the bundle ships no int8 graph")
    cpu = cpu or cpu_features()
    if cpu.int8_dot is None:
        return PrecisionChoice(
            "fp32",
            "auto: this CPU has no int8 dot product (VNNI, AMX or ARM dotprod), so int8 runs"
            " slower than fp32 here",
        )
    loss = int8_loss(bundle)
    if loss is None:
        return PrecisionChoice(
            "fp32", "auto: the bundle records no int8 and fp32 figures to compare"
        )
    points, worst = loss
    if points > MAX_INT8_LOSS:
        return PrecisionChoice(
            "fp32",
            f"auto: int8 loses {points * 100:.1f} points of top-1 on {worst} against fp32",
        )
    return PrecisionChoice(
        "int8",
        f"auto: this CPU has {cpu.int8_dot} and int8 is within {MAX_INT8_LOSS * 100:.1f}"
        f" point of fp32 on every held-out set",
    )


def load_bundle(model_dir: str | Path | None, precision: str | None) -> ModelBundle:
    """The model bundle at ``model_dir`` (the shipped one when None), set to run the graph
    chosen for this machine: the given precision, where ``auto`` decides by the CPU and the
    bundle's figures."""
    bundle = ModelBundle.load(Path(model_dir or default_bundle_dir()).resolve())
    choice = choose_precision(bundle, precision)
    return bundle.with_precision(choice.precision, choice.reason)
