"""The adapter over facexlib's FaceRestoreHelper sets, in its own __init__, the state facexlib's
methods read; these tests hold it to the facexlib release the requirements pin."""

import numpy as np
import pytest
import torch
from facexlib.utils import face_restoration_helper

from lpipdiff.faces.face_helper import FaceHelper

# The adapter's own models: one shared detector, and no parser (see lpipdiff.faces.face_helper).
MODELS = {"face_det", "face_parse"}


@pytest.fixture
def facexlib_helper(monkeypatch):
    """facexlib's own helper for a 512-pixel square crop, its models replaced by markers (no download)."""
    monkeypatch.setattr(face_restoration_helper, "init_detection_model", lambda *args, **kwargs: "detector")
    monkeypatch.setattr(face_restoration_helper, "init_parsing_model", lambda *args, **kwargs: "parser")
    return face_restoration_helper.FaceRestoreHelper(2, face_size=512, device=torch.device("cpu"))


def test_the_adapter_sets_every_attribute_facexlib_s_init_sets(facexlib_helper):
    theirs = vars(facexlib_helper)
    # facexlib's default 5-point template, as fractions of the face side, is the one to compare with.
    template = facexlib_helper.face_template / 512
    ours = vars(FaceHelper(torch.nn.Linear(1, 1), 512, template, upscale=2))
    assert set(theirs) <= set(ours), f"facexlib sets attributes the adapter does not: {set(theirs) - set(ours)}"
    # And to the same values, for the same crop (the models aside).
    for name in set(theirs) - MODELS:
        if isinstance(theirs[name], np.ndarray):
            np.testing.assert_allclose(ours[name], theirs[name], err_msg=name)
        else:
            assert ours[name] == theirs[name], name
    assert ours["face_parse"] is None and ours["use_parse"] is False
