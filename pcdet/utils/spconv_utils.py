"""The one place where the project imports spconv, plus two runtime fixes for spconv on CPU.

Everything else in ``pcdet`` imports sparse convolution from here::

    from pcdet.utils.spconv_utils import spconv, replace_feature

Importing this module installs the two fixes below (idempotent: importing or calling
:func:`install` again changes nothing). Nothing on disk is modified; the fixes replace
attributes of the already imported ``spconv.pytorch`` modules at runtime.

1. Stream shim (CPU backward crash)
-----------------------------------
``spconv.pytorch.cppcore.get_current_stream()`` returns
``torch.cuda.current_stream().cuda_stream``. Several functions of ``spconv.pytorch.ops`` call it
even when every tensor is on the CPU; ``ops.indice_conv_backward`` does so unconditionally on its
native (gather / mm / scatter) path. On a CPU-only torch build that call raises
``AssertionError: Torch not compiled with CUDA enabled``, so every backward pass through a
sparse convolution fails. The CPU code path ignores the stream value, so the shim returns ``0``
whenever ``torch.cuda.is_available()`` is false and otherwise defers to spconv's own function
(CUDA behaviour unchanged). ``get_current_stream`` is bound by name in several spconv modules
(``cppcore``, ``ops``, ``hash``, ``utils`` and the quantization modules), so the shim replaces
the name in every loaded ``spconv.*`` module that still refers to the original function.

2. Single-thread guard for CPU sparse convolutions (upstream spconv issue #679)
-------------------------------------------------------------------------------
With more than one torch thread, spconv's CPU convolutions return wrong values at random
(spconv issue #679, "SubMConv3d output varies with the same input"; reported for CUDA and CPU).
On the CPU path ``ops.indice_conv`` and ``ops.indice_conv_backward`` gather input rows per kernel
offset, multiply with ``torch.mm`` and scatter-add the products into the output
(``SpconvOps.scatter_add_cpu``). That scatter-add runs as an OpenMP parallel loop whose row
pointers are shared between the threads, so with two or more threads a thread can add its row
into the row chosen by another thread. The output features (forward) and the input-feature
gradient (backward) come out wrong at random; the weight gradient, which only gathers, is not
affected. ``tools/diagnostics/spconv_thread_race.py`` measures the error.

Which thread count governs that loop: the spconv wheel ships its own OpenMP runtime
(``spconv.libs/libgomp-*.so``), but when torch is loaded first (the normal case, and what this
module does) spconv's OpenMP calls bind to torch's runtime, so ``torch.set_num_threads(1)``
makes the loop serial and the results exact. ``OMP_NUM_THREADS=1`` alone does not help once
the program calls ``torch.set_num_threads(n)`` with ``n > 1``. If ``spconv.core_cc`` is
imported before torch, spconv binds to its bundled runtime instead, which torch's setting does
not reach; for that case the guard also pins the bundled runtime (when it is loaded) to one
thread through its ``omp_set_num_threads``.

The guard wraps the functions of ``spconv.pytorch.ops`` that do the arithmetic (listed in
:data:`GUARDED_OPS`): ``indice_conv``, ``indice_conv_backward``, ``fused_indice_conv``,
``implicit_gemm``, ``implicit_gemm_backward``, ``get_indice_pairs``,
``get_indice_pairs_implicit_gemm``, ``indice_maxpool``, ``indice_maxpool_backward`` and the
implicit-gemm pooling functions (those present in the installed spconv). spconv's autograd
functions (``spconv.pytorch.functional``) and modules (``conv``, ``pool``) look these up as
attributes of the ``ops`` module at call time, so forward *and* backward go through the wrapper;
guarding only ``Module.forward`` would miss the backward pass, which autograd runs later.

The wrapper looks at the first tensor argument. If it is a CPU tensor and the guard is enabled,
it sets one thread (torch's count, and the bundled OpenMP runtime's when loaded) for the
duration of the call whenever either is above one, and restores the caller's counts in a
``finally`` block (also when the op raises). Tensors on any other device (CUDA) go straight to
spconv's function, untouched. The cost is a device check and a few ``get/set`` thread-count
calls, about a microsecond per op call.

Limitations: torch's thread count is process-wide, so another Python thread running torch ops at
the same moment also runs single-threaded while a CPU sparse op is in flight. Code that calls
``SpconvOps.scatter_add_cpu`` directly, bypassing ``spconv.pytorch.ops``, is not guarded.

3. One log notice silenced
--------------------------
spconv's modules call ``torch.fx._symbolic_trace.is_fx_tracing()`` on every forward; this torch
version logs a deprecation warning about that function (through the ``torch.fx._symbolic_trace``
logger) the first time in every process, which would appear in every training log. A logging filter
drops exactly that message (nothing else of that logger, no warning of any other source).

Public names
------------
``spconv``                       the ``spconv.pytorch`` module
``replace_feature(out, feats)``  ``out.replace_feature(feats)`` (spconv 2.x API)
``to_dense(x)``                  the dense (B, C, D, H, W) tensor of a 3-D ``SparseConvTensor``
``install()``                    installs both fixes (done on import; idempotent)
``is_cpu_thread_guard_active()`` True when the thread guard is installed and not disabled
``is_stream_shim_installed()``   True when the stream shim is installed
``cpu_thread_guard_disabled()``  context manager that turns the thread guard off temporarily
                                 (diagnostics only: it brings the race back)
``GUARDED_OPS``                  names of the wrapped ``spconv.pytorch.ops`` functions
"""
import contextlib
import ctypes
import functools
import logging
import os
import sys
import threading
from pathlib import Path

