"""Shared kernel pieces: fast tanh/sigmoid, a strided BLAS GEMM callable from @njit code, and the
input-projection / weight-gradient GEMMs that every cell runs once over all time steps.

Legend: T = time steps, B = batch, I = layer input size, H = hidden size, G = gate count (GH = G*H rows).
Arrays are row-major; a "2-D view" may be a column block of a wider buffer (rows contiguous, any row stride).

ROW_VIEWS: the cells' row kernels (`_step(Hs, ..., t, b)`) take whole arrays and the row's (t, b), and slice
their rows themselves. A row view made in the caller's loop for each call costs two atomic reference-count
updates (numba cannot prune them across the call): with 5-8 views a row they were ~35% of a training step at
B,T,F,H = 16,1000,4,32 (perf); made inside the row kernel numba prunes them (gate loops 1.4-1.65x faster, H <= 64).
"""
import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.np.linalg import _BLAS, ensure_blas

# fastmath lets LLVM reassociate and vectorise; error_model="numpy" drops the per-division zero check
# that otherwise blocks vectorisation of every loop containing a division; nogil lets the loader's prefetch
# thread read the next batches while a kernel runs.
JIT_OPTIONS = {"fastmath": True, "error_model": "numpy", "nogil": True}


def _file_digest(path):
    import hashlib
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


_THIS_FILE_DIGEST = _file_digest(__file__)


def kernel(function):
    """njit(cache=True) with JIT_OPTIONS, whose cache entries are stale when this module changes too: numba
    stamps a cached kernel with its own file only, but every kernel inlines gemm, tanh and sigmoid from here.
    (Uses numba's cache-file stamp, present in numba 0.59-0.68; without it the kernel still works, cached as
    numba does by default.)"""
    dispatcher = njit(cache=True, **JIT_OPTIONS)(function)
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = (cache_file._source_stamp, _THIS_FILE_DIGEST)
    return dispatcher


# ---- activations -----------------------------------------------------------------------------------
def tanh(x):
    """tanh: a rational approximation (~1e-7 relative, branch-free, vectorises) for float32, exact for float64."""
    return np.tanh(x)


def _tanh_f32(x):
    # Eigen's float32 rational approximation (odd degree-13 / even degree-6); |error| <= a few ulp.
    x = min(max(x, np.float32(-9.0)), np.float32(9.0))
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    # Clamped: the reciprocal fastmath may use can overshoot 1 by an ulp, and |tanh| <= 1 keeps 1 - tanh^2 >= 0.
    return min(max(x * p / q, np.float32(-1.0)), np.float32(1.0))


@overload(tanh, jit_options=JIT_OPTIONS)
def _tanh_overload(x):
    if x == types.float32:
        return _tanh_f32
    return lambda x: np.tanh(x)


def sigmoid(x):
    """Logistic function as 0.5 + 0.5*tanh(x/2), so it shares tanh's fast float32 path."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


@overload(sigmoid, jit_options=JIT_OPTIONS)
def _sigmoid_overload(x):
    half = np.float32(0.5) if x == types.float32 else np.float64(0.5)

    def impl(x):
        return half + half * tanh(half * x)
    return impl


# ---- GEMM --------------------------------------------------------------------------------------------
_LOADED_BLAS = []   # [(symbols, integer width, library path)] once load_blas() ran


def load_blas():
    """Finds and registers the BLAS the kernels call, once per process; returns ({dtype: symbol}, int width).

    Must run before a kernel is compiled or loaded from numba's cache (the cached code calls the registered
    symbol): hpcrnn.Model does it; code calling kernels directly calls it first."""
    if not _LOADED_BLAS:
        _LOADED_BLAS.append(_numpy_cblas())
    return _LOADED_BLAS[0][:2]


def blas_name():
    """Which BLAS the kernels call, in words."""
    return "numpy's bundled OpenBLAS (CBLAS)" if load_blas()[0] else "scipy's BLAS (numba binding)"


def blas_library():
    """The file of the BLAS the kernels call (numpy's bundled OpenBLAS, else scipy's), or None when unknown."""
    import glob
    import os
    load_blas()
    if _LOADED_BLAS[0][2]:
        return _LOADED_BLAS[0][2]
    try:
        import scipy
    except ImportError:
        return None
    found = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs",
                                          "libscipy_openblas*.so*")))
    return found[0] if found else None


def _numpy_cblas():
    """{dtype: symbol} of the CBLAS sgemm/dgemm of the OpenBLAS bundled with numpy's wheels, registered with
    LLVM under stable names, plus the integer width and the library's path; ({}, 0, None) where numpy has no
    such library or HPCRNN_KERNEL_BLAS=scipy (then gemm uses scipy's BLAS through numba's binding; compiled kernels keep the
    BLAS they were compiled with, so switching needs a fresh NUMBA_CACHE_DIR). numpy's OpenBLAS (0.3.31
    here) made training steps 8-20% faster than scipy's (0.3.30): bench/kernels.py, docs/kernels.md."""
    import ctypes
    import glob
    import os
    import llvmlite.binding as llvm
    if os.environ.get("HPCRNN_KERNEL_BLAS", "numpy") == "scipy":
        return {}, 0, None
    folder = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(glob.glob(os.path.join(folder, "numpy.libs", "libscipy_openblas*.so*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix, width in (("64_", 64), ("", 32)):
            names = {"f4": f"scipy_cblas_sgemm{suffix}", "f8": f"scipy_cblas_dgemm{suffix}"}
            if all(hasattr(library, name) for name in names.values()):
                symbols = {}
                for kind, name in names.items():
                    address = ctypes.cast(getattr(library, name), ctypes.c_void_p).value
                    llvm.add_symbol(f"hpcrnn_cblas_{kind}gemm", address)
                    symbols[kind] = f"hpcrnn_cblas_{kind}gemm"
                return symbols, width, path
    return {}, 0, None


def _cblas_intrinsic(symbol, kind, int_bits):
    """A numba intrinsic calling the registered CBLAS ?gemm: (trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
    beta, c, ldc), row-major, integer arguments and addresses as int64, alpha/beta as the element type."""
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic
    real = types.float32 if kind == "f4" else types.float64

    @intrinsic
    def call(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        signature = types.void(types.int64, types.int64, types.int64, types.int64, types.int64, real, types.int64,
                               types.int64, types.int64, types.int64, real, types.int64, types.int64)

        def codegen(context, builder, sig, args):
            enum, size = ir.IntType(32), ir.IntType(int_bits)
            value = ir.FloatType() if kind == "f4" else ir.DoubleType()
            pointer = cgutils.voidptr_t
            function_type = ir.FunctionType(ir.VoidType(), [enum, enum, enum, size, size, size, value, pointer, size,
                                                            pointer, size, value, pointer, size])
            function = cgutils.get_or_insert_function(builder.module, function_type, symbol)
            ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = args
            as_size = (lambda v: v) if int_bits == 64 else (lambda v: builder.trunc(v, size))
            builder.call(function, [ir.Constant(enum, 101), builder.trunc(ta, enum), builder.trunc(tb, enum),
                                    as_size(m), as_size(n), as_size(k), alpha, builder.inttoptr(a, pointer),
                                    as_size(lda), builder.inttoptr(b, pointer), as_size(ldb), beta,
                                    builder.inttoptr(c, pointer), as_size(ldc)])
        return signature, codegen
    return call


_CBLAS_CALLS = {}   # kind -> intrinsic, made on first use


def _cblas_call(kind):
    """The intrinsic calling the registered CBLAS ?gemm of `kind` ("f4", "f8"), or None without one."""
    symbols, int_bits = load_blas()
    if kind in symbols and kind not in _CBLAS_CALLS:
        _CBLAS_CALLS[kind] = _cblas_intrinsic(symbols[kind], kind, int_bits)
    return _CBLAS_CALLS.get(kind)


def gemm(C, A, B, trans_a, trans_b, beta):
    """C = op(A) @ op(B) + beta*C, op = transpose where asked, beta 0 or 1: numpy's bundled OpenBLAS through
    its CBLAS interface where there is one, else scipy's BLAS through numba's binding. 2-D views whose rows
    are contiguous, any row stride; C writable."""
    op_a = A.T if trans_a else A
    op_b = B.T if trans_b else B
    C[...] = op_a @ op_b + beta * C


@njit(inline="always")
def _leading_dim(X):
    rows, cols = X.shape
    if cols > 1 and X.strides[1] != X.itemsize:
        raise ValueError("gemm: rows of every operand must be contiguous")
    return max(X.strides[0] // X.itemsize if rows > 1 else cols, cols, 1)


@njit(inline="always")
def _gemm_sizes(C, A, trans_a, beta):
    """(m, n, k) of C = op(A) op(B) + beta*C, with k = 0 when no multiply is left to do (C empty, or k = 0
    and C already scaled by beta)."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return m, n, 0
    if beta != 0.0 and beta != 1.0:
        raise ValueError("gemm: beta must be 0 or 1")
    if k == 0:
        C *= beta
    return m, n, k


@overload(gemm)
def _gemm_overload(C, A, B, trans_a, trans_b, beta):
    kind = "f4" if C.dtype == types.float32 else "f8"
    cblas = _cblas_call(kind)
    if cblas is not None:
        real = np.float32 if kind == "f4" else np.float64

        def impl_cblas(C, A, B, trans_a, trans_b, beta):
            m, n, k = _gemm_sizes(C, A, trans_a, beta)
            if k == 0:
                return
            cblas(112 if trans_a else 111, 112 if trans_b else 111, m, n, k, real(1.0), A.ctypes.data,
                  _leading_dim(A), B.ctypes.data, _leading_dim(B), real(beta), C.ctypes.data, _leading_dim(C))
        return impl_cblas
    ensure_blas()  # numba's check, at compile time, that scipy's BLAS (which np.dot in @njit uses too) imports
    xxgemm = _BLAS().numba_xxgemm(C.dtype)
    kind = ord("s") if C.dtype == types.float32 else ord("d")
    one_zero = np.array([1.0, 0.0], np.float32 if C.dtype == types.float32 else np.float64)  # a constant

    def impl(C, A, B, trans_a, trans_b, beta):
        m, n, k = _gemm_sizes(C, A, trans_a, beta)
        if k == 0:
            return
        # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap operands, keep the flags.
        xxgemm(kind, ord("T") if trans_b else ord("N"), ord("T") if trans_a else ord("N"), n, m, k,
               one_zero[:1].ctypes, B.ctypes, _leading_dim(B), A.ctypes, _leading_dim(A),
               (one_zero[:1] if beta == 1.0 else one_zero[1:]).ctypes, C.ctypes, _leading_dim(C))
    return impl


# ---- whole-sequence GEMMs shared by the cells ---------------------------------------------------------
@kernel
def project_inputs(A, X, W_ih, b, b_extra):
    """A[t*B+b] = W_ih @ X[t*B+b] + b (+ b_extra on the first len(b_extra) gate rows): one GEMM for all steps.
    A [TB, GH] (may be a column block), X [TB, I], W_ih [GH, I], b [GH], b_extra [<=GH]."""
    rows, width = A.shape
    n_extra = b_extra.shape[0]
    for r in range(rows):
        a = A[r]
        for j in range(width):
            a[j] = b[j]
        for j in range(n_extra):
            a[j] += b_extra[j]
    gemm(A, X, W_ih, False, True, 1.0)


@kernel
def add_weight_grads(dW, db, dG, Z):
    """dW += dG^T @ Z, computed as (Z^T dG)^T (the faster orientation, see layer_grads), and db += column sums
    of dG (skipped when db is empty). dW [GH, K], db [GH] or [0], dG [TB, GH] (may be a column block), Z [TB, K]."""
    dWT = np.empty((Z.shape[1], dG.shape[1]), Z.dtype)
    gemm(dWT, Z, dG, True, False, 0.0)
    add_transposed(dW, dWT, 0)
    if db.shape[0] == 0:
        return
    rows, width = dG.shape
    for r in range(rows):
        g = dG[r]
        for j in range(width):
            db[j] += g[j]


@kernel
def freeze_row(h, h_prev):
    """Forward of a step past a sequence's length: the state is carried unchanged. Rows [H]."""
    for j in range(h.shape[0]):
        h[j] = h_prev[j]


@kernel
def freeze_row_backward(dg, dh_prev, dh, dh_above):
    """Backward of freeze_row: no gate gradient, the state's gradient passes straight through.
    dg [GH] (zeroed), dh_prev [H] = dh + dh_above."""
    for j in range(dg.shape[0]):
        dg[j] = 0.0
    for j in range(dh.shape[0]):
        dh_prev[j] = dh[j] + dh_above[j]


@kernel
def add_transposed(dst, src, first):
    """dst[g, j] += src[first + j, g] for every g < dst.shape[0], j < dst.shape[1], in blocks of 16 rows of dst
    (so both sides stay in cache). dst [R, C] (rows contiguous), src [>= first + C, R]."""
    rows, cols = dst.shape
    for g0 in range(0, rows, 16):
        g1 = min(g0 + 16, rows)
        for j in range(cols):
            s = src[first + j]
            for g in range(g0, g1):
                dst[g, j] += s[g]


@kernel
def layer_grads(dX, dW_ih, dW_hh, db_ih, db_hh, dG, X, H_prev, W_ih):
    """After the BPTT loop, for cells whose every gate row sees x and h alike (lstm, rnn): ADDS dW_ih += dG^T X,
    dW_hh += dG^T H_prev, db_ih (and db_hh when not empty) += column sums of dG, all from ONE GEMM
    [X | H_prev | 1]^T dG (this orientation, with the long gate dimension as the GEMM's columns, ran up to
    1.3x faster than dG^T [X | H_prev | 1] for H <= 64 and as fast above); then dX += dG W_ih (skipped when dX
    has no rows). dG [TB, GH], X [TB, I], H_prev [TB, H] (the state each step started from), dX [TB, I] or
    [0, I]."""
    TB, I = X.shape
    H, GH = H_prev.shape[1], dG.shape[1]
    Z = np.empty((TB, I + H + 1), X.dtype)
    for r in range(TB):
        z, x, h = Z[r], X[r], H_prev[r]
        for j in range(I):
            z[j] = x[j]
        for j in range(H):
            z[I + j] = h[j]
        z[I + H] = 1.0
    dWT = np.empty((I + H + 1, GH), X.dtype)
    gemm(dWT, Z, dG, True, False, 0.0)
    add_transposed(dW_ih, dWT, 0)
    add_transposed(dW_hh, dWT, I)
    bias = dWT[I + H]
    for g in range(GH):
        db_ih[g] += bias[g]
    if db_hh.shape[0] > 0:
        for g in range(GH):
            db_hh[g] += bias[g]
    if dX.shape[0] > 0:
        gemm(dX, dG, W_ih, False, False, 1.0)
