"""The two ceilings a single-threaded float32 kernel is judged against: one large sgemm through the BLAS the
kernels call, and the core's FMA peak from a register-bound loop of independent vector FMAs (llvmlite, host ISA)."""
import time

import numpy as np

ACCUMULATORS = 16   # independent FMA chains: more than latency x ports (4 x 2) on current x86 cores


def best_seconds(run, repeats, clock=time.perf_counter):
    run()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        run()
        best = min(best, clock() - start)
    return best


def sgemm_gflops(size=2048, repeats=5, clock=time.perf_counter):
    """(GFLOP/s, name) of one large single-threaded sgemm through the BLAS the kernels call (numpy's bundled
    OpenBLAS, else scipy's), best of repeats: the practical ceiling of a GEMM-bound training step here."""
    from hpcrnn.kernels.common import load_blas
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if load_blas()[0]:
        out = np.empty_like(a)
        run, name = (lambda: np.matmul(a, b, out=out)), "numpy's OpenBLAS"
    else:
        from scipy.linalg.blas import sgemm
        run, name = (lambda: sgemm(1.0, a, b)), "scipy's BLAS"
    return 2 * size ** 3 / best_seconds(run, repeats, clock) / 1e9, name


def _fma_module(lanes):
    """LLVM IR of `float fma_loop(i64 n, float m, float a)`: ACCUMULATORS chains acc = fma(acc, m, a) of
    <lanes x float>, n iterations, all kept in registers; returns one lane of their sum (so nothing is dead)."""
    vec = f"<{lanes} x float>"
    fma = f"@llvm.fma.v{lanes}f32"
    zero = "zeroinitializer"
    lines = [f"declare {vec} {fma}({vec}, {vec}, {vec})",
             "define float @fma_loop(i64 %n, float %m, float %a) {",
             "entry:",
             f"  %m0 = insertelement {vec} undef, float %m, i32 0",
             f"  %mv = shufflevector {vec} %m0, {vec} undef, <{lanes} x i32> {zero}",
             f"  %a0 = insertelement {vec} undef, float %a, i32 0",
             f"  %av = shufflevector {vec} %a0, {vec} undef, <{lanes} x i32> {zero}",
             "  br label %loop",
             "loop:",
             "  %i = phi i64 [0, %entry], [%i1, %loop]"]
    lines += [f"  %c{k} = phi {vec} [{zero}, %entry], [%d{k}, %loop]" for k in range(ACCUMULATORS)]
    lines += [f"  %d{k} = call {vec} {fma}({vec} %c{k}, {vec} %mv, {vec} %av)" for k in range(ACCUMULATORS)]
    lines += ["  %i1 = add i64 %i, 1", "  %more = icmp slt i64 %i1, %n", "  br i1 %more, label %loop, label %done",
              "done:", f"  %s0 = fadd {vec} %d0, %d1"]
    lines += [f"  %s{k - 1} = fadd {vec} %s{k - 2}, %d{k}" for k in range(2, ACCUMULATORS)]
    lines += [f"  %r = extractelement {vec} %s{ACCUMULATORS - 2}, i32 0", "  ret float %r", "}"]
    return "\n".join(lines)


def fma_peak_gflops(isa, iterations=20_000_000, repeats=5, clock=time.perf_counter):
    """float32 GFLOP/s of the register-bound FMA loop at the CPU's widest ISA ("AVX-512": 16 lanes, "AVX2"/"AVX":
    8, else 4), compiled for the host CPU by llvmlite (numba's LLVM), best of repeats."""
    import ctypes
    import llvmlite.binding as llvm
    for init in ("initialize", "initialize_native_target", "initialize_native_asmprinter"):
        try:
            getattr(llvm, init)()
        except (AttributeError, RuntimeError):
            pass   # newer llvmlite initialises by itself and refuses the old call
    lanes = {"AVX-512": 16, "AVX2": 8, "AVX": 8}.get(isa, 4)
    module = llvm.parse_assembly(_fma_module(lanes))
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                           features=llvm.get_host_cpu_features().flatten(), opt=3)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    loop = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)(
        engine.get_function_address("fma_loop"))
    seconds = best_seconds(lambda: loop(iterations, 0.999999, 1e-6), repeats, clock)
    return 2 * lanes * ACCUMULATORS * iterations / seconds / 1e9
