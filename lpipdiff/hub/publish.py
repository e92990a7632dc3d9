"""Hugging Face Hub: export a self-contained model folder, write its card, publish model and Space.

An exported folder loads with ``DiffusionPipeline.from_pretrained(folder_or_repo,
trust_remote_code=True)`` in a Python without this package (the layout: ``hub_layout.py``).
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path

from ..config.environment import MODEL_ENV
from ..evaluation.reports import results_table
from ..io.safe_files import install_tree
from ..model import pipeline_lpipdiff, unet
from ..model.hub_layout import make_self_contained, remote_code_files

PACKAGE = Path(__file__).resolve().parents[1]
# The Space is made from a checkout: the demo and its files sit beside the package.
ROOT = PACKAGE.parent
# Import names whose pip package is called otherwise.
PIP_NAMES = {"cv2": "opencv-python", "PIL": "pillow", "huggingface_hub": "huggingface_hub"}
CITATION = """@inproceedings{bai2025lpipdiff,
  title     = {Identity-Preserving Diffusion for Face Restoration},
  author    = {Bai and Yang and Yang and Zhu and Xue},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2025},
  doi       = {10.1109/ICASSP49660.2025.10888736}
}"""


class HubError(RuntimeError):
    """Publishing failed for a reason a person can fix (token, network, repo id)."""


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
    import tempfile

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


def model_card(folder: str | os.PathLike, repo_id: str):
    """A ModelCard built from the folder's configs and, when present, its evaluation results."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    unet = json.loads((folder / "unet" / "config.json").read_text())
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
    conditioning = (("coordinates", unet.get("use_coordinates")), ("global context", unet.get("use_global_context")))
    inputs = ", ".join(name for name, used in conditioning if used)
    residual = "It diffuses the residual over the degraded input, so 'predict zero' returns the input. "
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# LPIP-Diff face restoration ({unet['face_size']} px)", "",
        "A conditional diffusion model that restores aligned faces patch by patch (LPIP-Diff, ICASSP 2025): "
        f"at every denoising step the {unet['face_size']}-pixel face is cut into overlapping "
        f"{unet['patch_size']}-pixel patches, one UNet predicts each patch from the noisy patch, the degraded "
        f"patch and its position ({inputs}), the overlapping predictions are fused and the scheduler steps "
        "on the whole face. "
        + (residual if unet.get("residual") else ""),
        "",
        "## Use it", "",
        "Python, without the `lpipdiff` package (the pipeline's code travels with the weights):", "",
        "```bash",
        "pip install " + " ".join(remote_code_requirements()),
        "```", "",
        "```python",
        "import torch",
        "from diffusers import DiffusionPipeline",
        "from PIL import Image",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True, dtype=torch.float32)',
        'face = Image.open("aligned_face.png")',
        "result = pipe(face, generator=torch.Generator().manual_seed(0))",
        'result.images[0].save("restored.png")   # result.uncertainty: where overlapping patches disagreed',
        "```", "",
        "With the `lpipdiff` package (whole photos: detection, alignment and paste-back):", "",
        "```bash",
        f"lpipdiff restore photos/ -o restored/ --model {repo_id} --whole-photo",
        f"{MODEL_ENV}={repo_id} python app.py   # the Gradio demo",
        "```", "",
    ]
    if (folder / "unet" / "model.onnx").is_file():
        lines += [
            "## Faster on a CPU: the UNet as ONNX", "",
            "`unet/model.onnx` is the UNet (fp32, dynamic batch; inputs `noisy`, `timestep` (shape (1,), int64), "
            "`degraded`, `coordinates`, `context`, all `(N, C, P, P)` patches; output `prediction`). With the "
            "`lpipdiff` package, ONNX Runtime or OpenVINO run it instead of torch (outputs equal to torch's within "
            "1e-4 in fp32; OpenVINO computes in bf16 on CPUs with native bf16):", "",
            "```bash",
            "pip install onnxruntime   # or openvino",
            f"lpipdiff restore photos/ -o restored/ --model {repo_id} --backend onnxruntime",
            "```", "",
            "```python",
            "from lpipdiff import load_pipeline",
            "",
            f'pipe = load_pipeline("{repo_id}", backend="onnxruntime")   # or "openvino", or "auto"',
            "```", "",
            "`--backend auto` (the default) picks the fastest way the machine supports: torch on a GPU, OpenVINO "
            "in bf16 on a CPU with native bf16 (AVX512-BF16 or AMX), else ONNX Runtime.", "",
        ]
    if evaluation:
        lines += ["## Results", "", _metrics_table(evaluation), ""]
    if training:
        lines += ["## Training", "", *training_summary(training), ""]
    lines += [
        "## Training data and licence", "",
        "Trained on UTKFace (Zhang, Song, Qi, CVPR 2017), which is provided for **non-commercial research "
        "purposes only**; these weights inherit that restriction.", "",
        "## Limitations", "",
        f"- Expects aligned faces at the framing of the training crops; whole photos need the `lpipdiff` "
        f"package's detection and alignment. Faces are restored at {unet['face_size']} px and resized back.",
        "- A small model (" + f"{_parameter_count(folder) / 1e6:.2f}M parameters" + "): see the results for where "
        "it loses to the degraded input.",
        "- Synthetic degradations (blur, downsampling, noise, JPEG) only; real-world damage may differ.", "",
        "## Citation", "", "```bibtex", CITATION, "```", "",
    ]
    return ModelCard("\n".join(lines))


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


