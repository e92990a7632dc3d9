"""Fusion overhead and latency of the patch sampler.

For each geometry, measures in the same process, alternating so that machine noise hits
both alike:
  (a) the full pipeline call for one face (crop, UNet, fusion, uncertainty, scheduler);
  (b) the bare UNet evaluations that call needs: N patches x steps, same batching, same
      inputs.
It prints (a) / (b), the fusion overhead (target: at most 1.05), and seconds per face.
Weights are random: speed does not depend on them.

    python benchmarks/sampler.py                # the bundled model's geometry and FFHQ's 512 one
    python benchmarks/sampler.py --steps 20 --repeats 3 --geometry 128,64,32
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from lpipdiff import LPIPDiffPipeline, PatchFusionUNet
from lpipdiff.model.patches import PatchGrid
from lpipdiff.model.sampling import build_scheduler


def bare_unet_seconds(unet, grid: PatchGrid, steps: int, batch_size: int) -> float:
    patch = unet.config.patch_size
    n = grid.num_patches
    noisy, degraded = torch.randn(n, 3, patch, patch), torch.randn(n, 3, patch, patch)
    coordinates, context = torch.randn(n, 2, patch, patch), torch.randn(n, 3, patch, patch)
    start = time.perf_counter()
    with torch.no_grad():
        for step in range(steps):
            t = torch.tensor(999 - step)
            for j in range(0, n, batch_size):
                unet(noisy[j : j + batch_size], t, degraded[j : j + batch_size],
                     coordinates[j : j + batch_size], context[j : j + batch_size])
    return time.perf_counter() - start


def measure(face: int, patch: int, stride: int, steps: int, repeats: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    unet = PatchFusionUNet(face_size=face, patch_size=patch).eval()
    pipeline = LPIPDiffPipeline(unet=unet, scheduler=build_scheduler())
    pipeline.set_progress_bar_config(disable=True)
    grid = PatchGrid(face, face, patch, stride)
    image = np.random.default_rng(0).random((face, face, 3), dtype=np.float32)
    pipeline(image, num_inference_steps=1, patch_stride=stride)  # warm-up
    bare_unet_seconds(unet, grid, 1, batch_size)
    full, bare = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline(image, num_inference_steps=steps, patch_stride=stride, unet_batch_size=batch_size, output_type="np")
        full.append(time.perf_counter() - start)
        bare.append(bare_unet_seconds(unet, grid, steps, batch_size))
    return {
        "face": face, "patch": patch, "stride": stride, "patches": grid.num_patches, "steps": steps,
        "unet_params_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 2),
        "sampler_s": round(min(full), 3), "bare_unet_s": round(min(bare), 3),
        "overhead_ratio": round(min(full) / min(bare), 4),
        "seconds_per_face": round(min(full), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", action="append", help="FACE,PATCH,STRIDE (repeatable)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    geometries = args.geometry or ["128,64,32", "512,128,64"]
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    for geometry in geometries:
        face, patch, stride = (int(v) for v in geometry.split(","))
        print(json.dumps(measure(face, patch, stride, args.steps, args.repeats, args.batch_size)))


if __name__ == "__main__":
    main()
