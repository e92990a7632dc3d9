"""How long one face takes: the old default, each speed option, the new default and the peers, in one run.

    OMP_NUM_THREADS=2 python benchmarks/speed.py --threads 2 --repeats 5
    OMP_NUM_THREADS=2 python benchmarks/speed.py --threads 2 --photo --face-weights ../shared/weights/facexlib

Every variant restores the same aligned 128-pixel face (examples/astronaut_face_severe.png) with
the bundled model; the variants are timed **interleaved** (one call of each in turn, ``--repeats``
rounds, after a warm-up round), so that load from other jobs hits them alike, and each one's
best (min) is reported with its ratio to the old default (torch fp32, fidelity 0.3 on the 10-step
DDIM schedule: 8 UNet evaluations). Variants:

- the old default's sampler on every backend this machine supports (lpipdiff.model.backends);
- the new default's sampler (lpipdiff.config.defaults) on the same backends; ``auto`` is what the CLI and
  the demo use;
- one UNet evaluation of the 9 patches, per backend (the cost of a step);
- the peers (``spandrel`` / ``spandrel-extra-arches``, requirements-dev.txt; skipped when absent):
  the GFPGAN v1.4, CodeFormer and RestoreFormer architectures, random weights, one forward pass
  of a 512-pixel face (the time of a forward pass does not depend on the weights).

``--photo``: also a whole photo with one face at ``--upscale 2`` (detection, alignment,
restoration, paste-back; examples/astronaut_photo_severe.png), old default against new.
Prints the machine (CPU model, the instruction sets that matter) and one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lpipdiff.config.defaults import DEFAULT_BACKEND
from lpipdiff.io.images import load_image_file
from lpipdiff.model.backends import choose_backend, installed, native_bf16
from lpipdiff.model.loading import load_pipeline
from lpipdiff.model.sampling import SamplingOptions, restore_faces

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The sampler's default before the 5-step schedule.
OLD_DEFAULT = SamplingOptions(fidelity=0.3, steps=10, scheduler="ddim", fusion="window")
NEW_DEFAULT = SamplingOptions()
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def machine() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    present = [flag for flag in FLAGS if flag in flags]
    return f"{model}; {', '.join(present) or 'flags unknown'}; native bf16: {native_bf16()}"


def backends_here() -> list[str]:
    names = ["torch"]
    if native_bf16():
        names.append("torch-bf16")
    names += [name for name in ("onnxruntime", "openvino") if installed(name)]
    return names


def restore_call(pipeline, face, options: SamplingOptions):
    def call():
        restore_faces(pipeline, face, options)
    return call


def unet_call(pipeline):
    unet, size = pipeline.unet, pipeline.unet.config.patch_size
    patches = [torch.randn(9, channels, size, size, generator=torch.Generator().manual_seed(channels))
               for channels in (3, 3, 2, 3)]

    def call():
        with torch.no_grad():
            unet(patches[0], torch.tensor(500), *patches[1:])
    return call


def peer_calls() -> dict:
    """The peers' architectures with random weights, one 512-pixel face each; {} without spandrel."""
    try:
        from spandrel.architectures.GFPGAN import GFPGAN
        from spandrel.architectures.RestoreFormer import RestoreFormer
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer
    except ImportError:
        return {}
    torch.manual_seed(0)
    face = torch.rand(1, 3, 512, 512) * 2 - 1
    models = {
        "GFPGAN v1.4 architecture, 512 px (peer)": GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2,
                                                          decoder_load_path=None, fix_decoder=False, num_mlp=8,
                                                          input_is_latent=True, different_w=True, narrow=1,
                                                          sft_half=True),
        "CodeFormer architecture, 512 px (peer)": CodeFormer(),
        "RestoreFormer architecture, 512 px (peer)": RestoreFormer(),
    }

    def call_of(model):
        model.eval()

        def call():
            with torch.no_grad():
                model(face)
        return call
    return {name: call_of(model) for name, model in models.items()}


def photo_calls(pipelines: dict, weights: str | None, upscale: float) -> dict:
    from lpipdiff.faces.restorer import FaceRestorer

    photo = load_image_file(EXAMPLES / "astronaut_photo_severe.png")
    calls = {}
    for label, (pipeline, options) in pipelines.items():
        restorer = FaceRestorer(pipeline, weights_dir=weights, upscale=upscale)
        calls[f"whole photo, one face, upscale {upscale:g}: {label}"] = (
            lambda restorer=restorer, options=options: restorer.restore(photo, options))
    return calls


def timed(calls: dict, repeats: int) -> dict:
    for call in calls.values():  # warm-up: first-call compilation, caches, allocator
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch, ONNX Runtime and OpenVINO threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--photo", action="store_true", help="also a whole photo (needs facexlib's weights)")
    parser.add_argument("--face-weights", default=None, help="facexlib's weights folder (with --photo)")
    parser.add_argument("--upscale", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    face = load_image_file(EXAMPLES / "astronaut_face_severe.png")
    auto = choose_backend(DEFAULT_BACKEND, "cpu")
    pipelines = {name: load_pipeline(device="cpu", backend=name, threads=args.threads) for name in backends_here()}
    calls = {}
    for name, pipeline in pipelines.items():
        label = f"old default ({OLD_DEFAULT.unet_steps()} evaluations), {name}"
        calls[label] = restore_call(pipeline, face, OLD_DEFAULT)
    for name, pipeline in pipelines.items():
        mark = " = auto, the new default" if name == auto else ""
        calls[f"new default ({NEW_DEFAULT.unet_steps()} evaluations), {name}{mark}"] = restore_call(
            pipeline, face, NEW_DEFAULT)
    calls["fidelity 1 (1 evaluation), torch"] = restore_call(pipelines["torch"], face, SamplingOptions(fidelity=1.0))
    for name, pipeline in pipelines.items():
        calls[f"one UNet evaluation of 9 patches, {name}"] = unet_call(pipeline)
    if not args.no_peers:
        calls.update(peer_calls())
    if args.photo:
        calls.update(photo_calls({"old default, torch": (pipelines["torch"], OLD_DEFAULT),
                                  f"new default, auto ({auto})": (pipelines[auto], NEW_DEFAULT)},
                                 args.face_weights, args.upscale))

    print(f"# {machine()}")
    print(f"# {args.threads} threads, torch {torch.__version__}, min of {args.repeats} interleaved repeats; "
          f"auto = {auto}")
    times = timed(calls, args.repeats)
    reference = min(times[next(iter(calls))])
    photos = [name for name in times if name.startswith("whole photo")]
    for name, values in times.items():
        best = min(values)
        if name in photos:  # photos against the old default's photo
            reference = min(times[photos[0]])
        print(json.dumps({"variant": name, "seconds": round(best, 4), "median": round(float(np.median(values)), 4),
                          "speedup_vs_old_default": round(reference / best, 2)}), flush=True)


if __name__ == "__main__":
    main()
