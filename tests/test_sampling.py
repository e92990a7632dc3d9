"""The sampling options every command shares."""

import argparse

import pytest

from lpipdiff.sampling import DEFAULT_FIDELITY, add_sampling_arguments, sampling_kwargs


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    return parser.parse_args(argv)


def test_fidelity_option_reaches_the_pipeline():
    assert sampling_kwargs(parse())["fidelity"] == DEFAULT_FIDELITY
    assert sampling_kwargs(parse("--fidelity", "0.25"))["fidelity"] == 0.25
    expert = sampling_kwargs(parse("--fidelity", "none", "--steps", "10", "--strength", "0.5"))
    assert expert["fidelity"] is None and expert["num_inference_steps"] == 10 and expert["strength"] == 0.5


@pytest.mark.parametrize("value", ["1.5", "-0.1", "sharp"])
def test_bad_fidelity_option_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit):
        parse("--fidelity", value)
    assert "--fidelity" in capsys.readouterr().err
