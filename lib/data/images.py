"""Safe image reading: the one function every part of Kestrel decodes images with.

Images come from strangers (uploads, server folders, the camera), so decoding is
deliberately narrow:

- Pillow only, limited to JPEG, PNG, BMP, GIF, WEBP and TIFF;
- the declared size is checked *before* pixels are decoded, so a decompression
  bomb (a tiny file declaring a gigantic canvas) is refused without allocating it.
  At most ``KESTREL_MAX_IMAGE_PIXELS`` pixels (default 40 million) are decoded:
  a larger JPEG (a 100-megapixel poster) is decoded at 1/2, 1/4 or 1/8 scale by
  libjpeg itself (Pillow's draft mode) so it fits; other formats cannot be read
  smaller, so above the limit they are refused with a message naming the setting.
  When the caller knows the size it will resize to, JPEGs are decoded no larger
  than needed and other formats are reduced right after decoding;
- EXIF orientation is applied, so a phone photo comes out upright;
- animated images give their first frame;
- every mode is normalised to ``RGB`` or ``L`` uint8 (CMYK, 16-bit, palette with
  transparency and RGBA are composited on white);
- zero-byte, truncated, wrong-extension and non-image files raise one typed
  error, :class:`ImageDecodeError`, whose message names the file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from lib.errors import KestrelError

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
# File extensions that may hold each format; a file whose content does not match
# its extension is refused (a polyglot or a renamed file is not what it claims).
EXTENSIONS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".dib": "BMP",
    ".gif": "GIF",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
MAX_PIXELS = 40_000_000  # default decode budget: ~ a 7000×5700 photo, 160 MB as RGBA
PIXELS_SETTING = "KESTREL_MAX_IMAGE_PIXELS"  # raises (or lowers) MAX_PIXELS
JPEG_SCALES = (1, 2, 4, 8)  # what libjpeg can decode to directly (DCT scaling)
MAX_SIDE = 20_000  # a 1×40M strip is as unusable as a bomb
MAX_FILE_BYTES = 64 * 1024 * 1024  # one image file; far above any real photo

_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")

# Pillow's own bomb guard (warns at this, raises at 2×) stays as a second line behind
# ours; it is set in _open to what a JPEG decoded at 1/8 scale may declare.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS * JPEG_SCALES[-1] ** 2
# A truncated file must fail, not decode to a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(KestrelError):
    """A file that is not a readable, supported image; the message names the file."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


def max_image_pixels() -> int:
    """The decode budget in pixels: ``KESTREL_MAX_IMAGE_PIXELS`` or :data:`MAX_PIXELS`."""
    raw = os.environ.get(PIXELS_SETTING, "").strip().replace("_", "")
    if not raw:
        return MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{PIXELS_SETTING} must be a whole number of pixels (e.g. 150000000), got {raw!r}"
        )
    return value


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.3g}"


def _too_many_pixels(w: int, h: int, limit: int) -> str:
    return (
        f"too many pixels: {w}×{h} is {_megapixels(w * h)} megapixels and at most "
        f"{_megapixels(limit)} megapixels are decoded (JPEGs up to "
        f"{_megapixels(limit * JPEG_SCALES[-1] ** 2)} are read downscaled); set "
        f"{PIXELS_SETTING} to raise the limit, which guards against decompression bombs"
    )


