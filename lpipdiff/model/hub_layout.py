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
import re
import shutil
from pathlib import Path

REMOTE_UNET_MODULE = "lpipdiff_unet"
# Keywords that say where to download from; once the folder is local they have done their job.
DOWNLOAD_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")
HUB_FILES = ["*.json", "*.py", "unet/*.safetensors", "unet/*.json", "unet/*.py", "scheduler/*"]
# Folders saved by versions whose modules were not yet grouped into subpackages name this UNet module.
PREVIOUS_UNET_MODULES = ("lpipdiff.unet",)


# A relative import at the start of a line, of any depth (one dot or more).
RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)(\.+)([\w.]+)(\s+import\b)", re.MULTILINE)


def _imported_file(source: Path, dots: str, module: str) -> Path:
    """The file a relative import names, from the importing file's place in the package."""
    package = source.parent
    for _ in range(len(dots) - 1):
        package = package.parent
    return package.joinpath(*module.split(".")).with_suffix(".py")


def remote_code_files(pipeline_file: str | Path) -> list[Path]:
    """The modules a pipeline file needs beside it: its relative imports at the start of a line,
    transitively. A module missing on disk is skipped: in a pipeline loaded as remote code the
    loader copied only what the pipeline file imports, so the missing one is imported inside a
    function the Hub copy never calls (the image module's safe_files)."""
    found, todo = set(), [Path(pipeline_file)]
    while todo:
        source = todo.pop()
        for match in RELATIVE_IMPORT.finditer(source.read_text()):
            path = _imported_file(source, match[2], match[3])
            if path not in found and path.is_file():
                found.add(path)
                todo.append(path)
    return sorted(found)


def flat_source(source: Path, flat_names: set[str]) -> str:
    """A module's text for the Hub folder, where every module sits at the root: a relative import
    of a module in ``flat_names`` becomes ``from .name import`` (diffusers' remote-code loader
    follows single-dot imports only)."""

    def flatten(match: re.Match) -> str:
        name = match[3].rsplit(".", 1)[-1]
        return f"{match[1]}.{name}{match[4]}" if name in flat_names else match[0]

    return RELATIVE_IMPORT.sub(flatten, source.read_text())


def make_self_contained(folder, pipeline_file, unet_file) -> None:
    """Give a saved pipeline folder diffusers' custom-code layout (see the module docstring)."""
    folder, pipeline_file = Path(folder), Path(pipeline_file)
    sources = [pipeline_file, *remote_code_files(pipeline_file)]
    names = [source.stem for source in sources]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"the Hub layout needs module names that are unique across the package: {clashes}")
    for source in sources:
        (folder / source.name).write_text(flat_source(source, set(names)))
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
        hub_layout = isinstance(index.get("_class_name"), list)
        previous_layout = isinstance(index.get("unet"), list) and index["unet"][:1] == list(PREVIOUS_UNET_MODULES[:1])
        if not (hub_layout or previous_layout):
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
