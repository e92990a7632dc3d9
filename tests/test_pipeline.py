import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from lpipdiff import LPIPDiffPipeline, PatchFusionUNet, coordinate_channels
from lpipdiff.io.images import resize_array
from lpipdiff.model.sampling import SCHEDULERS, sampling_pipeline

from conftest import generator, tiny_pipeline


def test_fixed_seed_gives_identical_output(pipeline, val_faces):
    first = pipeline(val_faces[0], num_inference_steps=3, generator=generator(1), output_type="np")
    second = pipeline(val_faces[0], num_inference_steps=3, generator=generator(1), output_type="np")
    other = pipeline(val_faces[0], num_inference_steps=3, generator=generator(2), output_type="np")
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.uncertainty, second.uncertainty)
    assert not np.array_equal(first.images, other.images)


def test_single_patch_equals_a_plain_whole_image_sampler():
    pipeline = tiny_pipeline(face_size=16, patch_size=16)
    face = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    result = pipeline(face, fidelity=None, num_inference_steps=4, generator=generator(3), output_type="np").images[0]

    unet, scheduler = pipeline.unet, DDIMScheduler.from_config(pipeline.scheduler.config)
    degraded = torch.from_numpy(face).permute(2, 0, 1)[None] * 2 - 1
    context = F.interpolate(degraded, size=(16, 16), mode="area")
    sample = torch.randn(degraded.shape, generator=generator(3))
    scheduler.set_timesteps(4)
    with torch.no_grad():
        for t in scheduler.timesteps:
            prediction = unet(sample, t, degraded, coordinate_channels(16), context)
            sample = scheduler.step(prediction, t, sample).prev_sample
    expected = ((degraded + sample / unet.config.residual_scale + 1) / 2).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs(pipeline, val_faces, name):
    pipeline = sampling_pipeline(pipeline, name)
    assert type(pipeline.scheduler) is SCHEDULERS[name]
    result = pipeline(val_faces[0], num_inference_steps=4, generator=generator(), output_type="np")
    assert result.images.shape == (1, 64, 64, 3)
    assert np.isfinite(result.images).all() and 0 <= result.images.min() and result.images.max() <= 1


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_strength_below_one_runs_the_last_steps_only(pipeline, val_faces, name):
    pipeline = sampling_pipeline(pipeline, name)
    calls = []

    def callback(pipe, step, timestep, callback_kwargs):
        calls.append((step, pipe.num_timesteps))
        return callback_kwargs

    pipeline(val_faces[0], fidelity=None, num_inference_steps=10, strength=0.3, generator=generator(),
             callback_on_step_end=callback)
    assert calls == [(0, 3), (1, 3), (2, 3)]


def test_fidelity_one_is_exactly_the_one_step_posterior_mean(pipeline, val_faces):
    """fidelity=1 returns the model's fused one-step estimate, bit for bit, whatever the schedule."""
    faces, seeds = val_faces[:2], (3, 4)
    one_step = pipeline(faces, fidelity=None, num_inference_steps=1, generator=[generator(s) for s in seeds],
                        output_type="np")
    for steps in (1, 20):
        result = pipeline(faces, fidelity=1.0, num_inference_steps=steps, generator=[generator(s) for s in seeds],
                          output_type="np")
        assert np.array_equal(result.images, one_step.images)
        assert np.array_equal(result.uncertainty, one_step.uncertainty)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_lower_fidelity_samples_the_last_steps_after_the_posterior_mean(pipeline, val_faces, name):
    """Step 0 is the posterior mean (at the last timestep), then round(steps * (1 - fidelity)) steps
    of the schedule from about (1 - fidelity) * 1000 down."""
    pipeline = sampling_pipeline(pipeline, name)
    calls = []

    def callback(pipe, step, timestep, callback_kwargs):
        calls.append((step, int(timestep), pipe.num_timesteps))
        return {}

    result = pipeline(val_faces[0], fidelity=0.7, num_inference_steps=10, generator=generator(),
                      callback_on_step_end=callback, output_type="np")
    assert [(step, total) for step, _, total in calls] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    timesteps = [t for _, t, _ in calls]
    assert timesteps[0] == 999 and 250 <= timesteps[1] <= 300 and timesteps == sorted(timesteps, reverse=True)
    assert np.isfinite(result.images).all()


def test_lower_fidelity_moves_away_from_the_posterior_mean(pipeline, val_faces):
    mean = pipeline(val_faces[1], fidelity=1.0, generator=generator(), output_type="np").images[0]
    # On a 10-step schedule 0.9 runs one step (on the default 5-step one it rounds to none).
    change = [np.abs(pipeline(val_faces[1], fidelity=f, num_inference_steps=10, generator=generator(),
                              output_type="np").images[0] - mean).mean() for f in (0.9, 0.0)]
    assert 0 < change[0] < change[1]


def test_step_callback_follows_the_diffusers_contract(pipeline, val_faces):
    """The callback sees the sample after each step and may replace it, as in diffusers' pipelines."""
    seen = []

    def zero_after_last_step(pipe, step, timestep, callback_kwargs):
        seen.append((step, int(timestep), tuple(callback_kwargs["sample"].shape)))
        if step == pipe.num_timesteps - 1:
            return {"sample": torch.zeros_like(callback_kwargs["sample"])}
        return {}

    face = val_faces[2]
    restored = pipeline(face, fidelity=None, num_inference_steps=3, generator=generator(), output_type="np",
                        callback_on_step_end=zero_after_last_step, callback_on_step_end_tensor_inputs=["sample"])
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][1] > seen[-1][1]
    assert seen[0][2] == (1, 3, 32, 32)
    # A zero residual decodes to the degraded input itself (resized to the model and back).
    expected = pipeline.postprocess(torch.from_numpy(resize_array(face, 32))[None], [(64, 64)], "np")
    np.testing.assert_allclose(restored.images, expected, atol=1e-6)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipeline(face, callback_on_step_end=zero_after_last_step, callback_on_step_end_tensor_inputs=["noise"])