def _jpeg_scale(w: int, h: int, limit: int) -> int | None:
    """The least DCT scale that decodes a w×h JPEG within ``limit`` pixels, or None."""
    for s in JPEG_SCALES:
        if -(-w // s) * -(-h // s) <= limit:
            return s
    return None


def _open(data: bytes, name: str) -> tuple[Image.Image, int]:
    """Open ``data`` lazily (header only) and check format, extension and size.

    Returns:
        ``(image, scale)``: the JPEG decode scale that keeps it within the pixel
        budget (1 for other formats, which are refused above it).
    """
    if not data:
        raise ImageDecodeError(name, "the file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageDecodeError(
            name, f"the file is larger than {MAX_FILE_BYTES // 2**20} MB; use a smaller image"
        )
    ext = os.path.splitext(name)[1].lower()
    if ext and ext not in EXTENSIONS:
        raise ImageDecodeError(
            name,
            f"'{ext}' is not a supported image type; use JPEG, PNG, BMP, GIF, WEBP or TIFF",
        )
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit * JPEG_SCALES[-1] ** 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(
            name,
            f"too many pixels: more than {_megapixels(Image.MAX_IMAGE_PIXELS or 0)} megapixels "
            f"declared; set {PIXELS_SETTING} to raise the limit "
            f"(now {_megapixels(limit)} megapixels), which guards against decompression bombs",
        ) from None
    except Exception:
        raise ImageDecodeError(
            name, "not a readable image (supported: JPEG, PNG, BMP, GIF, WEBP, TIFF)"
        ) from None
    if ext and EXTENSIONS[ext] != img.format:
        raise ImageDecodeError(
            name, f"the file is a {img.format} image but its extension says {ext}; rename it"
        )
    w, h = img.size
    scale = 1
    if w >= 1 and h >= 1 and w * h > limit:
        scale = _jpeg_scale(w, h, limit) if img.format == "JPEG" else None
        if scale is None:
            raise ImageDecodeError(name, _too_many_pixels(w, h, limit))
    if w < 1 or h < 1 or -(-max(w, h) // scale) > MAX_SIDE:
        raise ImageDecodeError(
            name,
            f"declared size {w}×{h} is outside the allowed range "
            f"(at least 1 and at most {MAX_SIDE} px a side)",
        )
    return img, scale


def probe_image(data: bytes, name: str) -> tuple[int, int, bool]:
    """Check an image's header without decoding its pixels.

    Returns:
        ``(height, width, is_grayscale)`` as :func:`decode_image` would give them
        (EXIF rotation taken into account).

    Raises:
        ImageDecodeError: for anything :func:`decode_image` would refuse from the header.
    """
    img, scale = _open(data, name)
    w, h = -(-img.size[0] // scale), -(-img.size[1] // scale)
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return h, w, img.mode in _GRAY_MODES


def _to_uint8(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``RGB`` or ``L`` (8 bit), transparency composited on white."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode == "P":
        has_alpha = "transparency" in img.info or img.palette.mode == "RGBA"
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        base = "L" if mode in ("LA", "La") else "RGB"
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert(base)
    if mode == "1":
        return img.convert("L")
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit and float images: scale their actual range to 0..255 rather than
        # clip (Pillow's convert("L") clips 16-bit data to white).
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16") or (mode == "I" and hi > 255):
            lo, hi = 0.0, 65535.0 if hi > 255 else 255.0
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX...


def _reduce_factor(w: int, h: int, size: tuple[int, int]) -> int:
    """The largest whole factor that keeps a w×h image at least ``size`` either way up."""
    th, tw = max(1, size[0]), max(1, size[1])
    return max(1, min(w // tw, h // th, w // th, h // tw))


def decode_image(
    data: bytes, name: str, color_mode: str = "auto", size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode image bytes safely into a uint8 array.

    Args:
        data: the file's bytes.
        name: the file name, for error messages and the extension check.
        color_mode: ``"auto"`` keeps grayscale as one channel and colour as three;
            ``"rgb"`` or ``"grayscale"`` force 3 or 1 channels.
        size: ``(height, width)`` the caller will resize to, if known: the image
            may then come back smaller than its file (never smaller than ``size``
            either way up), decoded that small where the format allows (JPEG).

    Returns:
        uint8 array (H, W, C), C = 1 or 3, upright (EXIF orientation applied),
        first frame of an animation. A JPEG larger than the pixel budget comes
        back downscaled by 2, 4 or 8 to fit it.

    Raises:
        ImageDecodeError: zero-byte, truncated, non-image, unsupported format,
            wrong extension, or too large (decompression bomb).
    """
    if color_mode not in ("auto", "rgb", "grayscale"):
        raise ValueError(f"color_mode must be auto, rgb or grayscale, got {color_mode!r}")
    img, scale = _open(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.seek(0)  # first frame of an animation
            if img.format == "JPEG" and (scale > 1 or size):
                w, h = img.size
                wanted = max(scale, _reduce_factor(w, h, size) if size else 1)
                # draft picks the largest DCT scale s with size // s >= the size asked for.
                draft_mode = "L" if color_mode == "grayscale" else None
                img.draft(draft_mode, (max(1, w // wanted), max(1, h // wanted)))
            img.load()
            if size and img.format != "JPEG":
                factor = _reduce_factor(*img.size, size)
                if factor > 1:
                    img = img.reduce(factor)
            img = ImageOps.exif_transpose(img) or img
            img = _to_uint8(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(name, _too_many_pixels(*img.size, max_image_pixels())) from None
    except Exception as exc:
        reason = (
            "truncated or corrupt image data"
            if isinstance(exc, (OSError, SyntaxError))
            else (f"cannot decode the image ({type(exc).__name__})")
        )
        raise ImageDecodeError(name, reason) from None
    if color_mode == "rgb" and img.mode != "RGB":
        img = img.convert("RGB")
    elif color_mode == "grayscale" and img.mode != "L":
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def load_image_file(
    path: str | os.PathLike, color_mode: str = "auto", size: tuple[int, int] | None = None
) -> np.ndarray:
    """Read and :func:`decode_image` a file; an unreadable file is an ImageDecodeError."""
    name = str(path)
    try:
        file_bytes = os.path.getsize(path)
        if file_bytes > MAX_FILE_BYTES:
            raise ImageDecodeError(
                name, f"the file is larger than {MAX_FILE_BYTES // 2**20} MB; use a smaller image"
            )
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(name, f"cannot read the file ({exc.strerror or exc})") from None
    return decode_image(data, name, color_mode, size)


def resize_image(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one uint8 (H, W, C) image to (height, width, C); area-averaged when shrinking."""
    if arr.shape[0] == height and arr.shape[1] == width:
        return arr
    channels = arr.shape[2]
    img = Image.fromarray(arr[:, :, 0] if channels == 1 else arr)
    shrinking = height < arr.shape[0] and width < arr.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    out = np.asarray(img.resize((width, height), resample), dtype=np.uint8)
    return out[:, :, None] if channels == 1 else out


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 images (..., C) to 1 or 3 channels (luma by ITU-R 601, like Pillow)."""
    have = arr.shape[-1]
    if have == channels:
        return arr
    if channels == 3:
        return np.repeat(arr, 3, axis=-1)
    weights = np.array([299, 587, 114], dtype=np.uint32)
    luma = (arr.astype(np.uint32) @ weights + 500) // 1000
    return luma.astype(np.uint8)[..., None]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 array for display, from 2-D or 1-channel grayscale, RGB or RGBA."""
    img = np.asarray(image, np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img[:, :, :3]
