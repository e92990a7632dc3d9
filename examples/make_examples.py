"""Make the demo's example inputs from scikit-image's public-domain astronaut photo.

    python examples/make_examples.py

Writes the whole photo degraded at two levels and her aligned face at two levels, each
with a fixed seed, so the examples are the same on every machine.
"""

from pathlib import Path

import numpy as np
from skimage import data

from lpipdiff.degradation import Degradation
from lpipdiff.image_io import resize_array, save_image

HERE = Path(__file__).resolve().parent


def main() -> None:
    photo = data.astronaut().astype(np.float32) / 255.0  # NASA photo of Eileen Collins, public domain
    face = resize_array(photo[30:230, 125:325], 128)  # her face, roughly framed like the training crops
    for preset, seed in (("moderate", 1), ("severe", 2)):
        # Presets are defined relative to the face: hers spans about 160 of the 512 pixels.
        degraded = Degradation(preset, face_size=160, color=False)(photo, np.random.default_rng(seed))
        save_image(degraded, HERE / f"astronaut_photo_{preset}.png", overwrite=True)
        degraded = Degradation(preset, face_size=128, color=False)(face, np.random.default_rng(seed))
        save_image(degraded, HERE / f"astronaut_face_{preset}.png", overwrite=True)


if __name__ == "__main__":
    main()
