"""The native fast path: one layer's heads checked and fused in a single pass
by the service's own kernels (attnroll/_native.so, built with the project by
CMake; `pip install` copies it when ATTNROLL_NATIVE_LIB names it).

numpy needs three passes over a layer for the same work (the row sums, the
sign check and the fusion), about 3.6 ms for ViT-B/16's 22 MB against about
1 ms here; ctypes releases the GIL during the call, so the next layer is
fused while gRPC's thread sends the one before. Without the library
(ATTNROLL_NATIVE=0, not built, or a CPU without x86-64-v3's instructions)
fuse() returns None and the numpy path runs: the same values bit for bit,
the same checks and messages.
"""

import ctypes
import os
import platform
from typing import Optional, Sequence

import numpy as np

# The library is built, as the server is, for x86-64-v3 (the project's
# default -march): on an older x86 CPU its code would end the whole process
# with SIGILL, so there it is not loaded (numpy does the work). The flags are
# /proc/cpuinfo's names of x86-64-v3's instructions (abm: LZCNT).
X86_64_V3_FLAGS = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe")


def cpu_runs_library(cpuinfo: Optional[str] = None, machine: Optional[str] = None) -> bool:
    """Whether this CPU runs the library's instructions: on x86-64, every
    flag of X86_64_V3_FLAGS in /proc/cpuinfo (or the text `cpuinfo`);
    elsewhere the library is built for the compiler's default."""
    if (machine or platform.machine()) not in ("x86_64", "AMD64"):
        return True
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return all(f in flags for f in X86_64_V3_FLAGS)
    return False


_LIB = None
_HALF = None  # attnroll_encode_half, when the library has it
if os.environ.get("ATTNROLL_NATIVE", "1") != "0" and cpu_runs_library():
    _path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native.so")
    if os.path.exists(_path):
        try:
            _LIB = ctypes.CDLL(_path)
        except OSError:  # e.g. built for another machine: numpy it is
            _LIB = None
if _LIB is not None:
    _LIB.attnroll_fuse_layer.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int, ctypes.c_float,
        ctypes.c_void_p]
    _LIB.attnroll_fuse_layer.restype = ctypes.c_int
    _LIB.attnroll_kernel_isa.restype = ctypes.c_char_p
    # A library built before it had no half encoder: then numpy encodes.
    _HALF = getattr(_LIB, "attnroll_encode_half", None)
    if _HALF is not None:
        _HALF.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p]
        _HALF.restype = None


def available() -> bool:
    """Whether the native library is loaded."""
    return _LIB is not None


def kernel_isa() -> Optional[str]:
    """"avx2" or "portable" (the kernels this CPU runs), None without the library."""
    return None if _LIB is None else _LIB.attnroll_kernel_isa().decode()


def fuse(x: np.ndarray, scale: Optional[Sequence[float]], mean_scale: float,
         valid: Optional[Sequence[int]], causal: bool, tolerance: float,
         out: np.ndarray) -> Optional[bool]:
    """Fuses x [B, H, r, n] (float32, C order) into out [B, 1, r, n] (float32,
    C order): the heads' sum times mean_scale when scale is None, else
    sum_h scale[h] x[:, h]. Returns True when every valid row of every head
    passed the fast check, False when one did not (run the exact check), None
    when the native path cannot take x (no library, another dtype or
    layout): use numpy."""
    if (_LIB is None or x.dtype != np.float32 or not x.flags.c_contiguous or x.ndim != 4
            or not x.flags.aligned or out.dtype != np.float32 or not out.flags.c_contiguous
            or not out.flags.aligned or not out.flags.writeable
            or out.shape != (x.shape[0], 1) + x.shape[2:]):
        return None
    B, H, r, n = x.shape
    sc = None if scale is None else np.ascontiguousarray(scale, dtype=np.float32)
    vl = None if valid is None else np.ascontiguousarray(valid, dtype=np.int32)
    if (sc is not None and sc.shape != (H,)) or (vl is not None and vl.shape != (B,)):
        return None  # numpy's path raises what it raises
    rc = _LIB.attnroll_fuse_layer(
        x.ctypes.data, B, H, r, n, None if vl is None else vl.ctypes.data,
        None if sc is None else sc.ctypes.data, float(np.float32(mean_scale)), int(causal),
        float(np.float32(tolerance)), out.ctypes.data)
    return rc == 0


def encode_half(x: np.ndarray) -> Optional[np.ndarray]:
    """x (float32, C order) as IEEE half bits (uint16, x's shape), rounded to
    nearest even: numpy's x.astype(float16) bit for bit, about ten times
    faster (0.1 against 1.1 ms for ViT-B/16's 12 fused layers). None when
    the native path cannot take x: use numpy."""
    if (_LIB is None or _HALF is None or x.dtype != np.float32 or not x.flags.c_contiguous
            or not x.flags.aligned):
        return None
    out = np.empty(x.shape, dtype=np.uint16)
    _HALF(x.ctypes.data, x.size, out.ctypes.data)
    return out
