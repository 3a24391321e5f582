"""Optional faster decoders for the perceptual hash (used when available, Pillow otherwise).

* WebP: libwebp's ``WebPDecodeYUV`` (the library Pillow ships, via ctypes) returns the luma plane directly,
  skipping the colour conversion: about half of Pillow's decode time.
* PNG: ``pyspng`` (libspng) decodes about twice as fast as Pillow's PNG decoder.

Both return None when unavailable or when the file is not the plain case they handle; the caller then decodes
with Pillow, which also classifies errors (truncated/unreadable) consistently.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from functools import lru_cache

import numpy as np

_U8P = ctypes.POINTER(ctypes.c_uint8)


@lru_cache(maxsize=1)
def _libwebp() -> ctypes.CDLL | None:
    if os.environ.get("KILN_NO_FAST_DECODE"):
        return None
    candidates = []
    try:
        import PIL

        libs = os.path.join(os.path.dirname(os.path.dirname(PIL.__file__)), "pillow.libs")
        candidates += sorted(glob.glob(os.path.join(libs, "libwebp-*.so*")))
    except ImportError:
        pass
    system = ctypes.util.find_library("webp")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            decode = lib.WebPDecodeYUV
            decode.restype = _U8P
            decode.argtypes = [
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.POINTER(ctypes.c_int),
                ctypes.POINTER(ctypes.c_int),
                ctypes.POINTER(_U8P),
                ctypes.POINTER(_U8P),
                ctypes.POINTER(ctypes.c_int),
                ctypes.POINTER(ctypes.c_int),
            ]
            lib.WebPFree.argtypes = [ctypes.c_void_p]
            lib.WebPFree.restype = None
            return lib
        except (OSError, AttributeError):
            continue
    return None


def webp_luma(data: bytes) -> np.ndarray | None:
    """The luma (grey) plane of a still WebP as a uint8 array, or None."""
    lib = _libwebp()
    if lib is None:
        return None
    width, height, stride, uv_stride = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    u, v = _U8P(), _U8P()
    pointer = lib.WebPDecodeYUV(
        data,
        len(data),
        ctypes.byref(width),
        ctypes.byref(height),
        ctypes.byref(u),
        ctypes.byref(v),
        ctypes.byref(stride),
        ctypes.byref(uv_stride),
    )
    if not pointer:
        return None
    try:
        plane = np.ctypeslib.as_array(pointer, shape=(height.value, stride.value))
        return plane[:, : width.value].copy()
    finally:
        lib.WebPFree(pointer)


@lru_cache(maxsize=1)
def _pyspng():  # noqa: ANN202
    if os.environ.get("KILN_NO_FAST_DECODE"):
        return None
    try:
        import pyspng
    except ImportError:
        return None
    return pyspng


def png_pixels(data: bytes) -> np.ndarray | None:
    """A plain 8-bit PNG's pixels (H, W[, C]) via libspng, or None."""
    spng = _pyspng()
    if spng is None:
        return None
    try:
        return spng.load(data)
    except Exception:  # noqa: BLE001 - let Pillow decode it and classify the error
        return None
