"""Finding and loading a pipeline: the bundled default, a local folder or a Hub repo id."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..config.defaults import DEFAULT_BACKEND, DEFAULT_SCHEDULER
from ..io.images import SPECIAL_FILE, special_file
from .backends import ONNX_FILE, GraphError, with_backend
from .folder_checks import ModelLoadError, check_model_folder, read_json
from .pipeline_lpipdiff import LPIPDiffPipeline
from .sampling import sampling_pipeline

# Shipped inside the package (package data), so that a plain `pip install` has a default model
# and works offline; other models are a folder or a Hub repo id away.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "bundled" / "lpipdiff-utkface-128"


def resolve_model(model: str | os.PathLike | None = None) -> str:
    """The model to use: the argument (a folder or a Hub repo id), else the bundled checkpoint."""
    chosen = model or DEFAULT_MODEL
    path = Path(chosen).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; expected a pipeline folder with model_index.json")
        index = path / "model_index.json"
        if special_file(index):
            raise ModelLoadError(f"{index}: {SPECIAL_FILE}")
        if not index.is_file():
            raise ModelLoadError(f"{path} is not a pipeline folder: it has no model_index.json")
        components = read_json(index)  # malformed, huge or deeply nested JSON: one ModelLoadError
        if "unet" not in components or "scheduler" not in components:
            raise ModelLoadError(f"{path} is not an LPIP-Diff pipeline (model_index.json lacks unet/scheduler)")
        refuse_pickled_weights(path / "unet")
        return str(path)
    if str(chosen).count("/") == 1 and not str(chosen).startswith((".", "/", "~")):
        return str(chosen)  # a Hub repo id
    if path == DEFAULT_MODEL:
        raise ModelLoadError(
            f"the bundled model is missing at {path}; reinstall lpipdiff or pass --model"
        )
    raise ModelLoadError(f"{chosen}: no such model folder (and not a Hub repo id of the form org/name)")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickled_weights(folder: Path) -> None:
    """Explain a folder whose weights are pickled only: those are refused on purpose (unpickling
    runs code from the file), not missing by accident."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelLoadError(
            f"{folder} holds only pickled weights ({', '.join(pickled)}), which are refused on purpose: "
            "unpickling a file can run any code in it. Convert them to safetensors "
            "(diffusion_pytorch_model.safetensors) on a machine you trust."
        )


def load_pipeline(
    model: str | os.PathLike | None = None,
    scheduler: str = DEFAULT_SCHEDULER,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    backend: str = DEFAULT_BACKEND,
    threads: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LPIPDiffPipeline:
    """Load an LPIP-Diff pipeline ready to restore faces.

    Weights are read with safetensors only (``use_safetensors=True``): a folder holding only
    pickled weights is refused rather than unpickled. Weights saved in fp16 are upcast to
    ``dtype`` (float32 by default, which CPUs need for speed and accuracy).

    ``backend`` says how the UNet runs (:mod:`lpipdiff.model.backends`): ``"auto"`` (the default) the
    fastest way this machine supports, torch on a GPU; ``"torch"``, ``"torch-bf16"``,
    ``"onnxruntime"`` or ``"openvino"`` by name. ONNX Runtime and OpenVINO read the folder's
    ``unet/model.onnx`` (``lpipdiff export --onnx``) or a graph exported once into ``cache_dir``;
    ``threads`` is their thread count (default: torch's).
    """
    source = resolve_model(model)
    check_model_folder(source)
    try:
        pipeline = LPIPDiffPipeline.from_pretrained(source, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelLoadError(f"could not load an LPIP-Diff pipeline from {source}: {error}") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipeline = sampling_pipeline(pipeline, scheduler).to(device)
    if backend != "torch":
        onnx = Path(source) / "unet" / ONNX_FILE if Path(source).is_dir() else None
        try:
            pipeline.unet = with_backend(pipeline.unet.eval(), backend, onnx if onnx and onnx.exists() else None,
                                         cache_dir, threads)
        except ImportError as error:
            raise ModelLoadError(f"backend {backend!r} is not installed: {error}") from None
        except GraphError as error:  # a graph that is not this model's, or not readable
            raise ModelLoadError(str(error)) from None
    return pipeline
