"""The model card of an exported folder: ``model_card.md`` rendered with what the folder's configs,
training record and evaluation say."""

from __future__ import annotations

import ast
import json
import math
import os
import sys
from pathlib import Path

from ..config.environment import MODEL_ENV
from ..evaluation.reports import results_table
from ..model import pipeline_lpipdiff, unet
from ..model.hub_layout import remote_code_files

TEMPLATE = Path(__file__).with_name("model_card.md")
# Import names whose pip package is called otherwise.
PIP_NAMES = {"cv2": "opencv-python", "PIL": "pillow", "huggingface_hub": "huggingface_hub"}


def model_card(folder: str | os.PathLike, repo_id: str):
    """A ModelCard built from the folder's configs and, when present, its evaluation results."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    training = _read_json(folder / "training_config.json")
    evaluation = _read_json(folder / "evaluation.json")
    data = ModelCardData(
        license="other",
        license_name="utkface-non-commercial",
        library_name="diffusers",
        pipeline_tag="image-to-image",
        tags=["face-restoration", "diffusion", "lpipdiff", "blind-face-restoration"],
        datasets=["UTKFace"],
    )
    conditioning = {"coordinates": config.get("use_coordinates"), "global context": config.get("use_global_context")}
    return ModelCard.from_template(
        data,
        template_path=TEMPLATE,
        repo_id=repo_id,
        model_env=MODEL_ENV,
        face_size=config["face_size"],
        patch_size=config["patch_size"],
        inputs=", ".join(name for name, used in conditioning.items() if used),
        residual=bool(config.get("residual")),
        requirements=" ".join(remote_code_requirements()),
        onnx=(folder / "unet" / "model.onnx").is_file(),
        results=_metrics_table(evaluation) if evaluation else "",
        training="\n".join(training_summary(training)) if training else "",
        parameters=_parameter_count(folder),
    )


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _metrics_table(evaluation: dict) -> str:
    settings = evaluation.get("settings", {})
    shown = ("fidelity", "num_inference_steps", "fusion", "scheduler")
    described = ", ".join(f"{key} {settings[key]}" for key in shown if settings.get(key) is not None)
    faces = {row.get("n") for methods in evaluation.get("presets", {}).values() for row in methods.values()}
    header = f"Sampler: {described}. " if described else ""
    if len(faces) == 1:
        header += f"{faces.pop()} held-out faces per degradation preset, against the degraded input itself."
    notes = "".join(f"\n{note}\n" for note in evaluation.get("notes", []))  # e.g. which age bands are missing
    return (header + "\n\n" if header else "") + results_table(evaluation) + notes


def remote_code_requirements() -> list[str]:
    """The pip packages the exported code imports (third-party top-level imports of the pipeline
    file, the modules it needs and the UNet's module), read from the code itself."""
    files = [Path(pipeline_lpipdiff.__file__), *remote_code_files(pipeline_lpipdiff.__file__), Path(unet.__file__)]
    names = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    third_party = names - set(sys.stdlib_module_names) - {"__future__"}
    return sorted(PIP_NAMES.get(name, name) for name in third_party)


def training_summary(training: dict) -> list[str]:
    """What the recorded training config says: steps, time, machine, data and recipe, and each segment."""
    args = training.get("args", {})
    hours = training.get("wall_seconds", 0) / 3600
    machine = training.get("machine", "an unrecorded machine")
    lines = [
        f"Trained for {training.get('steps')} steps ({hours:.2f} h of wall time) on {machine}, on "
        f"`{args.get('data')}`: {args.get('prediction_type')} prediction"
        + (" of the residual over the degraded input" if args.get("residual") else "")
        + f", batches of {args.get('batch_size')} patches, learning rate {args.get('learning_rate')} "
        f"({args.get('lr_schedule')}), EMA {args.get('ema_decay')}."
    ]
    for segment in training.get("segments", []):
        first, last = segment["steps"]
        lines.append(f"- steps {first}-{last} ({segment['wall_seconds'] / 60:.0f} min): {segment['how']}")
    return lines


def _parameter_count(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
