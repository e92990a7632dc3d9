"""Turning whatever a user hands us (files, PIL images, arrays, tensors) into RGB images.

Everything returns float32 RGB in ``[0, 1]`` (``HxWx3`` arrays) or raises
:class:`InvalidImageError` with a message a person can act on.

Files and PIL images are taken as a viewer shows them: an EXIF Orientation tag (phones and
scanners store photos sideways with one) is applied, and an embedded ICC colour profile is
converted to sRGB, the space the model was trained in. Results are written as PNG in sRGB
without a profile (PNG's default space, which every viewer assumes). Animated GIF/WebP/PNG
and multi-page TIFF are refused: restoring frame by frame would sample every frame
independently (the faces would flicker) and multiply the work of one request by the frame
count, so the user is asked to export the frame they want.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Bigger inputs would take minutes and gigabytes before any face is found; refuse them early.
MAX_PIXELS = 36_000_000
MIN_SIDE = 8


class InvalidImageError(ValueError):
    """The input cannot be used as an image; the message says why."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


# Reading a named pipe or a device blocks until something writes to it, maybe forever: such a path
# where a file is expected is refused by name, never opened.
SPECIAL_FILE = "not a regular file (a named pipe, device or socket)"


def special_file(path: str | Path) -> bool:
    """Whether something that is neither a regular file nor a folder sits at ``path`` (links followed)."""
    path = Path(path)
    return path.exists() and not path.is_file() and not path.is_dir()


def load_image_file(path: str | Path) -> np.ndarray:
    """Read an image file into an ``HxWx3`` float32 RGB array in ``[0, 1]``."""
    path = Path(path)
    if path.is_dir():
        raise InvalidImageError(f"{path}: is a folder, not an image file")
    if special_file(path):
        raise InvalidImageError(f"{path}: {SPECIAL_FILE}")
    if not path.is_file():
        raise InvalidImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"{path}: the file is empty")
    try:
        with PIL.Image.open(path) as image:
            check_size(*image.size, what=str(path))
            check_still(image, what=str(path))
            image.load()
            return pil_to_array(image, what=str(path))
    except PIL.Image.DecompressionBombError:
        # PIL refuses to even open images far beyond its own pixel limit, before our size check.
        raise InvalidImageError(
            f"{path}: too large (limit {MAX_PIXELS / 1e6:.0f} megapixels); downscale it first"
        ) from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidImageError(f"{path}: not a readable image ({error})") from None


def check_size(width: int, height: int, what: str = "image") -> None:
    if width * height > MAX_PIXELS:
        raise InvalidImageError(
            f"{what}: {width}x{height} is too large (limit {MAX_PIXELS / 1e6:.0f} megapixels); downscale it first"
        )
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError(f"{what}: {width}x{height} is too small (at least {MIN_SIDE} pixels a side)")


def check_still(image: PIL.Image.Image, what: str = "image") -> None:
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise InvalidImageError(
            f"{what}: an animated or multi-page image ({frames} frames); only still images are restored: "
            "save the frame you want as a PNG or JPEG"
        )


