"""Robust photo loading: any valid image → RGB PIL image, anything else → ``BadImage(reason)``.

Accepted and converted: greyscale, palette, CMYK, 16-bit, alpha (composited on white) and
EXIF-rotated photos (orientation applied). EXIF GPS tags are never read. Rejected: empty files,
non-images, data PIL cannot decode fully (truncated images included: decoding is strict),
images under ``MIN_SIDE`` px on a side and over ``MAX_PIXELS`` (checked from the header,
before decoding, so decompression bombs are never expanded).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MIN_SIDE = 32
MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class BadImage(ValueError):
    """A photo that cannot be used; ``reason`` is a short phrase for reports (e.g. ``"empty file"``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read(source: str | Path | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except OSError as err:
        raise BadImage(f"unreadable file: {err.strerror or err}") from err


def _open(data: bytes) -> Image.Image:
    """Open (header only) and check size limits; BadImage if not an image or out of bounds."""
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise BadImage("not an image") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage(f"too large: over {MAX_PIXELS / 1e6:.0f} megapixels") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(f"undecodable: {err}") from err
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise BadImage(f"too large: {w}x{h} is over {MAX_PIXELS / 1e6:.0f} megapixels")
    return image


def _decode(image: Image.Image) -> Image.Image:
    """Fully decode strictly (truncated data is an error), then apply EXIF orientation."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImage(f"undecodable: {err}") from err
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale → 8-bit L (16-bit scaled by 255/65535)."""
    pixels = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        top = 1.0 if pixels.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded PIL image → 8-bit RGB; transparency is composited on white."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_l(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: str | Path | bytes) -> Image.Image:
    """Load a photo (path or encoded bytes) as an RGB PIL image; BadImage(reason) if unusable."""
    image = _decode(_open(_read(source)))
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        raise BadImage(f"too small: {w}x{h} is under {MIN_SIDE} px on a side")
    return to_rgb(image)


def is_image_path(path: Path) -> bool:
    """True when ``path``'s extension is a photo format this loader reads."""
    return path.suffix.lower() in IMAGE_EXTENSIONS
