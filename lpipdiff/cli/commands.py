"""The ``lpipdiff`` command line: restore, degrade, train, evaluate, export and push.

Building the parser imports nothing heavy (torch, diffusers, facexlib load only when a command
runs), so ``lpipdiff --help`` answers at once; ``train`` and ``evaluate`` parse their own options.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from ..arguments.argtypes import (
    float_range,
    int_range,
    non_negative_int,
    output_folder,
    positive_int,
    seed_argument,
)
from ..arguments.errors import report_errors
from ..arguments.options import (
    HelpFormatter,
    add_bg_upsampler_arguments,
    add_face_weights_argument,
    add_sampling_arguments,
    sampling_options,
)
from ..config.defaults import DEFAULT_DETAIL, DEFAULT_DETECTOR, DEFAULT_MAX_SECONDS, DETECTOR_NAMES, PRESET_NAMES

# Commands that parse their own options: (module with main(argv, prog), one-line help).
DELEGATED = {
    "train": ("lpipdiff.training.train", "train a model (lpipdiff train --help)"),
    "evaluate": (
        "lpipdiff.evaluation.evaluate",
        "evaluate a model against the degraded input (lpipdiff evaluate --help)",
    ),
}


def cmd_restore(args) -> int:
    try:
        sampling = sampling_options(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.bg_upsampler and not args.whole_photo:
        print("error: --bg-upsampler upscales the background of whole photos: add --whole-photo", file=sys.stderr)
        return 2
    from .restore import restore_command

    return restore_command(args, sampling, resumable=archive_mode(args))


def archive_mode(args) -> bool:
    """The resumable, multi-process path: asked for, or launched as one of several processes
    (accelerate launch, torchrun: ``WORLD_SIZE``, read here at the command's edge)."""
    return args.archive or args.recursive or world_size() > 1


def world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 when unset)."""
    from ..checks import UsageError

    text = os.environ.get("WORLD_SIZE", "").strip() or "1"
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"$WORLD_SIZE must be a whole number, got {text!r} (it is set by accelerate launch or "
                         "torchrun; unset it for one process)") from None


def cmd_degrade(args) -> int:
    from ..evaluation.pairs import make_test_set
    from ..io.images import load_image_file, save_image
    from ..training.degradation import Degradation, image_scale_side, image_seed
    from .restore import (
        NoSpaceError,
        Progress,
        plan_inputs,
        prepare_output_folder,
        report,
        restore_items,
        resume_plan,
        summary,
    )

    output_dir = Path(args.output)
    folder_problem = prepare_output_folder(output_dir)
    if folder_problem:
        report([folder_problem])
        return 2
    if args.test_set:
        if len(args.inputs) != 1 or not Path(args.inputs[0]).is_dir():
            print("error: --test-set takes exactly one folder of clean faces", file=sys.stderr)
            return 1
        existing = [output_dir / part for part in ("clean", "degraded") if any((output_dir / part).glob("*"))]
        if existing and not args.overwrite:
            report([f"{folder}: holds a test set already; pass --overwrite to replace it" for folder in existing])
            return 1
        names = make_test_set(
            args.inputs[0], args.output, args.preset, args.face_size, args.seed, args.limit, args.offset,
            overwrite=args.overwrite,
        )
        print(f"wrote {len(names)} clean/degraded pairs into {args.output}")
        return 0
    plan = plan_inputs(args.inputs, output_dir, suffix=args.preset)
    todo, _, _, skipped = resume_plan(plan.items, {}, args.overwrite)
    problems = plan.problems + skipped
    report(problems)

    def degrade(item):
        image = load_image_file(item.input)
        degradation = Degradation(args.preset, face_size=image_scale_side(*image.shape[:2]))
        return degradation(image, image_seed(args.seed, item.input.name)), None

    def save(image, item):
        save_image(image, item.output, overwrite=args.overwrite)

    try:
        failed = restore_items(todo, degrade, save, Progress(len(todo), enabled=False))
    except NoSpaceError as error:
        print(f"error: {error.strerror}", file=sys.stderr)
        return 1
    print(summary("degraded", len(todo) - failed, len(plan.items), output_dir))
    return 1 if failed or problems else 0


def cmd_export(args) -> int:
    from ..hub.export import export

    try:
        folder = export(args.model, args.output, repo_id=args.repo_id, overwrite=args.overwrite, onnx=args.onnx)
    except (ValueError, OSError) as error:  # OutputExistsError (an OSError) is reported by main
        if isinstance(error, FileExistsError):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote a self-contained pipeline folder to {folder}")
    return 0


def cmd_push(args) -> int:
    from ..hub.publish import HubError, push, push_space

    try:
        if args.command == "push":
            url = push(args.model, args.repo_id, private=args.private, token=args.token)
        else:
            url = push_space(args.space_id, model_repo=args.model_repo, private=args.private, token=args.token)
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"published: {url}")
    return 0


def add_upload_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The options every upload to the Hub takes; ``what`` names the thing created."""
    parser.add_argument("--private", action="store_true", help=f"create the {what} private")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    parser.set_defaults(handler=cmd_push)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpipdiff", description="LPIP-Diff blind face restoration")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    restore = command("restore", "restore aligned faces, whole photos or videos")
    restore.add_argument("inputs", nargs="+", help="image or video files and/or folders (a video is written as "
                                                   "NAME_restored.mp4, its faces restored as in --whole-photo)")
    restore.add_argument("-o", "--output", required=True, help="output folder (inputs are never overwritten)")
    restore.add_argument("--overwrite", action="store_true", help="replace output files that exist already")
    add_sampling_arguments(restore)
    restore.add_argument("--whole-photo", action="store_true", help="detect, align and paste back every face")
    restore.add_argument("--upscale", type=float_range(1, 8), default=1.0,
                         help="whole-photo: upscale factor of the photo (1-8)")
    restore.add_argument("--only-largest", action="store_true", help="whole-photo: restore only the largest face")
    restore.add_argument("--min-face-size", type=non_negative_int, default=0,
                         help="whole-photo: ignore smaller faces (pixels)")
    restore.add_argument("--detail", type=float_range(0, 1), default=DEFAULT_DETAIL,
                         help="whole-photo, faces larger than the model: keep the input's detail finer than "
                              "face_size/DETAIL px across the face (1: all of it above the model's resolution; "
                              "0: none, the restoration scaled up, softer than the input)")
    restore.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTOR_NAMES,
                         help="whole-photo: facexlib's RetinaFace backbone")
    add_face_weights_argument(restore)
    add_bg_upsampler_arguments(restore)
    restore.add_argument("--max-seconds", type=float_range(0, None, low_open=True), default=DEFAULT_MAX_SECONDS,
                         help="videos: refuse a clip longer than this")
    restore.add_argument("--recursive", action="store_true",
                         help="restore the images of every subfolder too, keeping the folder structure under OUTPUT "
                              "(implies --archive)")
    restore.add_argument("--archive", action="store_true",
                         help="resumable: a manifest in OUTPUT records each input, and a rerun skips what is done "
                              "(implied under accelerate launch with several processes, which share the inputs)")
    restore.set_defaults(handler=cmd_restore)

    degrade = command("degrade", "make degraded copies, or a seeded clean/degraded test set")
    degrade.add_argument("inputs", nargs="+", help="image files and/or folders")
    degrade.add_argument("-o", "--output", required=True, help="output folder")
    degrade.add_argument("--overwrite", action="store_true", help="replace output files that exist already")
    degrade.add_argument("--preset", default=PRESET_NAMES[0], choices=PRESET_NAMES, help="how strong the damage is")
    degrade.add_argument("--seed", type=seed_argument, default=0, help="random seed (each file: SEED and its name)")
    degrade.add_argument("--test-set", action="store_true", help="write OUTPUT/clean and OUTPUT/degraded pairs")
    degrade.add_argument("--face-size", type=int_range(8, 4096), default=128,
                         help="test sets: side of the written faces")
    degrade.add_argument("--limit", type=positive_int, default=None,
                         help="test sets: at most this many faces (default: all)")
    degrade.add_argument("--offset", type=non_negative_int, default=0,
                         help="test sets: skip the first N faces (sorted)")
    degrade.set_defaults(handler=cmd_degrade)

    export = command("export", "write a self-contained Hub folder (weights, code, model card)")
    export.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    export.add_argument("--output", required=True, type=output_folder, help="the folder to write")
    export.add_argument("--overwrite", action="store_true", help="replace files of an earlier export in OUTPUT")
    export.add_argument("--repo-id", default="ORG/lpipdiff", help="the repo id the model card's examples use")
    export.add_argument("--onnx", action="store_true",
                        help="also write the UNet as ONNX (unet/model.onnx, fp32, dynamic batch) for ONNX Runtime and "
                             "OpenVINO")
    export.set_defaults(handler=cmd_export)

    push = command("push", "export and upload a model repo to the Hugging Face Hub")
    push.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    push.add_argument("--repo-id", required=True, help="ORG/NAME")
    add_upload_arguments(push, "repo")

    space = command("push-space", "upload the demo as a Gradio Space")
    space.add_argument("--space-id", required=True, help="ORG/NAME")
    space.add_argument("--model-repo", default=None, help="load this model repo (default: bundle the weights)")
    add_upload_arguments(space, "Space")

    for name, (_, help) in DELEGATED.items():
        commands.add_parser(name, help=help, add_help=False)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return module.main(argv[1:], prog=f"lpipdiff {argv[0]}") or 0
    args = build_parser().parse_args(argv)
    return report_errors(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