import torch

import spconv.pytorch as spconv
from spconv.pytorch import cppcore as _spconv_cppcore
from spconv.pytorch import ops as _spconv_ops

__all__ = [
    "spconv",
    "replace_feature",
    "sparse_precision",
    "install",
    "is_cpu_thread_guard_active",
    "is_stream_shim_installed",
    "cpu_thread_guard_disabled",
    "GUARDED_OPS",
]

#: Functions of ``spconv.pytorch.ops`` that run under the single-thread guard on CPU.
#: Names missing from the installed spconv version are skipped.
GUARDED_OPS = (
    "indice_conv",
    "indice_conv_backward",
    "fused_indice_conv",
    "implicit_gemm",
    "implicit_gemm_backward",
    "get_indice_pairs",
    "get_indice_pairs_implicit_gemm",
    "indice_maxpool",
    "indice_maxpool_backward",
    "indice_maxpool_implicit_gemm",
    "indice_maxpool_implicit_gemm_backward",
    "indice_avgpool_implicit_gemm",
    "indice_avgpool_implicit_gemm_backward",
)

_MARK = "_pcdet_spconv_patch"  # attribute set on every replacement function
_install_lock = threading.Lock()
_guard_enabled = True


def replace_feature(out, new_features):
    """Return ``out`` (a ``SparseConvTensor``) with its features replaced by ``new_features``."""
    return out.replace_feature(new_features)


@contextlib.contextmanager
def sparse_precision(features):
    """``with sparse_precision(batch_dict["voxel_features"]) as feats:`` runs a sparse network with autocast
    off on ``features``' device and yields ``features`` in float32 when they are half precision (as they
    are). spconv 2.3 has no bfloat16 kernels (its tensor conversion, ``cppcore.torch_tensor_to_tv``, knows
    no ``torch.bfloat16`` and raises ``KeyError``), and under CPU bf16 autocast the ops between its
    convolutions (BatchNorm, feature concatenation) hand it bf16 features. Sparse encoders therefore run
    in full precision under every ``MIXED_PRECISION``; the dense layers after them keep the training
    step's autocast."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        yield features.float() if features.dtype in (torch.float16, torch.bfloat16) else features


def to_dense(x):
    """``x`` (a ``SparseConvTensor`` of 3 spatial dims) as a dense (B, C, D, H, W) tensor, zeros at the
    inactive sites: what spconv's ``SparseConvTensor.dense()`` returns, written with a tuple index
    (spconv 2.3's ``dense()`` indexes with a list of slices, which torch deprecates and warns about
    on every call)."""
    d, h, w = (int(v) for v in x.spatial_shape)
    out = x.features.new_zeros((int(x.batch_size), d, h, w, x.features.shape[1]))
    idx = x.indices.long()
    out[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = x.features
    return out.permute(0, 4, 1, 2, 3).contiguous()


# --------------------------------------------------------------------------- stream shim

def _make_stream_shim(original):
    def get_current_stream():
        if not torch.cuda.is_available():
            return 0
        return original()

    get_current_stream.__doc__ = (
        "spconv's get_current_stream, returning 0 when CUDA is unavailable "
        "(installed by pcdet.utils.spconv_utils)."
    )
    get_current_stream.__wrapped__ = original
    setattr(get_current_stream, _MARK, "stream_shim")
    return get_current_stream


def _install_stream_shim():
    original = _spconv_cppcore.get_current_stream
    if getattr(original, _MARK, None) == "stream_shim":
        shim, original = original, original.__wrapped__
    else:
        shim = _make_stream_shim(original)
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "spconv" or name.startswith("spconv.")):
            continue
        if getattr(module, "get_current_stream", None) is original:
            setattr(module, "get_current_stream", shim)


def is_stream_shim_installed():
    """True when spconv's ``get_current_stream`` is replaced by the CPU-safe shim."""
    return (getattr(_spconv_cppcore.get_current_stream, _MARK, None) == "stream_shim"
            and getattr(_spconv_ops.get_current_stream, _MARK, None) == "stream_shim")