def test_low_strength_stays_closer_to_the_input(pipeline, val_faces):
    face = val_faces[1]
    near = pipeline(face, fidelity=None, num_inference_steps=10, strength=0.1, generator=generator(), output_type="np")
    far = pipeline(face, fidelity=None, num_inference_steps=10, strength=1.0, generator=generator(), output_type="np")
    near, far = near.images[0], far.images[0]
    assert np.abs(near - face).mean() < np.abs(far - face).mean()


def test_save_and_load_round_trip(pipeline, saved_pipeline, val_faces):
    assert (saved_pipeline / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LPIPDiffPipeline.from_pretrained(saved_pipeline)
    assert isinstance(loaded.unet, PatchFusionUNet) and type(loaded.scheduler) is type(pipeline.scheduler)

    def public(config):
        return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))

    assert public(loaded.unet.config) == public(pipeline.unet.config)
    loaded.set_progress_bar_config(disable=True)
    expected = pipeline(val_faces[0], num_inference_steps=3, generator=generator(), output_type="np").images
    actual = loaded(val_faces[0], num_inference_steps=3, generator=generator(), output_type="np").images
    assert np.array_equal(actual, expected)


def test_batch_of_two_equals_two_single_calls(pipeline, val_faces):
    faces = val_faces[:2]
    batch = pipeline(faces, num_inference_steps=3, generator=[generator(5), generator(6)], output_type="np")
    singles = [pipeline(f, num_inference_steps=3, generator=generator(s), output_type="np")
               for f, s in zip(faces, (5, 6))]
    for i, single in enumerate(singles):
        np.testing.assert_allclose(batch.images[i], single.images[0], atol=1e-5)
        np.testing.assert_allclose(batch.uncertainty[i], single.uncertainty[0], atol=1e-5)


def test_unet_batch_size_does_not_change_the_result(pipeline, val_faces):
    small = pipeline(val_faces[0], num_inference_steps=2, generator=generator(), unet_batch_size=2, output_type="np")
    large = pipeline(val_faces[0], num_inference_steps=2, generator=generator(), unet_batch_size=64, output_type="np")
    np.testing.assert_allclose(small.images, large.images, atol=1e-5)


def test_outputs_come_back_at_the_input_size_in_every_format(pipeline, val_faces):
    wide = np.random.default_rng(0).random((50, 70, 3), dtype=np.float32)
    pil = pipeline([val_faces[0], wide], num_inference_steps=2, generator=generator()).images
    assert [im.size for im in pil] == [(64, 64), (70, 50)]
    pt = pipeline(torch.from_numpy(val_faces[0]).permute(2, 0, 1), num_inference_steps=2, output_type="pt")
    assert pt.images.shape == (1, 3, 64, 64) and pt.uncertainty.shape == (1, 64, 64)
    mixed = pipeline([val_faces[0], wide], num_inference_steps=2, output_type="np")
    assert [m.shape for m in mixed.uncertainty] == [(64, 64), (50, 70)]


def test_uncertainty_is_where_patches_overlap(pipeline, val_faces):
    result = pipeline(val_faces[0], num_inference_steps=3, patch_stride=8, generator=generator(), output_type="np")
    uncertainty = result.uncertainty[0]
    grid_corner_only_one_patch = uncertainty[:4, :4]  # the face is resized to 32; corners are single-patch
    assert np.all(uncertainty >= 0) and uncertainty.max() > 0
    assert grid_corner_only_one_patch.max() < uncertainty.max() / 10


def test_window_fusion_and_stride_change_the_result(pipeline, val_faces):
    def restore(**kwargs):
        return pipeline(val_faces[0], num_inference_steps=2, generator=generator(), output_type="np", **kwargs).images

    base, uniform, dense = restore(), restore(fusion="uniform"), restore(patch_stride=4)
    assert np.array_equal(base, restore(fusion="window"))  # the default
    assert not np.allclose(base, uniform) and not np.allclose(base, dense)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"fusion": "max"}, "fusion"),
        ({"output_type": "latent"}, "output_type"),
        ({"patch_stride": 40}, "stride"),
        ({"generator": [torch.Generator()] * 3}, "generators"),
        ({"fidelity": 1.5}, r"fidelity must be a number in \[0, 1\]"),
        ({"fidelity": -0.1}, r"fidelity must be a number in \[0, 1\]"),
        ({"fidelity": float("nan")}, r"fidelity must be a number in \[0, 1\]"),
        ({"fidelity": "0.5"}, "fidelity must be a number"),
        ({"fidelity": True}, "fidelity must be a number"),
        ({"fidelity": 1.5, "strength": 0.5}, "fidelity must be a number"),  # checked even where it does not apply
    ],
)
def test_bad_arguments_are_explained(pipeline, val_faces, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipeline(val_faces[0], num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)


def test_model_without_conditioning_channels_still_samples():
    pipeline = tiny_pipeline(use_coordinates=False, use_global_context=False, residual=False)
    face = np.random.default_rng(1).random((32, 32, 3), dtype=np.float32)
    assert pipeline(face, num_inference_steps=2, output_type="np").images.shape == (1, 32, 32, 3)
