"""Optional faster decoders for the perceptual hash (used when available, Pillow otherwise).

* PNG: Wuffs (``pywuffs``) decodes straight to the luma plane (``PixelFormat.Y``: ITU-R 601 weights, as
  Pillow's ``convert("L")``, within one level of rounding) in about 60 % of libspng's time and a third of
  Pillow's; ``pyspng`` (libspng) is the second choice. Wuffs is memory-safe by construction, which suits
  files from the internet.
* WebP: libwebp's ``WebPDecodeYUV`` (the library Pillow ships, via ctypes) returns the luma plane directly,
  skipping the colour conversion; ``webp_info`` reads what the scan needs from the header
  (``WebPGetFeatures`` and the RIFF chunks) without Pillow's animation decoder, which allocates and clears
  two full-size RGBA canvases just to open a file.

Every function returns None when its library is missing or the file is not the plain case it handles; the
caller then decodes with Pillow, which also classifies errors (truncated/unreadable) consistently.
``KILN_NO_FAST_DECODE=1`` turns them all off (Pillow only), for comparisons.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Protocol, TypeVar

import numpy as np

_U8P = ctypes.POINTER(ctypes.c_uint8)
_T = TypeVar("_T")


class _WuffsResult(Protocol):
    pixbuf: np.ndarray
    error_message: str


class _WuffsDecoder(Protocol):
    """What kiln uses of ``pywuffs.aux.ImageDecoder`` (pywuffs ships no type information)."""

    def decode(self, data: bytes) -> _WuffsResult: ...

_WEBP_DECODER_ABI = 0x0209  # WEBP_DECODER_ABI_VERSION of libwebp 1.x (only the major byte is checked)
_VP8X_FLAG_XMP = 0x04
_VP8X_FLAG_EXIF = 0x08


def _disabled() -> bool:
    return bool(os.environ.get("KILN_NO_FAST_DECODE"))


def refresh() -> None:
    """Look again at ``KILN_NO_FAST_DECODE`` and the installed decoders (they are looked up once)."""
    for loader in (_libwebp, _wuffs_maker, _pyspng):
        loader.cache_clear()


def available() -> dict[str, bool]:
    """Which fast decoders this process uses: ``{"png-wuffs", "png-libspng", "webp-luma"}`` → bool."""
    return {"png-wuffs": _wuffs() is not None, "png-libspng": _pyspng() is not None, "webp-luma": _libwebp() is not None}


class _WebPFeatures(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("has_alpha", ctypes.c_int),
        ("has_animation", ctypes.c_int),
        ("format", ctypes.c_int),
        ("pad", ctypes.c_uint32 * 5),
    ]


@lru_cache(maxsize=1)
def _libwebp() -> ctypes.CDLL | None:
    if _disabled():
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
            features = lib.WebPGetFeaturesInternal
            features.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_WebPFeatures), ctypes.c_int]
            features.restype = ctypes.c_int
            return lib
        except (OSError, AttributeError):
            continue
    return None


@dataclass(frozen=True, slots=True)
class WebPInfo:
    """What the scan needs from a WebP header."""

    width: int
    height: int
    has_alpha: bool
    animated: bool
    exif: bytes | None  # the EXIF chunk's payload, when there is one
    has_xmp: bool  # an XMP chunk (Pillow also reads an orientation from it)


def _riff_chunk(data: bytes, fourcc: bytes) -> bytes | None:
    """The payload of the first RIFF chunk named ``fourcc`` in a WebP file, or None."""
    pos, end = 12, min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    while pos + 8 <= end:
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == fourcc:
            return data[pos + 8 : pos + 8 + size] if pos + 8 + size <= len(data) else None
        pos += 8 + size + (size & 1)
    return None


def webp_info(data: bytes) -> WebPInfo | None:
    """Size, alpha, animation and metadata of a WebP file from its header (libwebp), or None."""
    lib = _libwebp()
    if lib is None or len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    features = _WebPFeatures()
    if lib.WebPGetFeaturesInternal(data, len(data), ctypes.byref(features), _WEBP_DECODER_ABI) != 0:
        return None
    flags = data[20] if data[12:16] == b"VP8X" else 0
    exif = _riff_chunk(data, b"EXIF") if flags & _VP8X_FLAG_EXIF else None
    return WebPInfo(
        width=features.width,
        height=features.height,
        has_alpha=bool(features.has_alpha),
        animated=bool(features.has_animation),
        exif=exif,
        has_xmp=bool(flags & _VP8X_FLAG_XMP),
    )


@dataclass(frozen=True, slots=True)
class YUVPlanes:
    """libwebp's decoded planes, valid only inside the callback of :func:`webp_yuv_apply` (no copies).

    ``luma`` is (height, stride) and ``u``/``v`` are (ceil(height/2), uv_stride): the first ``width`` /
    ``ceil(width/2)`` columns are the image, the rest is row padding.
    """

    width: int
    height: int
    luma: np.ndarray
    u: np.ndarray
    v: np.ndarray


def webp_yuv_apply(data: bytes, use: Callable[[YUVPlanes], _T]) -> _T | None:
    """``use(planes)`` on the Y (full size) and U, V (half size) planes of a still WebP, or None when it does
    not decode. The planes are libwebp's own buffer, freed when ``use`` returns: whatever ``use`` returns must
    not share their memory.

    libwebp's YUV is ITU-R BT.601 with studio range (Y 16..235, U/V 16..240 around 128).
    """
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
        w, h = width.value, height.value
        ch = (h + 1) // 2
        planes = YUVPlanes(
            width=w,
            height=h,
            luma=np.ctypeslib.as_array(pointer, shape=(h, stride.value)),
            u=np.ctypeslib.as_array(u, shape=(ch, uv_stride.value)),
            v=np.ctypeslib.as_array(v, shape=(ch, uv_stride.value)),
        )
        return use(planes)
    finally:
        lib.WebPFree(pointer)


def webp_yuv(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The Y (full size) and U, V (half size) planes of a still WebP as uint8 arrays (copies), or None."""

    def copies(planes: YUVPlanes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cw = (planes.width + 1) // 2
        return planes.luma[:, : planes.width].copy(), planes.u[:, :cw].copy(), planes.v[:, :cw].copy()

    return webp_yuv_apply(data, copies)


def webp_luma(data: bytes) -> np.ndarray | None:
    """The luma (grey) plane of a still WebP as a uint8 array, or None."""
    planes = webp_yuv(data)
    return None if planes is None else planes[0]


@lru_cache(maxsize=1)
def _wuffs_maker() -> Callable[[], tuple[_WuffsDecoder, _WuffsDecoder]] | None:
    """What makes a (grey decoder, RGBA decoder) pair, or None without a working pywuffs."""
    if _disabled():
        return None
    try:
        from pywuffs import ImageDecoderType, PixelFormat
        from pywuffs.aux import ImageDecoder, ImageDecoderConfig
    except ImportError:
        return None

    def decoder(pixel_format: object) -> _WuffsDecoder:
        config = ImageDecoderConfig()
        config.enabled_decoders = [ImageDecoderType.PNG]
        config.pixel_format = pixel_format
        made: _WuffsDecoder = ImageDecoder(config)
        return made

    def pair() -> tuple[_WuffsDecoder, _WuffsDecoder]:
        return decoder(PixelFormat.Y), decoder(PixelFormat.RGBA_NONPREMUL)

    try:
        pair()
    except Exception:  # noqa: BLE001 - an incompatible pywuffs build: use the next decoder
        return None
    return pair


_PER_THREAD = threading.local()


def _wuffs() -> tuple[_WuffsDecoder, _WuffsDecoder] | None:
    """This thread's (grey decoder, RGBA decoder), or None without a working pywuffs. A decoder keeps its
    decoding state, so two threads scanning at once (the TUI's scan and its run form's pre-flight) must not
    share one: that crashes the process."""
    maker = _wuffs_maker()
    if maker is None:
        return None
    made: tuple[Callable[[], object], tuple[_WuffsDecoder, _WuffsDecoder]] | None = getattr(_PER_THREAD, "wuffs", None)
    if made is None or made[0] is not maker:  # refresh() makes a new maker
        made = (maker, maker())
        _PER_THREAD.wuffs = made
    return made[1]


@lru_cache(maxsize=1)
def _pyspng() -> ModuleType | None:
    if _disabled():
        return None
    try:
        import pyspng
    except ImportError:
        return None
    module: ModuleType = pyspng
    return module


def _wuffs_decode(decoder: _WuffsDecoder, data: bytes, channels: int, size: tuple[int, int]) -> np.ndarray | None:
    try:
        result = decoder.decode(data)
    except Exception:  # noqa: BLE001 - let Pillow decode it and classify the error
        return None
    pixels: np.ndarray = result.pixbuf
    width, height = size
    if result.error_message or pixels.dtype != np.uint8 or pixels.shape != (height, width, channels):
        return None
    return pixels[..., 0] if channels == 1 else pixels


def png_grey(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """An opaque 8-bit PNG (grey, RGB or palette) as its (H, W) uint8 luma plane via Wuffs, or None.

    ``size`` is (width, height) from the header; a result of another shape is refused.
    """
    decoders = _wuffs()
    if decoders is None:
        return None
    return _wuffs_decode(decoders[0], data, 1, size)


def png_rgba(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """An 8-bit PNG with an alpha channel (LA/RGBA) as (H, W, 4) uint8 straight RGBA via Wuffs, or None."""
    decoders = _wuffs()
    if decoders is None:
        return None
    return _wuffs_decode(decoders[1], data, 4, size)


def png_pixels(data: bytes) -> np.ndarray | None:
    """A plain 8-bit PNG's pixels (H, W[, C]) via libspng, or None (the fallback when Wuffs is missing)."""
    spng = _pyspng()
    if spng is None:
        return None
    try:
        pixels: np.ndarray = spng.load(data)
    except Exception:  # noqa: BLE001 - let Pillow decode it and classify the error
        return None
    return pixels
