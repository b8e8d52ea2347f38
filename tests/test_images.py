"""load_image: unusual-but-valid photos are converted to RGB, bad ones rejected with the right reason."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from globeflow.data.images import BadImage, load_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHOTO = SHARED / "im2gps3k" / "images" / "1000269685_e60e9cdfb4_1125_78841376@N00.jpg"
DAMAGED = SHARED / "im2gps3k" / "images" / "254994149_844b89545b_115_79267922@N00.jpg"

pytestmark = pytest.mark.skipif(not PHOTO.is_file(), reason="shared im2gps3k photos not available")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_plain_jpeg_round_trip(photo):
    image = load_image(PHOTO)
    assert image.mode == "RGB" and image.size == photo.size
    assert load_image(PHOTO.read_bytes()).size == photo.size


@pytest.mark.parametrize("mode", ["L", "P", "CMYK"])
def test_colour_modes_converted(photo, tmp_path, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = _save(photo.convert(mode), tmp_path / f"x.{fmt.lower()}", format=fmt)
    assert Image.open(path).mode == mode
    image = load_image(path)
    assert image.mode == "RGB" and image.size == photo.size
    # colours survive: mean absolute difference to the original stays small (greyscale loses hue)
    diff = np.abs(np.asarray(image, float) - np.asarray(photo, float)).mean()
    assert diff < (40 if mode == "L" else 20)  # palette quantisation dithers


def test_sixteen_bit_scaled_to_eight(photo, tmp_path):
    grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # 0..65535
    path = _save(Image.fromarray(grey), tmp_path / "x16.png")
    assert Image.open(path).mode.startswith("I")
    image = load_image(path)
    assert image.mode == "RGB"
    np.testing.assert_allclose(np.asarray(image)[..., 0], np.asarray(photo.convert("L")), atol=1)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(photo, tmp_path, mode):
    rgba = photo.convert("RGBA")
    alpha = np.full(photo.size[::-1], 255, np.uint8)
    alpha[:, :40] = 0  # a fully transparent stripe on the left
    rgba.putalpha(Image.fromarray(alpha))
    path = _save(rgba.convert(mode), tmp_path / "a.png")
    pixels = np.asarray(load_image(path))
    assert (pixels[:, :40] == 255).all()
    assert pixels[:, 60:].mean() < 250


def test_exif_orientation_applied(photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = _save(photo, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (photo.height, photo.width)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadImage, match="empty file"):
        load_image(path)
    with pytest.raises(BadImage, match="empty file"):
        load_image(b"")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a caption, not a photo\n" * 10)
    with pytest.raises(BadImage, match="not an image"):
        load_image(path)


def test_truncated_jpeg_is_undecodable(tmp_path):
    data = PHOTO.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="undecodable"):
        load_image(path)


def test_too_small(photo, tmp_path):
    path = _save(photo.resize((40, 20)), tmp_path / "tiny.png")
    with pytest.raises(BadImage, match="too small"):
        load_image(path)


def test_too_large_rejected_before_decoding(tmp_path):
    # a valid PNG header announcing 10000 x 6000 (60 MP) with no pixel data: must be rejected
    # from the header alone (decoding would fail differently)
    import zlib

    ihdr = struct.pack(">IIBBBBB", 10000, 6000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    png += struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    with pytest.raises(BadImage, match="too large"):
        load_image(png)


@pytest.mark.skipif(not DAMAGED.is_file(), reason="damaged shared JPEG not available")
def test_shared_damaged_jpeg_decides_by_decoding():
    """The partly damaged im2gps3k JPEG decodes fully with strict PIL, so it is kept."""
    image = load_image(DAMAGED)
    assert image.mode == "RGB" and min(image.size) >= 32
    buf = io.BytesIO(DAMAGED.read_bytes()[:-2000])
    with pytest.raises(BadImage, match="undecodable"):
        load_image(buf.getvalue())
