"""Export a pipeline folder as a self-contained Hub folder.

An exported folder loads with ``DiffusionPipeline.from_pretrained(folder_or_repo,
trust_remote_code=True)`` in a Python without this package (the layout: ``hub_layout.py``).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

from ..io.safe_files import install_tree
from ..model import pipeline_lpipdiff, unet
from ..model.hub_layout import make_self_contained
from .card import model_card


def export(
    model: str | os.PathLike | None, output: str | os.PathLike, repo_id: str = "ORG/lpipdiff", overwrite: bool = False,
    onnx: bool = False,
) -> Path:
    """Write the self-contained Hub folder of ``model`` (a pipeline folder) into ``output``.

    The folder is written beside ``output`` first and its files then placed into ``output``
    exclusively: a file already there (a README, another model's weights) is kept and named
    (:class:`~lpipdiff.io.safe_files.OutputExistsError`) unless ``overwrite``. ``onnx``: also the UNet as
    ``unet/model.onnx`` (fp32, dynamic batch), which ``load_pipeline(..., backend="onnxruntime")`` and
    ``"openvino"`` read.
    """
    from ..model.loading import load_pipeline, resolve_model

    source = Path(resolve_model(model))
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output} exists and is not a folder")
    if output.resolve() == source.resolve():
        raise ValueError("export into a new folder, not over the model itself")
    pipeline = load_pipeline(source, device="cpu", backend="torch")
    dtype = _saved_dtype(source)
    pipeline.to(dtype=dtype)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Staged on the same file system as the output, so that placing a file is a link, not a copy.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        pipeline.save_pretrained(staging)
        if onnx:
            from ..model.backends import ONNX_FILE, export_onnx

            export_onnx(copy.deepcopy(pipeline.unet).float(), staging / "unet" / ONNX_FILE)
        make_self_contained(staging, pipeline_lpipdiff.__file__, unet.__file__)
        for extra in ("training_config.json", "evaluation.json"):
            if (source / extra).is_file():
                shutil.copy(source / extra, staging / extra)
        model_card(staging, repo_id).save(staging / "README.md")
        _modes_as_umask(staging)
        install_tree(staging, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _modes_as_umask(folder: Path) -> None:
    """Give every file the mode a new file gets here (safetensors' atomic write leaves 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _saved_dtype(folder: Path):
    """The dtype the weights were saved in, so fp16 checkpoints stay fp16 on the Hub."""
    from safetensors import safe_open

    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        return handle.get_tensor(next(iter(handle.keys()))).dtype
