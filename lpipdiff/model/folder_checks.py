"""Refusing a broken model folder at load, before any restoration runs.

A folder made by hand or damaged on the way loaded without a word before: NaN weights wrote
black images, a missing tensor was silently initialised at random, a face size of "128" or
10**9 failed (or allocated) at the first restoration. :func:`check_model_folder` reads the
folder's JSON files and the safetensors header and weights (nothing is unpickled, no code
is imported) and raises one :class:`ModelLoadError` naming the file and
the problem.
"""

from __future__ import annotations

import inspect
import json
import math
import struct
from pathlib import Path

import torch

from ..checks import is_whole_number
from ..io.images import SPECIAL_FILE, special_file

MAX_JSON_BYTES = 1_000_000  # a config is a few hundred bytes; anything near this is not one
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
MAX_FACE_SIZE = 4096
PIPELINE_CLASS, UNET_CLASS = "LPIPDiffPipeline", "PatchFusionUNet"
UNET_MODULES = ("lpipdiff.model.unet", "lpipdiff", "lpipdiff_unet")  # installed, or the Hub layout's copy
SCHEDULER_CLASSES = ("DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
DOWN_BLOCKS, UP_BLOCKS = ("DownBlock2D", "AttnDownBlock2D"), ("UpBlock2D", "AttnUpBlock2D")
WEIGHTS = "diffusion_pytorch_model.safetensors"


class ModelLoadError(RuntimeError):
    """The model folder or repo id cannot be loaded as an LPIP-Diff pipeline; the message says why."""


def _error(message: str):
    return ModelLoadError(message)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; malformed, huge, deeply nested or non-object JSON is refused."""
    if special_file(path):
        raise _error(f"{path}: {SPECIAL_FILE}")
    if path.is_dir():
        raise _error(f"{path}: a folder, not a file")
    if not path.is_file():
        raise _error(f"{path}: missing")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise _error(f"{path}: {size} bytes is far too large for a config file")
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _error(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _error(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise _error(f"{path}: nested too deeply to be a config file") from None
    if not isinstance(value, dict):
        raise _error(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _need(path: Path, config: dict, key: str, check, expected: str, required: bool = True) -> None:
    if key not in config:
        if required:
            raise _error(f"{path}: '{key}' is missing")
        return
    try:
        fine = check(config[key])
    except (TypeError, ValueError, OverflowError):
        fine = False
    if not fine:
        raise _error(f"{path}: '{key}' must be {expected}, got {json.dumps(config[key])[:80]}")


def check_index(path: Path) -> None:
    index = read_json(path)
    name = index.get("_class_name")
    name = name[-1] if isinstance(name, list) and name else name
    if name != PIPELINE_CLASS:
        raise _error(f"{path}: names the pipeline class {json.dumps(index.get('_class_name'))}, not {PIPELINE_CLASS}")
    components = {key: value for key, value in index.items() if not key.startswith("_")}
    extra = sorted(set(components) - {"unet", "scheduler"})
    if extra:
        raise _error(f"{path}: names components an LPIP-Diff pipeline does not have: {', '.join(extra)}")
    expected = (("unet", UNET_MODULES, (UNET_CLASS,)), ("scheduler", ("diffusers",), SCHEDULER_CLASSES))
    for key, modules, classes in expected:
        entry = components.get(key)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
            raise _error(f"{path}: '{key}' must be [library, class], got {json.dumps(entry)[:80]}")
        if entry[0] not in modules or entry[1] not in classes:
            raise _error(
                f"{path}: '{key}' is {entry[0]}.{entry[1]}; expected one of {', '.join(classes)} from {modules[0]}"
            )


def check_unet_config(path: Path) -> dict:
    config = read_json(path)
    if config.get("_class_name", UNET_CLASS) != UNET_CLASS:
        raise _error(f"{path}: describes a {json.dumps(config['_class_name'])[:60]}, not a {UNET_CLASS}")
    _need(path, config, "face_size", lambda v: is_whole_number(v) and 8 <= v <= MAX_FACE_SIZE,
          f"a whole number from 8 to {MAX_FACE_SIZE}")
    _need(path, config, "patch_size", lambda v: is_whole_number(v) and 4 <= v <= config["face_size"],
          "a whole number from 4 to face_size")
    for key in ("use_coordinates", "use_global_context", "residual"):
        _need(path, config, key, lambda v: isinstance(v, bool), "true or false", required=False)
    _need(path, config, "residual_scale", lambda v: not isinstance(v, bool) and isinstance(v, (int, float))
          and math.isfinite(v) and 0 < v <= 1000, "a positive number", required=False)
    _need(path, config, "block_out_channels", lambda v: isinstance(v, list) and 1 <= len(v) <= 8
          and all(is_whole_number(c) and 1 <= c <= 4096 for c in v), "a list of 1 to 8 whole numbers from 1 to 4096",
          required=False)
    levels = len(config.get("block_out_channels", (0,) * 4))
    _need(path, config, "layers_per_block", lambda v: is_whole_number(v) and 1 <= v <= 16,
          "a whole number from 1 to 16", required=False)
    for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        _need(path, config, key, lambda v, allowed=allowed: isinstance(v, list) and len(v) == levels
              and all(block in allowed for block in v), f"a list of {levels} of {', '.join(allowed)}", required=False)
    _need(path, config, "norm_num_groups", lambda v: is_whole_number(v) and v >= 1 and all(
        c % v == 0 for c in config.get("block_out_channels", (32, 64, 128, 128))),
        "a whole number dividing every block_out_channels entry", required=False)
    _need(path, config, "attention_head_dim", lambda v: is_whole_number(v) and v >= 1, "a whole number of at least 1",
          required=False)
    if config["patch_size"] % 2 ** (levels - 1):
        raise _error(f"{path}: patch_size {config['patch_size']} must be divisible by 2**{levels - 1} "
                     f"(the UNet halves it {levels - 1} times)")
    return config


def check_scheduler_config(path: Path) -> None:
    config = read_json(path)
    if config.get("_class_name") not in SCHEDULER_CLASSES:
        raise _error(f"{path}: names the scheduler class {json.dumps(config.get('_class_name'))[:60]}; "
                     f"expected one of {', '.join(SCHEDULER_CLASSES)}")
    _need(path, config, "num_train_timesteps", lambda v: is_whole_number(v) and 2 <= v <= 100_000,
          "a whole number from 2 to 100000", required=False)
    _need(path, config, "prediction_type", lambda v: v in PREDICTION_TYPES, f"one of {PREDICTION_TYPES}",
          required=False)


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    from .unet import PatchFusionUNet

    accepted = set(inspect.signature(PatchFusionUNet.__init__).parameters) - {"self"}
    with torch.device("meta"):
        model = PatchFusionUNet(**{key: value for key, value in config.items() if key in accepted})
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def broken_tensor(name: str, tensor: torch.Tensor) -> str | None:
    """Why a tensor of weights cannot be used, or None: NaN or infinite values, the mark of a training
    run that diverged or a damaged copy, run as a model they give NaN, black, images."""
    if tensor.dtype.is_floating_point and not torch.isfinite(tensor).all():
        return f"tensor {name} holds NaN or infinite values; the weights are broken"
    return None


def check_weights(path: Path, config: dict) -> None:
    from safetensors import SafetensorError, safe_open

    if special_file(path):
        raise _error(f"{path}: {SPECIAL_FILE}")
    if not path.is_file():
        raise _error(f"{path}: missing (weights are read from safetensors files only)")
    with open(path, "rb") as file:
        head = file.read(8)
    size = path.stat().st_size
    header = struct.unpack("<Q", head)[0] if len(head) == 8 else None
    if header is None or header > min(MAX_HEADER_BYTES, size - 8):
        why = f"its header claims {header} bytes" if header is not None else f"{size} bytes, too short"
        raise _error(f"{path}: not a safetensors file ({why})")
    expected = expected_shapes(config)
    try:
        with safe_open(str(path), "pt") as handle:
            names = set(handle.keys())
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or extra:
                parts = [f"missing {len(missing)} tensor(s) ({', '.join(missing[:3])})" if missing else "",
                         f"{len(extra)} unexpected tensor(s) ({', '.join(extra[:3])})" if extra else ""]
                raise _error(f"{path}: does not match unet/config.json: {'; '.join(p for p in parts if p)}")
            for name in sorted(names):
                shape = tuple(handle.get_slice(name).get_shape())
                if shape != expected[name]:
                    raise _error(f"{path}: tensor {name} has shape {shape}; the config needs {expected[name]}")
                tensor = handle.get_tensor(name)
                if not tensor.dtype.is_floating_point:
                    raise _error(f"{path}: tensor {name} holds {tensor.dtype}, not floating point weights")
                problem = broken_tensor(name, tensor)
                if problem:
                    raise _error(f"{path}: {problem}")
    except ModelLoadError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _error(f"{path}: not a readable safetensors file ({error})") from None


def check_model_folder(source) -> None:
    """Refuse a local pipeline folder that cannot restore faces correctly; Hub repo ids (not a
    folder here) are left to the download."""
    folder = Path(source)
    if not folder.is_dir():
        return
    check_index(folder / "model_index.json")
    config = check_unet_config(folder / "unet" / "config.json")
    check_scheduler_config(folder / "scheduler" / "scheduler_config.json")
    check_weights(folder / "unet" / WEIGHTS, config)
