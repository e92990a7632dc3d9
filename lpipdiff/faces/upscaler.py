"""Background upscaling for whole photos: any single-image super-resolution model spandrel can load
(Real-ESRGAN, SwinIR, HAT, DAT, SPAN, Compact, ...), run tile by tile so that memory stays bounded.

A model is named by a weights file, a folder holding one, or a short name of :data:`KNOWN_UPSCALERS`
(Real-ESRGAN x2 and x4), which is downloaded once, from its pinned release URL, into the Hugging
Face cache and checked against its pinned sha256 before it is ever opened.

Weights are read without running code from the file: safetensors as they are, ``.pth``/``.pt``/
``.ckpt`` only through ``torch.load(weights_only=True)``; a pickle that needs more than tensors and
plain containers is refused with one line, and weights holding NaN or infinite values (which would
paint the photo black) are refused like a model's. The state dict then goes to spandrel, which
recognises the architecture from the weights' names and shapes.

Memory: a photo is cut into ``tile`` x ``tile`` input tiles overlapping by ``overlap`` pixels.
Each tile's output is resized to the requested output scale before it is added in, so the
whole-photo buffers are at the *output* size (float32 RGB plus one float32 weight plane: 16 bytes
an output pixel), and the model's own memory is that of one tile (docs/BENCHMARKS.md measures
it). Overlapping tiles are blended with weights that fall linearly to zero over the middle of the
overlap and are zero on the outer quarter of it, so no tile edge shows in the output.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..checks import check_whole_number
from ..config.defaults import DEFAULT_BG_OVERLAP as DEFAULT_OVERLAP
from ..config.defaults import DEFAULT_BG_TILE as DEFAULT_TILE
from ..io.images import SPECIAL_FILE, special_file
from ..model.folder_checks import broken_tensor

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
# Upscaler weights are downloaded into this folder of the Hugging Face cache.
CACHE_FOLDER = "lpipdiff-upscalers"


class UpscalerError(OSError):
    """A background upscaler cannot be used (a bad file, an unknown name, no network); one line says why."""


@dataclass(frozen=True)
class KnownUpscaler:
    """A well-known model: where it is published, and the exact bytes expected there."""

    filename: str
    url: str
    sha256: str
    size: int  # bytes
    scale: int
    license: str


# The official Real-ESRGAN releases (BSD-3-Clause). The checksums are those of the release files,
# as several independent projects pin them; a download that does not match is deleted, never loaded.
KNOWN_UPSCALERS = {
    "realesrgan-x4": KnownUpscaler(
        "RealESRGAN_x4plus.pth",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
        "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        67_040_989, 4, "BSD-3-Clause",
    ),
    "realesrgan-x2": KnownUpscaler(
        "RealESRGAN_x2plus.pth",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
        "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        67_061_725, 2, "BSD-3-Clause",
    ),
}


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where short names are downloaded: ``cache_dir``, else the Hugging Face hub cache
    (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / CACHE_FOLDER


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_known(name: str, cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The weights file of a short name, from the cache or downloaded into it once (checked)."""
    known = KNOWN_UPSCALERS[name]
    folder = cache_folder(cache_dir) / known.sha256[:16]
    target = folder / known.filename
    # Checked again at every load (a fraction of a second): a cache is a folder anyone may write to.
    cached = target.is_file() and not target.is_symlink()
    if cached and target.stat().st_size == known.size and sha256_of(target) == known.sha256:
        return target
    if cached:
        tampered = (f"the cached copy of {name!r} ({target}) is not the pinned file (sha256 {known.sha256}): "
                    "it was changed or damaged after the download")
        if not download:
            raise UpscalerError(f"{tampered}; delete it to download it again")
    if not download:
        raise UpscalerError(f"the background upscaler {name!r} is not downloaded yet ({target})")
    folder.mkdir(parents=True, exist_ok=True)
    # A name of this thread's own: two downloads at once (demo visitors, threads) must not share one file.
    partial = folder / f".{known.filename}.{os.getpid()}.{threading.get_ident()}.partial"
    try:
        with urllib.request.urlopen(known.url, timeout=60) as response, open(partial, "wb") as file:
            shutil.copyfileobj(response, file, 1 << 20)
        found = sha256_of(partial)
        if found != known.sha256:
            raise UpscalerError(
                f"the download of {name!r} from {known.url} has sha256 {found}, not the pinned {known.sha256}; "
                "it was deleted (a changed or tampered release, or a broken download)"
            )
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as error:
        if isinstance(error, UpscalerError):
            raise
        reason = getattr(error, "reason", None) or error
        if cached:
            raise UpscalerError(f"{tampered}, and it could not be downloaded again from {known.url} ({reason}); "
                                "delete it and run once on a machine with internet") from None
        raise UpscalerError(
            f"the background upscaler {name!r} is not in the cache ({target}) and could not be downloaded from "
            f"{known.url} ({reason}); run once on a machine with internet (the file then stays in the Hugging Face "
            f"cache), or download it yourself (sha256 {known.sha256}) and pass the file"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def resolve_weights(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                    download: bool = True) -> Path:
    """The weights file ``spec`` names: a file, a folder holding one (safetensors preferred), or a
    short name of :data:`KNOWN_UPSCALERS`."""
    text = str(spec).strip()
    if text.lower() in KNOWN_UPSCALERS:
        return download_known(text.lower(), cache_dir, download)
    path = Path(text).expanduser()
    if path.is_dir():
        for suffix in WEIGHT_SUFFIXES:
            found = sorted(path.glob(f"*{suffix}"))
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UpscalerError(f"{path} holds several {suffix} files; name the one to use")
        raise UpscalerError(f"{path}: no weights file ({', '.join(WEIGHT_SUFFIXES)}) in this folder")
    if special_file(path):
        raise UpscalerError(f"{path}: {SPECIAL_FILE}")
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise UpscalerError(f"{path}: not a weights file ({', '.join(WEIGHT_SUFFIXES)})")
        return path
    names = ", ".join(KNOWN_UPSCALERS)
    raise UpscalerError(f"{text}: no such weights file or folder, and not a known upscaler ({names})")


def read_state_dict(path: Path) -> dict:
    """The tensors of a weights file, read without running any code from it."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"(GLOBAL [\w.]+)", str(error))
        reason = f"it asks for {found.group(1)}" if found else "it holds more than tensors"
        raise UpscalerError(
            f"{path} is refused: not a weights-only file ({reason}), and unpickling it could run code from it. "
            "Use a safetensors copy of the model, or convert it on a machine you trust"
        ) from None
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file: one line, not a traceback
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise UpscalerError(f"{path}: cannot read weights from it ({type(error).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise UpscalerError(f"{path}: holds a {type(state).__name__}, not a dictionary of weights")
    return state


def load_upscaler(spec: str | os.PathLike, device: str | torch.device | None = None, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, cache_dir: str | os.PathLike | None = None,
                  download: bool = True) -> BackgroundUpscaler:
    """A :class:`BackgroundUpscaler` from a weights file, a folder or a short name."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError, canonicalize_state_dict

    path = resolve_weights(spec, cache_dir, download)
    state = canonicalize_state_dict(read_state_dict(path))
    for name, tensor in state.items():
        problem = isinstance(tensor, torch.Tensor) and broken_tensor(name, tensor)
        if problem:
            raise UpscalerError(f"{path}: {problem}")
    try:
        model = ModelLoader(device=device or "cpu").load_from_state_dict(state)
    except UnsupportedModelError:
        raise UpscalerError(f"{path}: spandrel does not recognise the model's architecture") from None
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise UpscalerError(f"{path}: the weights do not make a model spandrel can build ({error})") from None
    if not isinstance(model, ImageModelDescriptor) or model.input_channels != 3 or model.output_channels != 3:
        raise UpscalerError(f"{path}: not an RGB image-to-image model")
    if model.scale < 1:
        raise UpscalerError(f"{path}: scale {model.scale} is not an upscaler")
    return BackgroundUpscaler(model.eval(), name=str(spec), tile=tile, overlap=overlap)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _ramp(length: int, start_edge: bool, end_edge: bool, margin: int, blend: int) -> np.ndarray:
    """1-D tile weight (output pixels): 0 on the outer ``margin``, a linear ramp over ``blend``,
    1 inside; image borders (``*_edge`` False) keep full weight."""
    weight = np.ones(length, dtype=np.float32)
    rise = np.concatenate([np.zeros(margin), (np.arange(blend) + 0.5) / blend]).astype(np.float32)
    rise = rise[:length]
    if start_edge:
        weight[: len(rise)] = np.minimum(weight[: len(rise)], rise)
    if end_edge:
        weight[length - len(rise):] = np.minimum(weight[length - len(rise):], rise[::-1])
    return weight


class BackgroundUpscaler:
    """A spandrel image model run tile by tile on whole photos.

    Args:
        model: a spandrel ``ImageModelDescriptor`` (or any callable BCHW [0, 1] -> upscaled, with
            ``scale``).
        tile: input tile side in pixels (memory grows with its square).
        overlap: input pixels shared by neighbouring tiles (blended; at least 4).
    """

    def __init__(self, model, name: str = "", tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP):
        tile = check_whole_number("the upscaler's tile (pixels)", tile, 32)
        overlap = check_whole_number("the upscaler's tile overlap (pixels)", overlap, 4, tile // 2)
        self.model, self.name, self.tile, self.overlap = model, name, tile, overlap
        self.scale = int(model.scale)

    @property
    def device(self) -> torch.device:
        return getattr(self.model, "device", torch.device("cpu"))

    def tiles(self, height: int, width: int) -> int:
        """How many tiles a photo of this size is cut into (the work of one photo)."""
        return len(_tile_starts(height, self.tile, self.overlap)) * len(_tile_starts(width, self.tile, self.overlap))

    @torch.inference_mode()
    def _run(self, tile: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None].to(self.device)
        return self.model(tensor)[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()

    def __call__(self, image: np.ndarray, outscale: float | None = None) -> np.ndarray:
        """``image`` (HxWx3 float RGB in [0, 1]) upscaled to ``round(side * outscale)`` (default: the
        model's own scale); float32 RGB in [0, 1]."""
        image = np.asarray(image, dtype=np.float32)
        height, width = image.shape[:2]
        outscale = float(self.scale if outscale is None else outscale)
        out_h, out_w = int(height * outscale), int(width * outscale)
        ratio_y, ratio_x = out_h / height, out_w / width
        output = np.zeros((out_h, out_w, 3), dtype=np.float32)
        total = np.zeros((out_h, out_w, 1), dtype=np.float32)
        ys, xs = _tile_starts(height, self.tile, self.overlap), _tile_starts(width, self.tile, self.overlap)
        for y in ys:
            for x in xs:
                th, tw = min(self.tile, height), min(self.tile, width)
                # Output rows/columns of this tile, on the output grid (no rounding drift between tiles).
                y0, y1 = round(y * ratio_y), round((y + th) * ratio_y)
                x0, x1 = round(x * ratio_x), round((x + tw) * ratio_x)
                result = self._run(image[y : y + th, x : x + tw])
                if result.shape[:2] != (y1 - y0, x1 - x0):
                    result = cv2.resize(result, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA
                                        if outscale < self.scale else cv2.INTER_LANCZOS4)
                margin_y, blend_y = round(self.overlap * ratio_y / 4), max(1, round(self.overlap * ratio_y / 2))
                margin_x, blend_x = round(self.overlap * ratio_x / 4), max(1, round(self.overlap * ratio_x / 2))
                weight = (_ramp(y1 - y0, y > 0, y + th < height, margin_y, blend_y)[:, None]
                          * _ramp(x1 - x0, x > 0, x + tw < width, margin_x, blend_x)[None, :])[..., None]
                output[y0:y1, x0:x1] += result * weight
                total[y0:y1, x0:x1] += weight
        output /= np.maximum(total, 1e-8)
        return np.clip(output, 0, 1, out=output)
