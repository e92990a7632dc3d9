"""Measure where RetinaFace puts the 5 landmarks on a folder of aligned faces.

    python scripts/measure_template.py ../shared/data/utkface/val --count 120

Prints the median positions as fractions of the face side: the "utkface" template in
lpipdiff/faces.py came from this command. Faces are padded with grey before detection so
that faces touching the border are still found.
"""

import argparse

import cv2
import numpy as np
import torch
from facexlib.detection import init_detection_model

from lpipdiff.config.environment import FACE_WEIGHTS_ENV, from_environment
from lpipdiff.io.images import list_images

PAD = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=120)
    args = parser.parse_args()
    weights = from_environment(FACE_WEIGHTS_ENV)
    detector = init_detection_model("retinaface_mobile0.25", device="cpu", model_rootpath=weights)
    points = []
    for path in list_images(args.folder)[: args.count]:
        image = cv2.imread(str(path))
        padded = cv2.copyMakeBorder(image, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        with torch.no_grad():
            boxes = detector.detect_faces(padded, 0.97)
        if len(boxes) == 0:
            continue
        box = boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
        points.append((np.array(box[5:15]).reshape(5, 2) - PAD) / np.array(image.shape[1::-1]))
    points = np.array(points)
    print(f"{len(points)} faces; median landmarks (x, y) as fractions of the side:")
    print(np.round(np.median(points, axis=0), 4).tolist())


if __name__ == "__main__":
    main()
