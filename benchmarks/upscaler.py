"""The background upscaler's cost: seconds per input megapixel and peak memory of one tile.

    python benchmarks/upscaler.py [--tile 256] [--repeat 1]

The models are built with the published architectures (Real-ESRGAN x4plus and x2plus: RRDBNet
with 23 blocks of 64 features; realesr-general-x4v3: SRVGGNetCompact with 32 convolutions) and
random weights: the arithmetic, hence the time and memory, does not depend on the weights' values.
Each model runs in a fresh subprocess so that its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MODELS = {
    "realesrgan-x4 (RRDB 23x64)": "ESRGAN(num_filters=64, num_blocks=23, scale=4)",
    "realesrgan-x2 (RRDB 23x64, unshuffled)":
        "ESRGAN(in_nc=12, num_filters=64, num_blocks=23, scale=2, shuffle_factor=2)",
    "realesr-general-x4v3 (Compact 32x64)": "Compact(num_feat=64, num_conv=32, upscale=4)",
}


def measure(expression: str, tile: int, repeat: int) -> dict:
    import numpy as np
    import torch
    from spandrel import ModelLoader
    from spandrel.architectures.Compact import Compact  # noqa: F401 - used by the expression
    from spandrel.architectures.ESRGAN import ESRGAN  # noqa: F401

    from lpipdiff.faces.upscaler import BackgroundUpscaler

    torch.manual_seed(0)
    network = eval(expression)  # noqa: S307 - the fixed expressions above
    model = ModelLoader().load_from_state_dict(network.state_dict()).eval()
    upscaler = BackgroundUpscaler(model, tile=tile)
    image = np.random.default_rng(0).random((tile, tile, 3)).astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    upscaler(image)  # warm-up, and the peak of one tile
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    for _ in range(repeat):
        upscaler(image)
    seconds = (time.perf_counter() - start) / repeat
    per_megapixel = seconds / (tile * tile / 1e6)
    return {"scale": upscaler.scale, "seconds_per_tile": seconds, "seconds_per_megapixel": per_megapixel,
            "peak_mb": peak / 1024, "tile_growth_mb": (peak - before) / 1024, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(MODELS[args.one], args.tile, args.repeat)))
        return
    for name in MODELS:
        out = subprocess.run([sys.executable, __file__, "--tile", str(args.tile), "--repeat", str(args.repeat),
                              "--one", name], capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"{name}: x{result['scale']}, {result['seconds_per_megapixel']:.0f} s per input megapixel "
              f"({result['seconds_per_tile']:.1f} s a {args.tile}px tile, {result['threads']} threads); peak RSS "
              f"{result['peak_mb']:.0f} MB, of which the tile's work {result['tile_growth_mb']:.0f} MB")


if __name__ == "__main__":
    main()
