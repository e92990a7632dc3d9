"""The sampling options: one typed object from every edge to the pipeline, validated once."""

import argparse
import subprocess
import sys
import time

import numpy as np
import pytest

from lpipdiff.arguments.options import add_sampling_arguments, sampling_options
from lpipdiff.config.defaults import DEFAULT_FIDELITY, DEFAULT_STEPS
from lpipdiff.model.sampling import SamplingOptions, restore_all

from conftest import tiny_pipeline


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    return sampling_options(parser.parse_args(list(argv)))


def test_command_line_options_become_one_sampling_options():
    assert parse() == SamplingOptions()
    assert parse().fidelity == DEFAULT_FIDELITY and parse().steps == DEFAULT_STEPS
    assert parse("--fidelity", "0.25", "--seed", "7").pipeline_kwargs()["fidelity"] == 0.25
    expert = parse("--fidelity", "none", "--steps", "10", "--strength", "0.5")
    assert expert.pipeline_kwargs() == dict(fidelity=None, num_inference_steps=10, strength=0.5, patch_stride=None,
                                            fusion="window")


@pytest.mark.parametrize("value", ["1.5", "-0.1", "sharp"])
def test_bad_fidelity_option_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit):
        parse("--fidelity", value)
    assert "--fidelity" in capsys.readouterr().err


def test_strength_below_one_is_the_experts_path_whatever_the_fidelity():
    """lpipdiff.checks.sampling_path's rule: a start from the noised input has no fidelity."""
    assert SamplingOptions(fidelity=0.7, strength=0.5).fidelity is None
    assert SamplingOptions(fidelity=0.7, strength=1.0).fidelity == 0.7
    # And the options then run.
    pipeline = tiny_pipeline()
    restored = restore_all(pipeline, [np.full((32, 32, 3), 0.5, np.float32)], SamplingOptions(strength=0.5, steps=2))
    assert restored[0].shape == (32, 32, 3)


@pytest.mark.parametrize("field, value, message", [
    ("fidelity", 1.5, "fidelity must be a number in"),
    ("fidelity", "high", "fidelity must be a number in"),
    ("strength", 0.0, "strength must be a number in"),
    ("steps", 0, "steps must be a whole number"),
    ("steps", 2.5, "steps must be a whole number"),
    ("stride", 0, "stride must be a whole number"),
    ("fusion", "median", "fusion must be one of"),
    ("scheduler", "euler", "scheduler must be one of"),
    ("seed", -1, "seed must be a whole number"),
])
def test_bad_options_are_refused_on_construction(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingOptions(**{field: value})


def test_numpy_numbers_become_plain_python_numbers():
    options = SamplingOptions(fidelity=np.float32(0.5), strength=np.float64(1.0), steps=np.int64(4), seed=np.int32(3))
    assert type(options.fidelity) is float and type(options.steps) is int and type(options.seed) is int


def test_face_i_gets_seed_plus_i_whatever_the_batching():
    pipeline = tiny_pipeline()
    faces = [np.random.default_rng(i).random((32, 32, 3)).astype(np.float32) for i in range(3)]
    options = SamplingOptions(steps=4, seed=5)
    together = restore_all(pipeline, faces, options, batch_size=3)
    alone = restore_all(pipeline, faces[2:], SamplingOptions(steps=4, seed=7))
    np.testing.assert_allclose(together[2], alone[0], atol=1e-5)  # batched convolutions round differently
    assert np.abs(together[0] - together[1]).max() > 0.01


def test_the_command_line_answers_help_at_once_without_torch():
    code = "import sys, lpipdiff.cli.commands as c; c.build_parser(); print('torch' in sys.modules)"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", "building the CLI parser imported torch"
    assert time.perf_counter() - started < 5  # about 0.1 s; the bound only catches a heavy import
