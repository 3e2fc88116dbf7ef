"""The BLAS core-type check: which ISA a CPU and an OpenBLAS core type have, and when the pin warning is due
(given inputs, no environment changes); plus the core type of the BLAS the kernels really call."""
import os

import pytest

from hpcrnn.kernels import blas_core

ZEN5_FLAGS = {"sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}


@pytest.mark.parametrize("flags, isa", [
    (ZEN5_FLAGS, "AVX-512"),
    ({"sse2", "avx", "avx2", "fma"}, "AVX2"),
    ({"sse2", "avx", "avx2"}, "AVX"),          # AVX2 without FMA: OpenBLAS's Haswell kernels need both
    ({"sse2", "avx"}, "AVX"),
    ({"sse2"}, "SSE2"),
    (set(), "SSE2"),
])
def test_cpu_isa_is_the_widest_vector_isa(flags, isa):
    assert blas_core.cpu_isa(flags) == isa


@pytest.mark.parametrize("corename, isa", [("SkylakeX", "AVX-512"), ("COOPERLAKE", "AVX-512"),
                                           ("Haswell", "AVX2"), ("Zen", "AVX2"), ("Sandybridge", "AVX"),
                                           ("Prescott", "SSE2"), ("Atom", None), ("", None), (None, None)])
def test_core_isa_of_openblas_core_types(corename, isa):
    assert blas_core.core_isa(corename) == isa


def test_haswell_pinned_on_avx512_warns_naming_the_variable_and_the_cost():
    warning = blas_core.pin_warning("Haswell", "AVX-512", {"OPENBLAS_CORETYPE": "Haswell"})
    assert warning.startswith("warning: ") and "\n" not in warning
    assert "OPENBLAS_CORETYPE=Haswell" in warning and "unset OPENBLAS_CORETYPE" in warning
    assert "Haswell (AVX2)" in warning and "AVX-512 CPU" in warning
    assert "GFLOP/s" in warning   # the measured cost


def test_core_below_the_cpu_without_a_pin_says_openblas_did_not_detect_it():
    warning = blas_core.pin_warning("Haswell", "AVX-512", {"OPENBLAS_L2_SIZE": "512"})
    assert "does not detect" in warning and "OPENBLAS_CORETYPE" not in warning


@pytest.mark.parametrize("corename, isa, environ", [
    ("SkylakeX", "AVX-512", {}),                                 # its own detection on an AVX-512 core
    ("SkylakeX", "AVX-512", {"OPENBLAS_CORETYPE": "SkylakeX"}),   # pinned, but to the widest kernels
    ("Haswell", "AVX2", {"OPENBLAS_CORETYPE": "Haswell"}),         # pinned to what the CPU has
    ("Zen", "AVX2", {}),
    ("Atom", "AVX-512", {}),                                      # a core type not known here: no guess
    (None, "AVX-512", {"OPENBLAS_CORETYPE": "Haswell"}),          # no OpenBLAS (scipy's reference BLAS, ...)
])
def test_no_warning_when_the_kernels_match_the_cpu_or_are_unknown(corename, isa, environ):
    assert blas_core.pin_warning(corename, isa, environ) is None


def test_the_kernels_blas_reports_a_core_type():
    info, warning = blas_core.blas_core()
    assert info["cpu_isa"] in blas_core.ISA_ORDER
    assert info["kernel_blas_core"] != "unknown" and blas_core.core_isa(info["kernel_blas_core"]) is not None
    assert warning == blas_core.pin_warning(info["kernel_blas_core"], info["cpu_isa"], os.environ)
