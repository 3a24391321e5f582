"""Probe one image file: size from the header, one reduced decode, file flags, hashes and statistics.

Runs in worker processes. Decodes as little as possible, to a *reduced image* whose short side is at least
``ANALYSIS_SIDE`` px (smaller images stay as they are): JPEG uses Pillow's draft mode (libjpeg scales by 1/2..1/8
while decoding); 8-bit PNGs decode with Wuffs (``fastdecode``) and are box-reduced; a still, opaque WebP is read
with libwebp alone (header, luma and chroma planes, no Pillow canvas, ``_probe_webp``); the rest decode once
through Pillow and are box-reduced. The pixel limit is checked on the header size before any decoding, so
decompression bombs are refused without allocation. Anything a fast path does not handle, or fails on, goes
through Pillow, which classifies the errors.

From the reduced image (EXIF orientation applied, transparency composited on white) come the 64x64 grey
thumbnail the index keeps, kiln's pHash and mirror pHash (imagehash's, ``curator.scan.hashing``), the image
statistics of the quality checks (``curator.scan.quality``) and the 128x128 edge bitmap of the watermark check
(``curator.scan.edges``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from curator.scan.edges import edge_bits
from curator.scan.fastdecode import YUVPlanes, png_grey, png_pixels, png_rgba, webp_info, webp_yuv_apply
from curator.scan.hashing import THUMB_SIDE, file_sha256, stream_sha256, thumb_hashes, thumbnail_image
from curator.scan.quality import ImageStats, jpeg_quality, measure

READ_WHOLE_LIMIT = 256 << 20  # files up to this size are read once into memory (hash + decode)
ANALYSIS_SIDE = 128  # the reduced decode keeps the short side at least this long
DRAFT_REQUEST = (ANALYSIS_SIDE, ANALYSIS_SIDE)  # JPEG draft: the largest 1/n scale keeping both sides >= this
HIGH_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F", "RGB;16", "RGBA;16"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
ORIENTATION_TAG = 0x0112
ORIENTATION_NAMES = {
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped vertically",
    5: "mirrored and rotated 90° counter-clockwise",
    6: "rotated 90° clockwise",
    7: "mirrored and rotated 90° clockwise",
    8: "rotated 90° counter-clockwise",
}

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WEBP"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypavis", 4, "AVIF"),
    (b"ftypmif1", 4, "AVIF"),
)


@dataclass(slots=True)
class ProbeResult:
    """What the scanner stores about one file (see the ``images`` table)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    frames: int = 0
    exif_rotated: bool = False
    phash: int | None = None
    flags: list[tuple[str, str]] = field(default_factory=list)
    phash_mirror: int | None = None
    thumb: bytes | None = None  # THUMB_SIDE x THUMB_SIDE grey, row-major
    stats: str | None = None  # ImageStats.to_dict() as JSON (encoded in the worker)
    edges: bytes | None = None  # curator.scan.edges.edge_bits of the reduced image


def sniff_format(head: bytes) -> str | None:
    """The image format the first bytes announce, or None."""
    for magic, offset, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def describe_content(head: bytes) -> str:
    """A short guess at what a non-image file holds, for the `not-image` detail."""
    stripped = head.lstrip()
    lower = stripped[:64].lower()
    if lower.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download?)"
    if lower.startswith((b"<?xml", b"<svg")) or b"<svg" in lower:
        return "SVG/XML text (vector images are not supported)"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if stripped[:1] in (b"{", b"["):
        return "JSON text"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return f"unknown data starting with {head[:8].hex(' ')}"


def _classify_decode_error(exc: BaseException) -> str:
    message = str(exc).lower()
    if isinstance(exc, EOFError) or any(w in message for w in ("truncated", "broken data stream", "premature")):
        return "truncated"
    return "unreadable"


def _png_bit_depth(head: bytes) -> int:
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) > 24:
        return head[24]
    return 8


