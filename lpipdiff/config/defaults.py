"""The product's defaults and choice lists, in one place and importable without torch, so that
``lpipdiff --help`` answers at once. The pipeline, the CLI, the demo, the evaluation and training
validation all start from these.

Sampler defaults were chosen by rules written down before measuring, on val faces the headline
evaluation does not use (docs/RESULTS.md). Sampling starts from the posterior mean (the model's
fused one-step estimate of the clean face: faithful but smooth); below fidelity 1 it is noised back
to where the last round((1 - fidelity) * steps) steps of a DEFAULT_STEPS-step schedule begin, and
detail is sampled from there. Fidelity 1 (the posterior mean itself) by a rule measured
per age band: no lower fidelity kept severely damaged adults (45-59, 60+) at least as close to
themselves as the degraded input, and 1 failed the fewest cells and was the most faithful for
adults; 0.3 (the earlier default) is sharper and more realistic (lower FID) but drifts from the
person. Window fusion removed the faint lines uniform fusion left along the patch borders.
"""

DEFAULT_FIDELITY = 1.0
# The schedule the posterior mean re-enters below fidelity 1: 5 steps instead of 10, so
# fidelity 0.3 runs the posterior mean and the last 4 steps of a 5-step DDIM schedule (from timestep
# 799): 5 UNet evaluations a face instead of 8. Chosen by a rule committed before the sweep
# (docs/RESULTS.md, "Speed: fewer UNet evaluations"), on val faces 248-299: the fewest evaluations
# within 0.005 identity, 0.1 dB PSNR, 0.005 ST-LPIPS and 2 faces "same person" of the 10-step schedule
# at both presets; 4 steps (ddim or unipc) and 3 (ddim, unipc, dpm) lost more than 0.005 ST-LPIPS.
DEFAULT_STEPS = 5
DEFAULT_STRENGTH = 1.0

FUSION_MODES = ("window", "uniform")
DEFAULT_FUSION = "window"


def default_stride(patch_size: int) -> int:
    """The patch stride when none is given: half the patch, so that neighbouring patches overlap by half."""
    return max(1, patch_size // 2)


SCHEDULER_NAMES = ("ddim", "dpm", "unipc")
DEFAULT_SCHEDULER = "ddim"

# How the UNet runs (lpipdiff.model.backends): "auto" is the fastest the machine supports (a GPU: torch;
# a CPU with native bf16: OpenVINO bf16, else torch bf16 autocast; other CPUs: ONNX Runtime fp32,
# else torch fp32), measured in docs/BENCHMARKS.md.
BACKEND_NAMES = ("auto", "torch", "torch-bf16", "onnxruntime", "openvino")
DEFAULT_BACKEND = "auto"

# torch's generators take 64-bit seeds; the room above this is for "seed + face index".
MAX_SEED = 2**62

# The synthetic degradations of evaluation and training (lpipdiff.training.degradation.PRESETS).
PRESET_NAMES = ("moderate", "severe")

# Whole photos: facexlib's RetinaFace detectors.
DETECTOR_NAMES = ("mobilenet", "resnet50")
DEFAULT_DETECTOR = "mobilenet"
# Faces larger than the model keep the input's detail finer than face_size / detail pixels
# (lpipdiff.faces.detail). 1: all of it above the model's resolution, the only setting with nothing
# softer than the input there; 0: none. Above 1 was measured and rejected: less detail and more
# of the input's damage (docs/RESULTS.md).
DEFAULT_DETAIL = 1.0
MAX_DETAIL = 1.0

# Whole photos: the background upscaler's input tile side (lpipdiff.faces.upscaler; memory grows with its
# square) and the pixels neighbouring tiles share (blended).
DEFAULT_BG_TILE = 256
DEFAULT_BG_OVERLAP = 32

# Videos (lpipdiff.faces.video): frames restored together (their faces form one batch of the
# pipeline; memory holds this many frames), and the longest clip the command line takes unless told
# otherwise (--max-seconds).
DEFAULT_VIDEO_BATCH = 8
DEFAULT_MAX_SECONDS = 600.0
