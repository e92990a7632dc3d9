"""Make the demo's example inputs from public-domain photos that ship with installed packages.

    python examples/make_examples.py

Writes scikit-image's astronaut photo degraded at two levels and her aligned face at two
levels, and matplotlib's portrait of Grace Hopper (an older adult: issue 22) degraded at the
moderate level, each with a fixed seed, so the examples are the same on every machine. Hopper's
is the photo `benchmarks/real_photos.py` calls "hopper x1 moderate".
"""

from pathlib import Path

import numpy as np
from skimage import data

from lpipdiff.io.images import resize_array, save_image
from lpipdiff.training.degradation import Degradation

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
    hopper = grace_hopper()  # US Navy photo of Grace Hopper, public domain; her face spans about 212 pixels
    degraded = Degradation("moderate", face_size=212, color=False)(hopper, np.random.default_rng(5))
    save_image(degraded, HERE / "hopper_photo_moderate.png", overwrite=True)


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file, Image.open(file) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


if __name__ == "__main__":
    main()