def upright(image: PIL.Image.Image, what: str = "image") -> PIL.Image.Image:
    """The image as a viewer shows it: its EXIF orientation applied and its colours in sRGB."""
    try:
        image = PIL.ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as error:
        raise InvalidImageError(f"{what}: its EXIF orientation cannot be read ({error})") from None
    profile = image.info.get("icc_profile")
    if not profile or image.mode not in ("RGB", "RGBA", "CMYK"):
        # Gray, palette, 16-bit and float images are taken as sRGB: PIL's littleCMS binding converts
        # only 8-bit colour modes, and phone, camera and print files are those.
        return image
    from PIL import ImageCms

    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        base = image.convert("RGB") if image.mode == "RGBA" else image
        converted = ImageCms.profileToProfile(base, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        raise InvalidImageError(f"{what}: its embedded colour profile cannot be used ({error})") from None
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def pil_to_array(image: PIL.Image.Image, what: str = "image") -> np.ndarray:
    """Any PIL mode (8/16-bit, float, grayscale, palette, RGBA, CMYK) to float RGB in [0, 1], upright
    and in sRGB (see the module docstring)."""
    check_still(image, what)
    image = upright(image, what)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return array_to_rgb(np.clip(values / peak, 0, 1))
    if image.mode == "F":
        return array_to_rgb(np.asarray(image, dtype=np.float32))
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """A numpy image (HxW, HxWx1, HxWx3 or HxWx4; uint8, uint16 or float in [0, 1]) to float RGB."""
    array = np.asarray(array)
    if array.size == 0:
        raise InvalidImageError("the image is empty")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        pass
    elif array.ndim == 2:
        array = array[..., None]
    else:
        raise InvalidImageError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {array.shape}")
    check_size(array.shape[1], array.shape[0])
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise InvalidImageError("the image contains NaN or infinite values")
        if array.min() < -1e-3 or array.max() > 1 + 1e-3:
            raise InvalidImageError(
                f"float images must lie in [0, 1]; got values in [{array.min():.3g}, {array.max():.3g}]"
            )
        array = np.clip(array, 0, 1)
    else:
        raise InvalidImageError(f"unsupported pixel type {array.dtype}; use uint8, uint16 or float")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def tensor_to_rgb(image: torch.Tensor) -> np.ndarray:
    """A CxHxW (or 1xCxHxW) tensor to float RGB, through :func:`array_to_rgb`, so that a tensor's
    pixel types mean what an array's do (uint8 0..255, float 0..1; complex or bool refused)."""
    if image.device.type == "meta":
        raise InvalidImageError("the tensor is on the meta device: it has a shape but no pixels")
    if image.layout != torch.strided or image.is_quantized:
        kind = "quantized" if image.is_quantized else str(image.layout).removeprefix("torch.")
        raise InvalidImageError(f"a {kind} tensor; pass a plain one (tensor.to_dense(), tensor.dequantize())")
    tensor = image.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # numpy has no bfloat16
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise InvalidImageError(f"expected a CxHxW tensor with 1, 3 or 4 channels, got shape {tuple(image.shape)}")
    return array_to_rgb(tensor.permute(1, 2, 0).numpy())


def to_rgb_array(image) -> np.ndarray:
    """One image given as a path, PIL image, numpy array or CHW/1xCxHxW tensor in [0, 1]."""
    if isinstance(image, (str, Path)):
        return load_image_file(image)
    if isinstance(image, PIL.Image.Image):
        check_size(*image.size)
        try:
            return pil_to_array(image)
        except (OSError, SyntaxError, ValueError) as error:  # a lazily opened file only decodes here
            if isinstance(error, InvalidImageError):
                raise
            raise InvalidImageError(f"the PIL image cannot be decoded ({error})") from None
    if isinstance(image, torch.Tensor):
        return tensor_to_rgb(image)
    if isinstance(image, np.ndarray):
        return array_to_rgb(image)
    raise InvalidImageError(f"expected a file path, PIL image, numpy array or torch tensor, got {type(image).__name__}")


def resize_array(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC float image to ``size`` (side, or (width, height)); area filter when shrinking."""
    width, height = (size, size) if isinstance(size, int) else size
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    shrinking = width * height < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    if resized.ndim < image.ndim:  # OpenCV drops a single channel axis
        resized = resized[..., None]
    return np.clip(resized, 0, 1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8, rounded to the nearest level (values outside are clipped)."""
    return (np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def array_to_pil(image: np.ndarray) -> PIL.Image.Image:
    return PIL.Image.fromarray(to_uint8(image))


def save_image(image: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write an image as an sRGB PNG (other suffixes: their format); an existing file at ``path`` is
    kept (:class:`~lpipdiff.io.safe_files.OutputExistsError`) unless ``overwrite``."""
    # Imported here: the pipeline's Hub copy imports this module, and diffusers' remote-code loader
    # brings along only the pipeline file's own relative imports, so safe_files is not there (and
    # nothing there writes files).
    from .safe_files import write_bytes

    path = Path(path)
    encoded = io.BytesIO()
    array_to_pil(image).save(encoded, format=PIL.Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    return write_bytes(path, encoded.getvalue(), overwrite)
