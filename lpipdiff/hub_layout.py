"""The Hub layout of a pipeline folder: loading and writing diffusers' custom-code layout.

A folder in that layout loads with ``DiffusionPipeline.from_pretrained(folder_or_repo,
trust_remote_code=True)`` in a Python without this package: the pipeline file and the modules
it imports sit at the root, the UNet's module in ``unet/``, and ``model_index.json`` names
them. Where ``lpipdiff`` is installed, :class:`HubLayoutMixin` loads such folders without
remote code, and a pipeline loaded *as* remote code writes the layout again when saved.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

from diffusers.utils.dynamic_modules_utils import get_relative_imports

REMOTE_UNET_MODULE = "lpipdiff_unet"
# Keywords that say where to download from; once the folder is local they have done their job.
DOWNLOAD_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")
HUB_FILES = ["*.json", "*.py", "unet/*.safetensors", "unet/*.json", "unet/*.py", "scheduler/*"]


def remote_code_files(pipeline_file: str | Path) -> list[Path]:
    """The modules a pipeline file needs beside it: its relative imports, transitively, found the
    way diffusers' remote-code loader finds them. A module missing beside a pipeline loaded as
    remote code is skipped: the loader copied only the pipeline file's own imports, so the missing
    one is imported inside a function the Hub copy never calls (image_io's safe_files)."""
    folder, found, todo = Path(pipeline_file).parent, set(), [Path(pipeline_file)]
    while todo:
        for name in get_relative_imports(str(todo.pop())):
            path = folder / f"{name}.py"
            if path not in found and path.is_file():
                found.add(path)
                todo.append(path)
    return sorted(found)


def make_self_contained(folder, pipeline_file, unet_file) -> None:
    """Give a saved pipeline folder diffusers' custom-code layout (see the module docstring)."""
    folder, pipeline_file = Path(folder), Path(pipeline_file)
    for source in [pipeline_file, *remote_code_files(pipeline_file)]:
        shutil.copy(source, folder / source.name)
    (folder / "unet").mkdir(exist_ok=True)
    shutil.copy(unet_file, folder / "unet" / f"{REMOTE_UNET_MODULE}.py")
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text())
    class_name = index["_class_name"]
    index["_class_name"] = [pipeline_file.stem, class_name if isinstance(class_name, str) else class_name[-1]]
    index["unet"] = [REMOTE_UNET_MODULE, index["unet"][1]]
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def is_installed_class(cls) -> bool:
    """True for the classes of the installed ``lpipdiff`` package, False for their remote-code copies."""
    return cls.__module__.startswith("lpipdiff.")


class HubLayoutMixin:
    """Lets the installed pipeline class load Hub-layout folders and repo ids without remote code,
    and keeps the layout when a pipeline loaded as remote code is saved again."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """As ``DiffusionPipeline.from_pretrained``; every keyword is passed on (download keywords to
        the download, the rest to the UNet's ``from_pretrained``, as diffusers does per component)."""
        if not is_installed_class(cls):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            download = {key: kwargs[key] for key in DOWNLOAD_KWARGS if key in kwargs}
            folder = Path(snapshot_download(str(pretrained_model_name_or_path), allow_patterns=HUB_FILES, **download))
        index_file = folder / "model_index.json"
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        if not isinstance(index.get("_class_name"), list):
            return super().from_pretrained(folder, **kwargs)

        import diffusers

        from .unet import PatchFusionUNet

        unet, scheduler = kwargs.pop("unet", None), kwargs.pop("scheduler", None)
        model_kwargs = {key: value for key, value in kwargs.items() if key not in DOWNLOAD_KWARGS}
        unet = unet or PatchFusionUNet.from_pretrained(folder, subfolder="unet", **model_kwargs)
        scheduler_class = getattr(diffusers, index["scheduler"][1])
        scheduler = scheduler or scheduler_class.from_pretrained(folder, subfolder="scheduler")
        return cls(unet=unet, scheduler=scheduler)

    def save_pretrained(self, save_directory, **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        if not is_installed_class(type(self)):
            # Loaded as Hub remote code: diffusers just wrote module paths of its own module
            # cache into model_index.json; write the code and the Hub layout again.
            make_self_contained(save_directory, inspect.getfile(type(self)), inspect.getfile(type(self.unet)))
