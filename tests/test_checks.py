"""The one checks module: its ranges, whole numbers and the strength/fidelity rule, and the argparse
types that wrap it (same rule, same message)."""

import argparse
import math

import numpy as np
import pytest
import torch

from lpipdiff.arguments.argtypes import fidelity_argument, float_range, int_range, seed_argument
from lpipdiff.checks import (
    check_fidelity,
    check_number,
    check_seed,
    check_strength,
    check_whole_number,
    is_whole_number,
    sampling_path,
)
from lpipdiff.config.defaults import MAX_SEED, default_stride
from lpipdiff.model.sampling import SamplingOptions

from conftest import generator, tiny_pipeline


@pytest.mark.parametrize("value, low_open, inside", [
    (0.0, False, True), (0.0, True, False), (1e-9, True, True), (1.0, False, True), (1.0 + 1e-9, False, False),
    (-1e-9, False, False),
])
def test_number_range_edges(value, low_open, inside):
    if inside:
        assert check_number("x", value, 0, 1, low_open=low_open) == value
    else:
        with pytest.raises(ValueError, match=r"x must be a number in [\[(]0, 1\]"):
            check_number("x", value, 0, 1, low_open=low_open)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf, np.float32("nan"), True, np.bool_(False),
                                   "0.5", None, [0.5], torch.tensor(0.5)])
def test_number_refuses_what_is_not_a_finite_real(value):
    with pytest.raises(ValueError, match="x must be a number in"):
        check_number("x", value, -10, 10)


def test_number_without_upper_bound_and_its_types():
    assert check_number("x", 1e30, 0) == 1e30
    with pytest.raises(ValueError, match="x must be a number above 0, got 0$"):
        check_number("x", 0, 0, low_open=True)
    with pytest.raises(ValueError, match="x must be a number of at least 2, got 1.5"):
        check_number("x", 1.5, 2)
    value = check_number("x", np.float32(0.25), 0, 1)
    assert type(value) is float and value == 0.25


@pytest.mark.parametrize("value, whole", [
    (3, True), (np.int64(3), True), (np.uint8(3), True), (3.0, False), (np.float64(3), False), (True, False),
    (np.bool_(True), False), ("3", False), (None, False),
])
def test_whole_numbers_are_integers_not_bools(value, whole):
    assert is_whole_number(value) is whole


def test_whole_number_range_edges_and_type():
    assert check_whole_number("n", 1, 1, 3) == 1 and check_whole_number("n", 3, 1, 3) == 3
    assert type(check_whole_number("n", np.int32(2), 1, 3)) is int
    for value in (0, 4, 2.0, 2.5, True, float("nan")):
        with pytest.raises(ValueError, match="n must be a whole number from 1 to 3"):
            check_whole_number("n", value, 1, 3)
    with pytest.raises(ValueError, match="n must be a whole number of at least 1, got 0"):
        check_whole_number("n", 0, 1)


def test_seed_bounds():
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED
    for value in (-1, MAX_SEED + 1, 1.0, True):
        with pytest.raises(ValueError, match=r"seed must be a whole number from 0 to 2\*\*62"):
            check_seed(value)


def test_strength_and_fidelity_ranges():
    assert check_strength(1) == 1.0 and check_fidelity(0) == 0.0 and check_fidelity(None) is None
    with pytest.raises(ValueError, match=r"strength must be a number in \(0, 1\], got 0.0"):
        check_strength(0.0)
    with pytest.raises(ValueError, match=r"fidelity must be a number in \[0, 1\], got 1.5"):
        check_fidelity(1.5)


@pytest.mark.parametrize("fidelity, strength, expected", [
    (0.5, 1.0, (0.5, 1.0)), (0.5, 0.5, (None, 0.5)), (None, 0.5, (None, 0.5)), (1.0, 0.999, (None, 0.999)),
    (None, 1, (None, 1.0)),
])
def test_strength_below_one_drops_the_fidelity(fidelity, strength, expected):
    assert sampling_path(fidelity, strength) == expected
    options = SamplingOptions(fidelity=fidelity, strength=strength)
    assert (options.fidelity, options.strength) == expected


@pytest.mark.parametrize("fidelity, strength", [(1.5, 0.5), ("high", 0.5), (0.5, 0.0), (0.5, float("nan"))])
def test_the_rule_still_checks_both_values(fidelity, strength):
    with pytest.raises(ValueError, match="fidelity|strength"):
        sampling_path(fidelity, strength)


def test_the_pipeline_follows_the_same_rule():
    """A fidelity with strength < 1 runs the image-to-image path, bit for bit, and that path is not the
    fidelity path (so the comparison can tell them apart)."""
    pipeline, face = tiny_pipeline(), np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)

    def restore(**kwargs):
        return pipeline(face, num_inference_steps=4, generator=generator(3), output_type="np", **kwargs).images

    both = restore(fidelity=0.3, strength=0.5)
    np.testing.assert_array_equal(both, restore(fidelity=None, strength=0.5))
    assert not np.array_equal(both, restore(fidelity=0.3, strength=1.0))


def test_the_default_stride_is_half_the_patch():
    assert default_stride(64) == 32 and default_stride(16) == 8 and default_stride(1) == 1
    pipeline, face = tiny_pipeline(patch_size=16), np.random.default_rng(1).random((32, 32, 3), dtype=np.float32)
    restored = [pipeline(face, num_inference_steps=2, generator=generator(), output_type="np", patch_stride=stride)
                .images for stride in (None, default_stride(16), 4)]
    np.testing.assert_array_equal(restored[0], restored[1])
    assert not np.array_equal(restored[0], restored[2])


def argparse_message(parse, text: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        parse(text)
    return str(raised.value)


def test_argparse_types_say_what_the_checks_say():
    assert float_range(1, 8)("2.5") == 2.5 and int_range(8, 4096)("8") == 8
    assert argparse_message(float_range(1, 8), "0") == "must be a number in [1, 8], got 0.0"
    assert argparse_message(float_range(1, 8), "nan") == "must be a number in [1, 8], got nan"
    assert argparse_message(float_range(0, low_open=True), "0") == "must be a number above 0, got 0.0"
    assert argparse_message(int_range(8, 4096), "4097") == "must be a whole number from 8 to 4096, got 4097"
    assert argparse_message(int_range(8, 4096), "8.5") == "expected a whole number, got '8.5'"
    assert argparse_message(float_range(1, 8), "big") == "expected a number, got 'big'"
    with pytest.raises(ValueError) as raised:
        check_seed(-1)
    assert argparse_message(seed_argument, "-1") == str(raised.value)
    assert seed_argument(str(MAX_SEED)) == MAX_SEED
    assert fidelity_argument("none") is None and fidelity_argument(" None ") is None
    assert fidelity_argument("0.3") == 0.3
    assert argparse_message(fidelity_argument, "1.5") == "fidelity must be a number in [0, 1], got 1.5"
    assert argparse_message(fidelity_argument, "sharp") == "expected a number or 'none', got 'sharp'"