def _valid_orientation(value: object) -> int:
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _orientation(image: Image.Image) -> int:
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow would decode the whole PNG to look for an eXIf chunk after the pixels
    try:
        return _valid_orientation(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        return 1


def _exif_orientation(exif: bytes | None) -> int:
    """The orientation in a raw EXIF block (as Pillow's ``getexif`` reads it), 1 when none."""
    if not exif:
        return 1
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        return _valid_orientation(parsed.get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001
        return 1


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orient(image: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation to the reduced image, as ImageOps.exif_transpose does to the full one."""
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def _reduce(image: Image.Image) -> Image.Image:
    """Box reduction by a whole factor, keeping the short side at least ANALYSIS_SIDE."""
    factor = max(1, min(image.width, image.height) // ANALYSIS_SIDE)
    return image.reduce(factor) if factor > 1 else image


@dataclass(slots=True)
class _Reduced:
    """The reduced decode: an RGB image, or a grey one (then ``chroma`` may say how colourful it was)."""

    image: Image.Image  # "RGB" or "L"
    chroma: np.ndarray | None = None  # per-pixel chroma 0..255 from separate colour planes (WebP)
    transparent: float = 0.0
    hidden_rgb: tuple[int, int, int] | None = None


def _alpha_flag(low: int, result: ProbeResult) -> None:
    if low < 255:
        transparent = "fully transparent pixels" if low == 0 else "semi-transparent pixels"
        result.flags.append(
            (
                "alpha",
                f"has {transparent}; it will be composited on white for training "
                "(kohya instead drops the alpha channel, showing whatever colour hides under it)",
            )
        )


def _grey_image(grey: np.ndarray) -> Image.Image:
    """A (H, W) uint8 array as an L image, sharing its memory when it is contiguous."""
    height, width = grey.shape
    if grey.flags.c_contiguous:
        return Image.frombuffer("L", (width, height), grey, "raw", "L", 0, 1)
    return Image.fromarray(grey)


def _rgba_image(rgba: np.ndarray) -> Image.Image:
    height, width = rgba.shape[:2]
    if rgba.flags.c_contiguous:
        return Image.frombuffer("RGBA", (width, height), rgba, "raw", "RGBA", 0, 1)
    return Image.fromarray(rgba, "RGBA")


def _composite(rgba: Image.Image, result: ProbeResult) -> _Reduced:
    """An RGBA image → flag, transparency statistics, reduced and composited on white (RGB)."""
    alpha = np.asarray(rgba.getchannel("A"))
    _alpha_flag(int(alpha.min()), result)
    reduced = _Reduced(Image.new("RGB", (1, 1)))
    reduced.transparent = float((alpha < 255).mean())
    clear = alpha == 0
    if clear.any():
        hidden = np.asarray(rgba.convert("RGB"))[clear]
        reduced.hidden_rgb = tuple(int(round(v)) for v in hidden.mean(axis=0))  # type: ignore[assignment]
    small = _reduce(rgba)
    white = Image.new("RGBA", small.size, (255, 255, 255, 255))
    reduced.image = Image.alpha_composite(white, small).convert("RGB")
    return reduced


def _opaque_rgb(rgba: np.ndarray) -> Image.Image:
    """An opaque (H, W, 4) decode → reduced RGB (the fourth channel is ignored, no premultiplying)."""
    height, width = rgba.shape[:2]
    image = Image.frombuffer("RGBX", (width, height), rgba, "raw", "RGBX", 0, 1)
    return _reduce(image).convert("RGB")


def _fast_png(image: Image.Image, data: bytes, result: ProbeResult) -> _Reduced | None:
    """A plain 8-bit PNG through Wuffs or libspng, or None to use Pillow."""
    if (
        image.mode not in ("L", "LA", "RGB", "RGBA", "P")
        or "transparency" in image.info
        or image.info.get("interlace")
        or _png_bit_depth(data[:64]) != 8
    ):
        return None
    if image.mode == "L":
        grey = png_grey(data, image.size)
        return None if grey is None else _Reduced(_reduce(_grey_image(grey)))
    rgba = png_rgba(data, image.size)
    if rgba is None:
        pixels = png_pixels(data) if image.mode in ("RGB", "RGBA") else None
        if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != (image.height, image.width):
            return None
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            return _Reduced(_reduce(Image.fromarray(pixels, "RGB")))
        if pixels.ndim != 3 or pixels.shape[2] != 4:
            return None
        rgba = pixels
    if image.mode in ("LA", "RGBA"):
        return _composite(_rgba_image(rgba), result)
    return _Reduced(_opaque_rgb(rgba))


_STUDIO_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)


def _yuv_chroma(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """max - min of R, G, B (0..255) from BT.601 studio-range chroma planes; luma cancels out."""
    cu = u.astype(np.float32) - 128.0
    cv = v.astype(np.float32) - 128.0
    red, green, blue = 1.596 * cv, -0.813 * cv - 0.391 * cu, 2.018 * cu
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return np.asarray(np.clip(spread, 0, 255), dtype=np.uint8)


def _yuv_reduced(planes: YUVPlanes, size: tuple[int, int]) -> _Reduced | None:
    """Reduced luma (full range) and chroma from YUV planes (read through their row strides, subsampled before
    anything is copied); what is returned owns its memory. None when the planes are not ``size``."""
    if (planes.width, planes.height) != size:
        return None
    luma = Image.frombuffer("L", size, np.ascontiguousarray(planes.luma), "raw", "L", planes.luma.shape[1], 1)
    grey = _reduce(luma)
    full = Image.fromarray(_STUDIO_TO_FULL[np.asarray(grey)])  # a new array: independent of the buffer
    cw = (planes.width + 1) // 2
    u, v = planes.u[:, :cw], planes.v[:, :cw]
    factor = max(1, min(u.shape) * 2 // ANALYSIS_SIDE // 2)
    return _Reduced(full, chroma=_yuv_chroma(u[::factor, ::factor], v[::factor, ::factor]))


def _webp_reduced(data: bytes, size: tuple[int, int]) -> _Reduced | None:
    """A still, opaque WebP's luma (full range) and chroma planes, reduced inside libwebp's buffer; None to use
    Pillow."""
    return webp_yuv_apply(data, lambda planes: _yuv_reduced(planes, size))


def _fast_reduced(image: Image.Image, data: bytes | None, result: ProbeResult) -> _Reduced | None:
    """The reduced decode through a faster decoder (libwebp planes, Wuffs/libspng), or None to use Pillow."""
    if data is None or result.frames != 1:
        return None
    if image.format == "WEBP" and image.mode == "RGB":
        return _webp_reduced(data, image.size)
    if image.format == "PNG":
        return _fast_png(image, data, result)
    return None


def _high_bit(image: Image.Image) -> Image.Image:
    """16-bit / float samples → an 8-bit reduced grey image."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2)
    top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    return _reduce(Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8), "L"))


def _decode_reduced(image: Image.Image, result: ProbeResult, data: bytes | None = None) -> _Reduced:
    """Decode (reduced where possible); sets the alpha flag."""
    fast = _fast_reduced(image, data, result)
    if fast is not None:
        return fast
    if image.format == "JPEG":
        try:
            image.draft("RGB" if image.mode in ("RGB", "YCbCr") else image.mode, DRAFT_REQUEST)
        except (ValueError, OSError):
            pass
    image.load()
    mode = image.mode
    if mode in HIGH_BIT_MODES:
        return _Reduced(_high_bit(image))
    if mode == "P" or (mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ALPHA_MODES:
        return _composite(image if mode == "RGBA" else image.convert("RGBA"), result)
    small = _reduce(image)
    if small.mode in ("L", "1", "I", "F"):
        return _Reduced(small.convert("L") if small.mode != "L" else small)
    return _Reduced(small.convert("RGB") if small.mode != "RGB" else small)


def _analyse(reduced: _Reduced, orientation: int, result: ProbeResult, quality: int | None = None) -> None:
    """Thumbnail, hashes and statistics of the reduced image."""
    image = _orient(reduced.image, orientation)
    grey = image.convert("L") if image.mode != "L" else image
    thumb_image = thumbnail_image(grey)
    thumb = np.asarray(thumb_image, dtype=np.uint8)
    result.phash, result.phash_mirror = thumb_hashes(thumb_image)
    result.thumb = thumb.tobytes()
    result.edges = edge_bits(grey)
    rgb = np.asarray(image.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)) if image.mode == "RGB" else None
    stats: ImageStats = measure(np.asarray(grey), thumb, rgb=rgb, chroma=reduced.chroma)
    stats.jpeg_quality = quality
    stats.transparent = reduced.transparent
    stats.hidden_rgb = reduced.hidden_rgb
    result.stats = json.dumps(stats.to_dict(), separators=(",", ":"))


def probe_file(abs_path: str, rel_path: str, size: int, mtime_ns: int, pixel_limit: int) -> ProbeResult:
    """Probe one file; never raises for a bad file (problems become flags)."""
    result = ProbeResult(path=rel_path, size=size, mtime_ns=mtime_ns)
    if size == 0:
        result.sha256 = file_sha256(b"")
        result.flags.append(("empty-file", "the file is empty (0 bytes)"))
        return result
    try:
        if size <= READ_WHOLE_LIMIT:
            with open(abs_path, "rb") as handle:
                data = handle.read()
            result.sha256 = file_sha256(data)
            source: io.BytesIO | str = io.BytesIO(data)
            head = data[:64]
        else:
            result.sha256 = stream_sha256(abs_path)
            source = abs_path
            with open(abs_path, "rb") as handle:
                head = handle.read(64)
    except OSError as exc:
        result.flags.append(("unreadable", f"cannot read the file: {exc.strerror or exc}"))
        return result
    sniffed = sniff_format(head)
    if sniffed == "WEBP" and isinstance(source, io.BytesIO):
        fast = _probe_webp(data, head, pixel_limit, result)
        if fast is not None:
            return fast
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit below, on the header size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                image = Image.open(source)
            except UnidentifiedImageError:
                if sniffed is None:
                    result.flags.append(("not-image", f"the content is not an image: {describe_content(head)}"))
                else:
                    result.format = sniffed
                    kind = "truncated" if len(head) < 64 or size < 128 else "unreadable"
                    result.flags.append((kind, f"starts like a {sniffed} file but Pillow cannot read its header"))
                return result
            except Exception as exc:  # noqa: BLE001 - any decoder error is a finding, not a crash
                result.format = sniffed or ""
                result.flags.append((_classify_decode_error(exc), f"cannot open: {exc}"))
                return result
            with image:
                _probe_image(image, head, pixel_limit, result, source if isinstance(source, str) else data)
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    return result


def _describe(
    result: ProbeResult,
    fmt: str,
    mode: str,
    frames: int,
    size: tuple[int, int],
    orientation: int,
    head: bytes,
    pixel_limit: int,
) -> bool:
    """Record the header facts and their flags; False when the image must not be decoded (too large)."""
    result.format, result.mode, result.frames = fmt, mode, frames
    width, height = size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    result.width, result.height = width, height
    if orientation != 1:
        result.exif_rotated = True
        result.flags.append(
            (
                "exif-rotated",
                f"EXIF orientation {orientation} ({ORIENTATION_NAMES[orientation]}); sizes are after rotation "
                "and training must use the rotated image",
            )
        )
    if width * height > pixel_limit:
        result.flags.append(
            (
                "too-large",
                f"{width}x{height} = {width * height / 1e6:.1f} MP is over the {pixel_limit / 1e6:.1f} MP limit; "
                "not decoded (raise pixel_limit if the image is genuine)",
            )
        )
        return False
    if frames > 1:
        note = "; kohya sd-scripts skips .gif files entirely" if fmt == "GIF" else ""
        result.flags.append(("animated", f"{frames} frames; only the first frame is used{note}"))
    if mode == "CMYK":
        result.flags.append(("cmyk", "CMYK colour; converted to RGB for training (colours may shift)"))
    bit_depth = _png_bit_depth(head)
    if mode in HIGH_BIT_MODES or bit_depth == 16:
        depth = "16-bit" if bit_depth == 16 or mode.startswith("I;16") else f"mode {mode}"
        result.flags.append(("high-bit-depth", f"{depth} samples; reduced to 8 bits per channel for training"))
    return True


def _probe_webp(data: bytes, head: bytes, pixel_limit: int, base: ProbeResult) -> ProbeResult | None:
    """A still, opaque WebP probed without Pillow (header from libwebp, YUV planes), or None.

    None (for the Pillow path) when libwebp is missing, the file is animated, has alpha or an XMP packet
    (where Pillow also looks for an orientation), or does not decode (Pillow then classifies the error).
    """
    info = webp_info(data)
    if info is None or info.animated or info.has_alpha or info.has_xmp:
        return None
    result = ProbeResult(path=base.path, size=base.size, mtime_ns=base.mtime_ns, sha256=base.sha256)
    orientation = _exif_orientation(info.exif)
    if not _describe(result, "WEBP", "RGB", 1, (info.width, info.height), orientation, head, pixel_limit):
        return result
    reduced = _webp_reduced(data, (info.width, info.height))
    if reduced is None:
        return None
    _analyse(reduced, orientation, result)
    return result


def _probe_image(
    image: Image.Image, head: bytes, pixel_limit: int, result: ProbeResult, data: bytes | str | None = None
) -> None:
    try:
        frames = int(getattr(image, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001
        frames = 1
    orientation = _orientation(image)
    if not _describe(result, image.format or "", image.mode, frames, image.size, orientation, head, pixel_limit):
        return
    quality = jpeg_quality(getattr(image, "quantization", None)) if image.format == "JPEG" else None
    try:
        reduced = _decode_reduced(image, result, data if isinstance(data, bytes) else None)
    except Exception as exc:  # noqa: BLE001
        kind = _classify_decode_error(exc)
        what = "the file ends before the image data does" if kind == "truncated" else "decoding failed"
        result.flags.append((kind, f"{what}: {exc}"))
        return
    _analyse(reduced, orientation, result, quality)


def pixel_digest(abs_path: str, pixel_limit: int) -> str | None:
    """A hash of the decoded pixels after EXIF rotation (same pixels, different bytes → same digest).

    Full decode: called only for images whose cheaper hashes already match. None when it cannot decode.
    """
    import hashlib

    from PIL import ImageOps

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(abs_path) as opened:
            if opened.width * opened.height > pixel_limit:
                return None
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "RGBX"):
                image = image.convert("RGBA")
            digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
            digest.update(image.tobytes())
            return digest.hexdigest()
    except Exception:  # noqa: BLE001
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def file_signature(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns
