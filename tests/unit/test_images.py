"""The safe decoder against a battery of malformed and unusual images.

Every malformed file must raise ImageDecodeError naming the file; every unusual
but valid file must decode to upright uint8 RGB or L with the expected pixels.
"""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lib.data.images import (
    MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    load_image_file,
    probe_image,
    resize_image,
    to_channels,
)

RNG = np.random.default_rng(7)
NOISE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # incompressible: truncation hits pixels
GRAY = RNG.integers(0, 256, (20, 30), dtype=np.uint8)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(fmt: str, **kw) -> bytes:
    return encode(Image.fromarray(NOISE), fmt, **kw)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` × ``height`` (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))  # fmt: skip


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def jpeg_declaring(width: int, height: int) -> bytes:
    data = rgb("JPEG")
    sof = data.index(b"\xff\xc0")
    return patched(data, sof + 5, ">HH", height, width)


def animated(fmt: str, **kw) -> bytes:
    frames = [Image.new("RGB", (16, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **kw
    )


# ---------------------------------------------------------------- malformed: must be refused

MALFORMED = [
    ("empty.png", b"", "empty"),
    ("empty.jpg", b"", "empty"),
    ("empty.gif", b"", "empty"),
    ("trunc10.png", rgb("PNG")[:100], ""),
    ("trunc50.png", rgb("PNG")[: len(rgb("PNG")) // 2], "truncated"),
    ("trunc90.png", rgb("PNG")[: len(rgb("PNG")) * 9 // 10], "truncated"),
    ("trunc-tail.png", rgb("PNG")[:-40], ""),
    ("trunc50.jpg", rgb("JPEG", quality=95)[: len(rgb("JPEG", quality=95)) // 2], "truncated"),
    ("trunc90.jpg", rgb("JPEG", quality=95)[: len(rgb("JPEG", quality=95)) * 9 // 10], "truncated"),
    ("trunc-header.jpg", rgb("JPEG")[:40], ""),
    ("trunc50.bmp", rgb("BMP")[: len(rgb("BMP")) // 2], ""),
    ("trunc50.gif", rgb("GIF")[: len(rgb("GIF")) // 2], ""),
    ("trunc50.webp", rgb("WEBP", lossless=True)[: len(rgb("WEBP", lossless=True)) // 2], ""),
    ("trunc50.tiff", rgb("TIFF")[: len(rgb("TIFF")) // 2], ""),
    ("signature-only.png", b"\x89PNG\r\n\x1a\n", ""),
    ("text.png", b"hello, this is not an image\n", "not a readable image"),
    ("page.jpg", b"<!doctype html><html><body>hi</body></html>", "not a readable image"),
    ("doc.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not a readable image"),
    ("random.png", RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a readable image"),
    ("zeros.bmp", b"\x00" * 2048, "not a readable image"),
    ("script.gif", b"GIF89a<script>alert(1)</script>", ""),
    ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not a supported image type"),
    ("notes.txt", rgb("PNG"), "not a supported image type"),
    ("program.exe", b"MZ\x90\x00" + b"\x00" * 60, "not a supported image type"),
    ("archive.zip", b"PK\x05\x06" + b"\x00" * 18, "not a supported image type"),
    ("photo.png", rgb("JPEG"), "JPEG image but its extension says .png"),
    ("photo.jpg", rgb("PNG"), "PNG image but its extension says .jpg"),
    ("anim.bmp", animated("GIF"), "GIF image but its extension says .bmp"),
    ("picture.webp", rgb("TIFF"), "TIFF image but its extension says .webp"),
    ("portable.png", rgb("PPM"), "not a readable image"),  # Pillow reads PPM; we do not
    ("noext-ppm", rgb("PPM"), "not a readable image"),
    ("icon.png", encode(Image.fromarray(NOISE[:32, :32]), "ICO"), "not a readable image"),
    ("targa.png", rgb("TGA"), "not a readable image"),
    ("pcx.bmp", rgb("PCX"), "not a readable image"),
    ("bomb.png", png_declaring(100_000, 100_000), "too many pixels"),
    ("bomb-strip.png", png_declaring(1, MAX_PIXELS + 1), "too many pixels"),
    ("bomb-wide.png", png_declaring(30_000, 10), "declared size"),
    ("zero-width.png", png_declaring(0, 10), ""),
    ("bomb.jpg", jpeg_declaring(65_000, 65_000), "too many pixels"),
    ("bomb.gif", patched(rgb("GIF"), 6, "<HH", 65_535, 65_535), ""),
    ("bomb.bmp", patched(rgb("BMP"), 18, "<ii", 100_000, 100_000), ""),
    ("bad-crc.png", patched(rgb("PNG"), 29, ">I", 0xDEADBEEF), ""),
]


@pytest.mark.parametrize(("name", "data", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_images_raise_one_typed_error_naming_the_file(name, data, reason):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, name)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{name}: ")
    assert info.value.name == name
    assert reason in str(info.value)


# ---------------------------------------------------------------- unusual but valid


def _p_with_transparency() -> bytes:
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    return encode(img, "PNG", transparency=1)  # palette index 1 (blue) is transparent


def _rgba() -> bytes:
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (10, 20, 30, 255)  # opaque
    arr[0, 1] = (10, 20, 30, 0)  # fully transparent -> white
    arr[1, :] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    return arr


def _i16() -> bytes:
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    return encode(Image.fromarray(arr), "PNG")


CMYK = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
VALID = [
    # name, bytes, color_mode, expected shape, check(arr) or None
    ("rgb.png", rgb("PNG"), "auto", (48, 64, 3), lambda a: np.array_equal(a, NOISE)),
    ("gray.png", encode(Image.fromarray(GRAY), "PNG"), "auto", (20, 30, 1),
     lambda a: np.array_equal(a[..., 0], GRAY)),
    ("gray-as-rgb.png", encode(Image.fromarray(GRAY), "PNG"), "rgb", (20, 30, 3),
     lambda a: np.array_equal(a[..., 1], GRAY)),
    ("rgb-as-gray.png", rgb("PNG"), "grayscale", (48, 64, 1), None),
    ("rgba.png", encode(Image.fromarray(_rgba()), "PNG"), "auto", (2, 2, 3),
     lambda a: a[0, 0].tolist() == [10, 20, 30] and a[0, 1].tolist() == [255, 255, 255]
     and 120 <= a[1, 0, 0] <= 135),
    ("la.png", encode(Image.fromarray(np.ascontiguousarray(_rgba()[..., [0, 3]])), "PNG"), "auto", (2, 2, 1),
     lambda a: a[0, 1, 0] == 255 and a[0, 0, 0] == 10),
    ("palette.png", encode(Image.fromarray(NOISE).quantize(16), "PNG"), "auto", (48, 64, 3), None),
    ("palette-transparent.png", _p_with_transparency(), "auto", (2, 4, 3),
     lambda a: a[0, 0].tolist() == [255, 0, 0] and a[0, 1].tolist() == [255, 255, 255]),
    ("palette-transparent.gif", encode(Image.open(io.BytesIO(_p_with_transparency())), "GIF",
                                       transparency=1), "auto", (2, 4, 3),
     lambda a: a[0, 1].tolist() == [255, 255, 255]),
    ("bilevel.png", encode(Image.fromarray(GRAY > 128), "PNG"), "auto", (20, 30, 1),
     lambda a: set(np.unique(a)) <= {0, 255}),
    ("sixteen-bit.png", _i16(), "auto", (2, 2, 1),
     lambda a: a[0, 0, 0] == 0 and a[0, 1, 0] == 255 and 126 <= a[1, 0, 0] <= 129),
    ("int32.tiff", encode(Image.fromarray(np.array([[0, 1000], [70000, 5]], np.int32)), "TIFF"),
     "auto", (2, 2, 1), lambda a: a[1, 0, 0] == 255),
    ("float.tiff", encode(Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)),
                          "TIFF"), "auto", (2, 2, 1), lambda a: a[1, 0, 0] == 255 and a[0, 0, 0] == 0),
    ("cmyk.jpg", encode(CMYK, "JPEG", quality=95), "auto", (6, 8, 3),
     lambda a: a[..., 0].min() > 200 and a[..., 1:].max() < 60),
    ("cmyk.tiff", encode(CMYK, "TIFF"), "auto", (6, 8, 3),
     lambda a: a[0, 0].tolist() == [255, 0, 0]),
    ("gray.jpg", encode(Image.fromarray(GRAY), "JPEG"), "auto", (20, 30, 1), None),
    ("progressive.jpg", rgb("JPEG", progressive=True), "auto", (48, 64, 3), None),
    ("subsampled.jpeg", rgb("JPEG", subsampling=2), "auto", (48, 64, 3), None),
    ("lossless.webp", rgb("WEBP", lossless=True), "auto", (48, 64, 3),
     lambda a: np.array_equal(a, NOISE)),
    ("alpha.webp", encode(Image.fromarray(_rgba()), "WEBP", lossless=True), "auto",
     (2, 2, 3), lambda a: a[0, 1].tolist() == [255, 255, 255]),
    ("animated.gif", animated("GIF"), "auto", (12, 16, 3),
     lambda a: a[..., 0].min() > 240 and a[..., 1].max() < 15),
    ("animated.png", animated("PNG"), "auto", (12, 16, 3),
     lambda a: a[0, 0].tolist() == [255, 0, 0]),
    ("animated.webp", animated("WEBP", lossless=True), "auto", (12, 16, 3),
     lambda a: a[0, 0].tolist() == [255, 0, 0]),
    ("multipage.tiff", animated("TIFF"), "auto", (12, 16, 3),
     lambda a: a[0, 0].tolist() == [255, 0, 0]),
    ("lzw.tif", rgb("TIFF", compression="tiff_lzw"), "auto", (48, 64, 3),
     lambda a: np.array_equal(a, NOISE)),
    ("deflate.tiff", rgb("TIFF", compression="tiff_adobe_deflate"), "auto", (48, 64, 3),
     lambda a: np.array_equal(a, NOISE)),
    ("rgb.bmp", rgb("BMP"), "auto", (48, 64, 3), lambda a: np.array_equal(a, NOISE)),
    ("palette.bmp", encode(Image.fromarray(NOISE).quantize(8), "BMP"), "auto", (48, 64, 3), None),
    ("static.gif", rgb("GIF"), "auto", (48, 64, 3), None),
    ("one-pixel.png", encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), "auto", (1, 1, 3),
     lambda a: a.tolist() == [[[1, 2, 3]]]),
    ("thin.png", encode(Image.new("L", (1, 1000), 9), "PNG"), "auto", (1000, 1, 1), None),
    ("UPPER.PNG", rgb("PNG"), "auto", (48, 64, 3), None),
    ("no-extension", rgb("PNG"), "auto", (48, 64, 3), None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "mode", "shape", "check"), VALID,
                         ids=[v[0] for v in VALID])  # fmt: skip
def test_unusual_images_decode_to_uint8_rgb_or_gray(name, data, mode, shape, check):
    arr = decode_image(data, name, mode)
    assert arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]
    assert arr.shape == shape
    if check is not None:
        assert check(arr), arr[:2, :2].tolist()
    # The header probe agrees with the decode on size and channels.
    h, w, gray = probe_image(data, name)
    assert (h, w) == shape[:2]
    if mode == "auto":
        assert gray == (shape[2] == 1)


# ---------------------------------------------------------------- EXIF orientation


def _upright() -> np.ndarray:
    """A non-symmetric image of big flat blocks (so JPEG keeps them): 32×48."""
    img = np.zeros((32, 48, 3), np.uint8)
    img[:16, :16] = (255, 0, 0)
    img[:16, 16:] = (0, 200, 0)
    img[16:, :32] = (0, 0, 255)
    img[16:, 32:] = (250, 250, 0)
    return img


UPRIGHT = _upright()
# What the camera stores for each EXIF orientation (TIFF/EXIF spec: where the
# stored 0th row and 0th column are in the upright picture), written with numpy
# so the test does not borrow Pillow's own table.
STORED = {
    1: UPRIGHT,
    2: UPRIGHT[:, ::-1],
    3: UPRIGHT[::-1, ::-1],
    4: UPRIGHT[::-1, :],
    5: UPRIGHT.transpose(1, 0, 2),
    6: np.rot90(UPRIGHT, 1),
    7: UPRIGHT.transpose(1, 0, 2)[::-1, ::-1],
    8: np.rot90(UPRIGHT, -1),
}


def _with_orientation(orientation: int, fmt: str) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(STORED[orientation]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"quality": 98} if fmt == "JPEG" else {}
    return encode(img, fmt, exif=exif.tobytes(), **kw)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_all_give_the_same_upright_image(orientation, fmt):
    data = _with_orientation(orientation, fmt)
    name = f"o{orientation}.{'jpg' if fmt == 'JPEG' else 'png'}"
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
    arr = decode_image(data, name)
    assert arr.shape == UPRIGHT.shape
    if fmt == "PNG":
        np.testing.assert_array_equal(arr, UPRIGHT)
    else:
        # JPEG blurs block edges a little; a wrong orientation is off by ~100.
        assert np.abs(arr.astype(int) - UPRIGHT).mean() < 10
    assert probe_image(data, name)[:2] == UPRIGHT.shape[:2]


def test_load_image_file_names_missing_and_broken_files(tmp_path):
    with pytest.raises(ImageDecodeError, match=r"missing\.png: cannot read"):
        load_image_file(tmp_path / "missing.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(rgb("JPEG")[:300])
    with pytest.raises(ImageDecodeError, match=r"broken\.jpg"):
        load_image_file(broken)
    good = tmp_path / "good.png"
    good.write_bytes(rgb("PNG"))
    np.testing.assert_array_equal(load_image_file(good), NOISE)


def test_resize_and_channel_helpers():
    small = resize_image(NOISE, 24, 32)
    assert small.shape == (24, 32, 3) and small.dtype == np.uint8
    gray = resize_image(GRAY[..., None], 40, 60)
    assert gray.shape == (40, 60, 1)
    luma = to_channels(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8), 1)
    assert luma[..., 0].tolist() == [[76, 29]]  # ITU-R 601 weights, as Pillow's convert("L")
    assert to_channels(luma, 3).shape == (1, 2, 3)


# ---------------------------------------------------------------- large but legitimate


@pytest.fixture(scope="module")
def poster_jpeg() -> bytes:
    """A 12000×9000 (108-megapixel) grayscale JPEG: dark left half, light right half."""
    from PIL import ImageDraw

    img = Image.new("L", (12_000, 9_000), 40)
    ImageDraw.Draw(img).rectangle((6_000, 0, 11_999, 8_999), fill=220)
    return encode(img, "JPEG", quality=70)


def test_poster_jpeg_is_read_downscaled_within_the_default_budget(poster_jpeg):
    assert MAX_PIXELS < 12_000 * 9_000
    arr = decode_image(poster_jpeg, "poster.jpg")
    assert arr.shape == (4_500, 6_000, 1)  # libjpeg decoded it at 1/2 scale
    assert arr.shape[0] * arr.shape[1] <= MAX_PIXELS
    assert abs(int(arr[:, :2_900].mean()) - 40) < 4 and abs(int(arr[:, 3_100:].mean()) - 220) < 4
    assert probe_image(poster_jpeg, "poster.jpg") == (4_500, 6_000, True)


def test_jpeg_is_decoded_no_larger_than_the_size_asked_for(poster_jpeg):
    arr = decode_image(poster_jpeg, "poster.jpg", "rgb", size=(128, 128))
    assert arr.shape == (1_125, 1_500, 3)  # 1/8 scale: the smallest libjpeg offers, still ≥ 128
    assert decode_image(rgb("JPEG"), "a.jpg", size=(24, 24)).shape == (24, 32, 3)
    assert decode_image(rgb("JPEG"), "a.jpg", size=(40, 40)).shape == (48, 64, 3)


def test_too_large_png_names_the_limit_and_the_setting():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(png_declaring(10_000, 5_000), "poster.png")
    message = str(info.value)
    assert "10000×5000 is 50 megapixels" in message
    assert "at most 40 megapixels" in message
    assert "KESTREL_MAX_IMAGE_PIXELS" in message
    assert "bomb)" not in message  # a poster is not called a bomb


def test_the_setting_raises_the_limit_and_known_sizes_reduce_other_formats(monkeypatch):
    img = Image.new("RGB", (1_500, 1_000), (10, 200, 30))
    data = encode(img, "PNG")
    monkeypatch.setenv("KESTREL_MAX_IMAGE_PIXELS", "1_000_000")
    with pytest.raises(ImageDecodeError, match=r"at most 1 megapixels.*KESTREL_MAX_IMAGE_PIXELS"):
        decode_image(data, "big.png")
    with pytest.raises(ImageDecodeError, match="KESTREL_MAX_IMAGE_PIXELS"):
        probe_image(data, "big.png")
    # A JPEG of the same size fits at 1/2 scale.
    assert decode_image(encode(img, "JPEG"), "big.jpg").shape == (500, 750, 3)
    monkeypatch.setenv("KESTREL_MAX_IMAGE_PIXELS", "2000000")
    assert decode_image(data, "big.png").shape == (1_000, 1_500, 3)
    small = decode_image(data, "big.png", size=(100, 100))
    assert small.shape == (100, 150, 3) and tuple(small[50, 75]) == (10, 200, 30)
    monkeypatch.setenv("KESTREL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="KESTREL_MAX_IMAGE_PIXELS must be a whole number"):
        decode_image(data, "big.png")