def _api(token: str | None):
    from huggingface_hub import HfApi

    token = token or os.environ.get("HF_TOKEN")
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise HubError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`")
    return HfApi(token=token)


def _publish(api, repo_id: str, folder: Path, repo_type: str, private: bool, **create_kwargs) -> str:
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **create_kwargs)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                 commit_message="Upload LPIP-Diff")
    except HubError:
        raise
    except Exception as error:  # network and HTTP errors come in many classes; all end here
        raise HubError(f"could not publish to {repo_id}: {type(error).__name__}: {error} "
                       "(offline? wrong token or repo id?)") from None
    return str(getattr(info, "commit_url", info))


def push(model, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Export ``model`` and upload it as the model repo ``repo_id``."""
    import tempfile

    api = _api(token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export(model, Path(tmp) / "export", repo_id=repo_id)
        return _publish(api, repo_id, folder, "model", private)


SPACE_FILES = ["app.py", "requirements.txt", "examples", "README.md"]


def space_front_matter(model_repo: str | None = None) -> str:
    """The Space's front matter: the README's own (one source), plus the model repo it loads."""
    readme = (ROOT / "README.md").read_text()
    if not readme.startswith("---\n"):
        raise HubError(f"{ROOT / 'README.md'} has no Space front matter")
    front = readme[: readme.index("\n---\n", 4) + 1]
    if model_repo:
        front += f"models:\n  - {model_repo}\n"
    return front + "---\n"


def space_folder(output: Path, model_repo: str | None = None, bundle_model=None, overwrite: bool = False) -> Path:
    """The Space's files: the demo, the package, requirements, README front matter and the model
    (bundled, or named by $LPIPDIFF_MODEL so the Space loads it from the model repo). Files already
    in ``output`` are kept and named unless ``overwrite`` (see :func:`export`)."""
    import tempfile

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise HubError(f"{output} exists and is not a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        _write_space(staging, model_repo, bundle_model)
        install_tree(staging, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _write_space(output: Path, model_repo: str | None, bundle_model) -> None:
    from ..model.loading import DEFAULT_MODEL, resolve_model

    missing = [name for name in SPACE_FILES if not (ROOT / name).exists()]
    if missing:
        raise HubError(f"push-space works from a checkout of the repository; {', '.join(missing)} not found in {ROOT}")
    output.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES[:-1]:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, output / name, dirs_exist_ok=True)
        else:
            shutil.copy(source, output / name)
    # With a model repo the Space downloads its weights; else it serves the bundled (or given) model.
    skip = ["__pycache__", DEFAULT_MODEL.parent.name] if model_repo or bundle_model else ["__pycache__"]
    shutil.copytree(PACKAGE, output / "lpipdiff", ignore=shutil.ignore_patterns(*skip), dirs_exist_ok=True)
    if bundle_model and not model_repo:
        bundled = output / "lpipdiff" / DEFAULT_MODEL.relative_to(PACKAGE)
        shutil.copytree(resolve_model(bundle_model), bundled, dirs_exist_ok=True)
    (output / "README.md").write_text(
        space_front_matter(model_repo) + "\n"
        "Identity-preserving blind face restoration (LPIP-Diff). Upload a degraded photo; faces are detected, "
        "restored patch by patch by a diffusion model and pasted back.\n"
    )
    if model_repo:
        (output / ".env.example").write_text(f"{MODEL_ENV}={model_repo}\n")


def push_space(space_id: str, model_repo: str | None = None, private: bool = False, token: str | None = None) -> str:
    """Upload the demo as a Gradio Space; with ``model_repo`` the Space loads that model repo
    (set the Space variable LPIPDIFF_MODEL), else the bundled weights travel with it."""
    import tempfile

    api = _api(token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = space_folder(Path(tmp) / "space", model_repo)
        url = _publish(api, space_id, folder, "space", private, space_sdk="gradio")
        if model_repo:
            try:
                api.add_space_variable(space_id, MODEL_ENV, model_repo)
            except Exception as error:
                raise HubError(f"uploaded, but could not set {MODEL_ENV} on {space_id}: {error}") from None
        return url
