"""Probe one image file: size from the header, cheap reduced decode for the perceptual hash, file flags.

Runs in worker processes. Decodes as little as possible: JPEG uses Pillow's draft mode (libjpeg scales by
1/2..1/8 while decoding, straight to greyscale); PNG and WebP decode straight to their luma plane where a fast
decoder is installed (``fastdecode``); the rest decode once through Pillow and are reduced. The pixel limit is
checked on the header size before any decoding, so decompression bombs are refused without allocation. A
still, opaque WebP is probed without Pillow at all (``_probe_webp``); anything that fast path does not handle,
or fails on, goes through Pillow, which classifies the errors.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from curator.scan.fastdecode import png_grey, png_pixels, png_rgba, webp_info, webp_luma
from curator.scan.hashing import HASH_SIDE, file_sha256, phash_from_grey, stream_sha256

READ_WHOLE_LIMIT = 256 << 20  # files up to this size are read once into memory (hash + decode)
DRAFT_REQUEST = (64, 64)  # JPEG draft: libjpeg picks the largest 1/n scale keeping both sides >= this
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


def _orient_array(grey: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to the small grey array, as ImageOps.exif_transpose does to the image."""
    method = _TRANSPOSE.get(orientation)
    if method is None:
        return grey
    oriented = Image.fromarray(grey.astype(np.float32)).transpose(method)
    return np.asarray(oriented, dtype=np.float64)


def _shrink_to_hash(image: Image.Image) -> np.ndarray:
    """A decoded 8-bit L image → the HASH_SIDE² grey array (box filtered)."""
    return np.asarray(image.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)


def _reduce(image: Image.Image) -> Image.Image:
    """Cheap box reduction to about 4x the hash side (the resize to the hash side follows)."""
    factor = max(1, min(image.width, image.height) // (HASH_SIDE * 4))
    return image.reduce(factor) if factor > 1 else image


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


def _composite_grey(rgba: Image.Image) -> np.ndarray:
    """RGBA → reduced, composited on white, grey, HASH_SIDE² thumbnail."""
    small = _reduce(rgba)
    white = Image.new("RGBA", small.size, (255, 255, 255, 255))
    return _shrink_to_hash(Image.alpha_composite(white, small).convert("L"))


def _fast_png_grey(image: Image.Image, data: bytes, result: ProbeResult) -> np.ndarray | None:
    """The grey thumbnail of a plain 8-bit PNG through Wuffs or libspng, or None to use Pillow."""
    if (
        image.mode not in ("L", "LA", "RGB", "RGBA", "P")
        or "transparency" in image.info
        or image.info.get("interlace")
        or _png_bit_depth(data[:64]) != 8
    ):
        return None
    if image.mode in ("LA", "RGBA"):
        rgba = png_rgba(data, image.size)
        if rgba is None:
            pixels = png_pixels(data) if image.mode == "RGBA" else None
            if pixels is None or pixels.dtype != np.uint8 or pixels.shape != (image.height, image.width, 4):
                return None
            rgba = pixels
        _alpha_flag(int(rgba[..., 3].min()), result)
        return _composite_grey(Image.fromarray(rgba))
    grey = png_grey(data, image.size)
    if grey is not None:
        return _shrink_to_hash(_reduce(_grey_image(grey)))
    if image.mode == "P":
        return None
    pixels = png_pixels(data)
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != (image.height, image.width):
        return None
    small = _reduce(Image.fromarray(pixels))
    return _shrink_to_hash(small if small.mode == "L" else small.convert("L"))


def _fast_grey(image: Image.Image, data: bytes | None, result: ProbeResult) -> np.ndarray | None:
    """The grey thumbnail through a faster decoder (WebP luma, Wuffs/libspng), or None to use Pillow."""
    if data is None or result.frames != 1:
        return None
    if image.format == "WEBP" and image.mode == "RGB":
        luma = webp_luma(data)
        if luma is None or luma.shape != (image.height, image.width):
            return None
        return _shrink_to_hash(_reduce(_grey_image(luma)))
    if image.format == "PNG":
        return _fast_png_grey(image, data, result)
    return None


def _grey_thumbnail(image: Image.Image, result: ProbeResult, data: bytes | None = None) -> np.ndarray:
    """Decode (reduced where possible) and return the HASH_SIDE² grey thumbnail; sets the alpha flag."""
    fast = _fast_grey(image, data, result)
    if fast is not None:
        return fast
    if image.format == "JPEG":
        try:
            image.draft("L", DRAFT_REQUEST)
        except (ValueError, OSError):
            pass
    image.load()
    mode = image.mode
    if mode in HIGH_BIT_MODES:
        array = np.asarray(image, dtype=np.float64)
        if array.ndim == 3:
            array = array[..., :3].mean(axis=2)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        small = Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8), "L")
        return np.asarray(small.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)
    # Shrink first (cheap box reduction), then handle transparency and colour on the small image.
    if mode == "P" or (mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ALPHA_MODES:
        if mode != "RGBA":
            image = image.convert("RGBA")
        low, _high = cast(tuple[int, int], image.getchannel("A").getextrema())  # one 8-bit band: (min, max)
        _alpha_flag(low, result)
        return _composite_grey(image)
    image = _reduce(image)
    return _shrink_to_hash(image.convert("L") if image.mode != "L" else image)


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
    """A still, opaque WebP probed without Pillow (header from libwebp, luma-only decode), or None.

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
    luma = webp_luma(data)
    if luma is None or luma.shape != (info.height, info.width):
        return None
    grey = _shrink_to_hash(_reduce(_grey_image(luma)))
    result.phash = phash_from_grey(_orient_array(grey, orientation))
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
    try:
        grey = _grey_thumbnail(image, result, data if isinstance(data, bytes) else None)
    except Exception as exc:  # noqa: BLE001
        kind = _classify_decode_error(exc)
        what = "the file ends before the image data does" if kind == "truncated" else "decoding failed"
        result.flags.append((kind, f"{what}: {exc}"))
        return
    result.phash = phash_from_grey(_orient_array(grey, orientation))


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