# --------------------------------------------------------------------------- thread guard

def _first_tensor(args, kwargs):
    for value in args:
        if isinstance(value, torch.Tensor):
            return value
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    return None


def _find_bundled_openmp():
    """spconv's own OpenMP runtime (shipped in ``spconv.libs`` by the wheel), if it is loaded.

    Normally spconv's OpenMP calls bind to torch's runtime (torch is loaded first), and
    ``torch.set_num_threads`` governs them. If ``spconv.core_cc`` was imported before torch,
    they bind to this bundled copy instead, which torch's thread setting does not reach; the
    guard then pins this runtime to one thread as well. Only an already loaded copy is used
    (``RTLD_NOLOAD``): nothing new is loaded into the process.
    """
    rtld_noload = getattr(os, "RTLD_NOLOAD", None)
    spconv_root = getattr(sys.modules.get("spconv"), "__file__", None)
    if rtld_noload is None or spconv_root is None:
        return None
    libs = Path(spconv_root).resolve().parent.parent / "spconv.libs"
    for candidate in sorted(libs.glob("libgomp*.so*")):
        try:
            lib = ctypes.CDLL(str(candidate), mode=rtld_noload | os.RTLD_LAZY)
            lib.omp_get_max_threads.restype = ctypes.c_int
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            lib.omp_set_num_threads.restype = None
            return lib
        except (OSError, AttributeError):
            continue
    return None


_bundled_omp = None


def _make_thread_guard(original):
    @functools.wraps(original)
    def guarded(*args, **kwargs):
        if _guard_enabled:
            tensor = _first_tensor(args, kwargs)
            if tensor is not None and tensor.is_cpu:
                n_threads = torch.get_num_threads()
                omp = _bundled_omp
                n_omp = omp.omp_get_max_threads() if omp is not None else 1
                if n_threads > 1 or n_omp > 1:
                    torch.set_num_threads(1)
                    if n_omp > 1:
                        omp.omp_set_num_threads(1)
                    try:
                        return original(*args, **kwargs)
                    finally:
                        torch.set_num_threads(n_threads)
                        if n_omp > 1:
                            omp.omp_set_num_threads(n_omp)
        return original(*args, **kwargs)

    setattr(guarded, _MARK, "thread_guard")
    return guarded


def _install_thread_guard():
    global _bundled_omp
    if _bundled_omp is None:
        _bundled_omp = _find_bundled_openmp()
    for name in GUARDED_OPS:
        fn = getattr(_spconv_ops, name, None)
        if fn is None or getattr(fn, _MARK, None) == "thread_guard":
            continue
        setattr(_spconv_ops, name, _make_thread_guard(fn))


def is_cpu_thread_guard_active():
    """True when the guard wraps spconv's CPU conv ops and is not disabled."""
    if not _guard_enabled:
        return False
    conv_ops = ("indice_conv", "indice_conv_backward")
    return all(getattr(getattr(_spconv_ops, n, None), _MARK, None) == "thread_guard" for n in conv_ops)


@contextlib.contextmanager
def cpu_thread_guard_disabled():
    """Temporarily run spconv's CPU ops with the caller's thread count (unguarded).

    Only for diagnostics and tests that demonstrate the race: with more than one thread the
    results inside this block can be wrong. The previous state is restored on exit.
    """
    global _guard_enabled
    previous = _guard_enabled
    _guard_enabled = False
    try:
        yield
    finally:
        _guard_enabled = previous


class _FxTracingNotice(logging.Filter):
    """Drops torch's ``is_fx_tracing`` deprecation notice (fix 3 of the module docstring)."""

    def filter(self, record):
        return "is_fx_tracing will return true" not in record.getMessage()


def _install_log_filter():
    logger = logging.getLogger("torch.fx._symbolic_trace")
    if not any(isinstance(f, _FxTracingNotice) for f in logger.filters):
        logger.addFilter(_FxTracingNotice())


def install():
    """Install the stream shim, the CPU thread guard and the log filter (idempotent)."""
    with _install_lock:
        _install_stream_shim()
        _install_thread_guard()
        _install_log_filter()


install()
