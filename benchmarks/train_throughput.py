"""Training throughput: data alone, model step alone, full step, and the loop this replaced.

Measures in one process, each after warm-up steps, best of ``--repeats``:
  data     batches from :class:`lpipdiff.training.data.PatchBatches` (faces in memory, degraded on
           the device, ``--patches-per-face`` patches a face), no model;
  model    the training step (loss, backward, AdamW) on one batch already on the device;
  full     both, as ``lpipdiff train`` runs them;
  before   the loop of commit 5b36bd0 (``--before``): a DataLoader whose workers decode a
           file, degrade the whole face on the CPU and keep one patch, then the same step;
  model_channels_last, model_compiled (``--variants``): the model step with channels-last
           memory, and under ``torch.compile``;
  engine_fp32, engine_bf16, engine_compiled, engine_compiled_bf16 (``--engines``): the model
           step in fp32, under bf16 autocast, under ``torch.compile`` and under both: which engine
           to train with on this machine.
With ``--one-step`` every training step also trains the one-step objective (perceptual 1,
anchor 10).
It prints steps/s of each, full / model (target: at least 0.9 on a GPU), full / before, and each
engine over fp32.
Weights are random: speed does not depend on them.

    python benchmarks/train_throughput.py --batch-size 16 --before
    python benchmarks/train_throughput.py --batch-size 256 --mixed-precision bf16 --before --num-workers 14
    python benchmarks/train_throughput.py --batch-size 16 --engines --one-step
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import tempfile
import time
from functools import partial

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader, Dataset

from lpipdiff.model.sampling import build_scheduler
from lpipdiff.model.unet import coordinate_channels
from lpipdiff.training.data import EncodedFaces, PatchBatches, crop_examples, face_source, open_faces
from lpipdiff.training.degradation import Degradation
from lpipdiff.training.degradation_torch import BatchDegradation
from lpipdiff.training.losses import OneStepWeights
from lpipdiff.training.train import OneStepObjective, build_parser, build_unet, training_loss


class OnePatchPerFace(Dataset):
    """The data of commit 5b36bd0: each item decodes a file, degrades it on the CPU, keeps one patch."""

    def __init__(self, faces: EncodedFaces, patch_size: int):
        self.faces, self.patch_size = faces, patch_size
        self.degradations = [Degradation(name, face_size=faces.face_size) for name in ("moderate", "severe")]
        self.coordinates = coordinate_channels(faces.face_size)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        clean = self.faces[index].permute(1, 2, 0).numpy().astype(np.float32) / 255
        if rng.uniform() < 0.5:
            clean = np.ascontiguousarray(clean[:, ::-1])
        degraded = self.degradations[rng.integers(2)](clean, rng)
        to_tensor = lambda image: torch.from_numpy(image).permute(2, 0, 1)[None] * 2 - 1  # noqa: E731
        corner = torch.from_numpy(rng.integers(0, self.faces.face_size - self.patch_size + 1, size=(2, 1, 1)))
        crop = crop_examples(to_tensor(clean), to_tensor(degraded), self.coordinates, *corner, self.patch_size)
        return {name: value[0] for name, value in crop.items()}


def endless(loader):
    while True:
        yield from loader


def rate(step, count: int, repeats: int, device) -> float:
    """Best steps/s of ``repeats`` runs of ``count`` calls of ``step``."""
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(count):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/utkface/train", help="folder or pack of faces")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patches-per-face", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--before", action="store_true", help="also measure the loop of commit 5b36bd0")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers of the loop before")
    parser.add_argument("--channels", default="32,64,128,128")
    parser.add_argument("--variants", action="store_true",
                        help="also time the model step with channels-last memory and with torch.compile")
    parser.add_argument("--engines", action="store_true",
                        help="also time the model step in fp32, under bf16 autocast and under torch.compile")
    parser.add_argument("--one-step", action="store_true",
                        help="the engines train the one-step objective too (perceptual 1, anchor 10)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    # The training command's own defaults describe the UNet (its --data and --output are not used here).
    unet_args = build_parser().parse_args(
        ["--data", args.data, "--output", tempfile.mkdtemp(), "--channels", args.channels])
    model = build_unet(unet_args.face_size, unet_args.patch_size, unet_args.channels, unet_args.attention_levels,
                       unet_args.layers_per_block).to(device).train()
    noise_scheduler = DDPMScheduler.from_config(build_scheduler(prediction_type="v_prediction").config)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)

    objective = None
    if args.one_step:
        from lpipdiff.training.perceptual import PerceptualDistance

        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        objective = OneStepObjective(OneStepWeights(perceptual=1.0, anchor=10.0), teacher=teacher,
                                     perceptual=PerceptualDistance().to(device))

    def step_of(model, dtype=dtype):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step(batch):
            with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                loss = training_loss(model, noise_scheduler, batch, objective=objective).total
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return train_step

    train_step = step_of(model)

    start = time.perf_counter()
    faces = open_faces(args.data, model.config.face_size)
    source = face_source(faces, device)
    load_seconds = time.perf_counter() - start
    batches = PatchBatches(source, BatchDegradation(face_size=model.config.face_size), model.config.patch_size,
                           args.batch_size, args.patches_per_face)
    fixed = next(batches)
    measurements = {
        "data": lambda: next(batches),
        "model": lambda: train_step(fixed),
        "full": lambda: train_step(next(batches)),
    }
    if args.before:
        loader = DataLoader(OnePatchPerFace(faces, model.config.patch_size), batch_size=args.batch_size, shuffle=True,
                            drop_last=True, num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
                            pin_memory=device.type == "cuda")
        before = endless(loader)
        measurements["before"] = lambda: train_step({k: v.to(device) for k, v in next(before).items()})

    if args.variants:  # other ways to run the same model step: does any of them speed it up here?
        channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        measurements["model_channels_last"] = partial(step_of(channels_last), fixed)
        measurements["model_compiled"] = partial(step_of(torch.compile(copy.deepcopy(model))), fixed)

    if args.engines:
        measurements["engine_fp32"] = partial(step_of(copy.deepcopy(model), None), fixed)
        measurements["engine_bf16"] = partial(step_of(copy.deepcopy(model), torch.bfloat16), fixed)
        measurements["engine_compiled"] = partial(step_of(torch.compile(copy.deepcopy(model)), None), fixed)
        measurements["engine_compiled_bf16"] = partial(
            step_of(torch.compile(copy.deepcopy(model)), torch.bfloat16), fixed)

    print(f"# {platform.processor() or platform.machine()}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(faces)} faces decoded into memory in {load_seconds:.1f} s")
    for step in measurements.values():
        rate(step, args.warmup, 1, device)
    # Round robin, best of the rounds: a machine whose load drifts during the run slows every
    # measurement alike instead of the ones that happen to run last.
    results = {name: 0.0 for name in measurements}
    for _ in range(args.repeats):
        for name, step in measurements.items():
            results[name] = max(results[name], rate(step, args.steps, 1, device))
    summary = {
        "batch": args.batch_size, "patches_per_face": args.patches_per_face, "precision": args.mixed_precision,
        **{f"{name}_steps_per_s": round(value, 3) for name, value in results.items()},
        "full_over_model": round(results["full"] / results["model"], 3),
    }
    for name in ("engine_bf16", "engine_compiled", "engine_compiled_bf16"):
        if name in results:
            summary[f"{name}_over_fp32"] = round(results[name] / results["engine_fp32"], 3)
    if "before" in results:
        summary["full_over_before"] = round(results["full"] / results["before"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
