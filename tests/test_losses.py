"""The training losses: the one-step estimate the loss sees is the pipeline's fidelity-1 output, the
anchor passes detail and holds shape, the perceptual and adversarial terms point the right way."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from lpipdiff.model.pipeline_lpipdiff import LPIPDiffPipeline
from lpipdiff.model.sampling import build_scheduler
from lpipdiff.model.unet import coordinate_channels
from lpipdiff.training.discriminator import PatchDiscriminator
from lpipdiff.training.losses import (
    OneStepWeights,
    anchor_loss,
    clean_estimate,
    hinge_discriminator_loss,
    hinge_generator_loss,
    one_step_loss,
)
from lpipdiff.training.train import OneStepObjective, main, one_step_estimate, training_loss

from conftest import copy_val_faces, tiny_unet

FACE = 16


def patch_batch(face: torch.Tensor, degraded: torch.Tensor) -> dict[str, torch.Tensor]:
    """Whole faces as their own single patch, conditioned as the pipeline conditions them."""
    return {
        "clean": face,
        "degraded": degraded,
        "coordinates": coordinate_channels(FACE).repeat(len(face), 1, 1, 1),
        "context": degraded,
    }


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "sample"])
def test_clean_estimate_is_the_ddim_steps_original_sample(prediction_type):
    scheduler = DDIMScheduler.from_config(build_scheduler(prediction_type=prediction_type).config)
    scheduler.set_timesteps(10)
    torch.manual_seed(0)
    sample, prediction = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    for t in scheduler.timesteps[[0, 4, 9]]:
        expected = scheduler.step(prediction, t, sample).pred_original_sample
        alpha_bar = scheduler.alphas_cumprod[t].expand(2)
        assert torch.allclose(clean_estimate(sample, prediction, alpha_bar, prediction_type), expected, atol=1e-5)


def test_the_one_step_estimate_trained_is_what_the_pipeline_returns_at_fidelity_one():
    # One patch covering the face: the pipeline's fusion is then the identity, so the estimate the
    # loss sees must be its fidelity-1 output exactly, from the same noise.
    unet = tiny_unet(face_size=FACE, patch_size=FACE).eval()
    scheduler = build_scheduler()
    pipeline = LPIPDiffPipeline(unet=unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    torch.manual_seed(1)
    degraded = torch.rand(2, 3, FACE, FACE) * 2 - 1
    images = ((degraded + 1) / 2).permute(0, 2, 3, 1).numpy()
    restored = pipeline(list(images), fidelity=1.0, output_type="np", patch_stride=FACE,
                        generator=[torch.Generator().manual_seed(i) for i in range(2)]).images
    noise = torch.stack([torch.randn(3, FACE, FACE, generator=torch.Generator().manual_seed(i)) for i in range(2)])
    noise_scheduler = DDPMScheduler.from_config(scheduler.config)
    with torch.no_grad():
        estimate = one_step_estimate(unet, noise_scheduler, patch_batch(degraded, degraded), noise)
    ours = ((estimate + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - np.stack(restored)).max() < 1e-4


def test_anchor_passes_detail_and_holds_the_shape():
    torch.manual_seed(0)
    teacher = torch.rand(2, 3, 16, 16)
    checkerboard = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 0.4 - 0.2  # detail at 2 px
    assert anchor_loss(teacher + checkerboard, teacher, factor=4) < 1e-6
    assert anchor_loss(teacher + 0.2, teacher, factor=4) == pytest.approx(0.2, abs=1e-5)
    estimate = teacher.clone().requires_grad_()
    anchor_loss(estimate + 0.1, teacher.requires_grad_(), factor=2).backward()
    assert teacher.grad is None and estimate.grad.abs().sum() > 0  # only the student is pulled


def test_hinge_losses():
    assert hinge_discriminator_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)) == 0
    assert hinge_discriminator_loss(torch.zeros(4), torch.zeros(4)) == 2
    assert hinge_generator_loss(torch.tensor([1.0, 3.0])) == -2


def test_one_step_loss_weighs_only_the_terms_that_are_on():
    torch.manual_seed(0)
    clean, estimate = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    total, terms = one_step_loss(estimate, clean, None, OneStepWeights(l1=2.0))
    assert set(terms) == {"l1"} and total == pytest.approx(2 * terms["l1"])
    distance = lambda a, b: (a - b).pow(2).flatten(1).mean(1)  # noqa: E731
    weights = OneStepWeights(perceptual=0.5, anchor=1.0, adversarial=0.1)
    total, terms = one_step_loss(estimate, clean, clean, weights, distance, fake_logits=torch.ones(2, 1, 2, 2))
    assert set(terms) == {"perceptual", "anchor", "adversarial"}
    assert total == pytest.approx(0.5 * terms["perceptual"] + terms["anchor"] - 0.1, abs=1e-6)
    assert not OneStepWeights().active and OneStepWeights(anchor=1).active


def test_perceptual_distance_is_frozen_and_ranks_a_blurred_face_further():
    from lpipdiff.training.perceptual import PerceptualDistance

    distance = PerceptualDistance().train()
    assert not distance.network.training and not any(p.requires_grad for p in distance.parameters())
    torch.manual_seed(0)
    face = torch.rand(2, 3, 32, 32) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(face, 3, stride=1, padding=1)
    noisy = face + 0.05 * torch.randn_like(face)
    assert torch.all(distance(face, face) < 1e-6)
    assert torch.all(distance(blurred, face) > distance(noisy, face))


def test_the_combined_forward_leaves_the_diffusion_loss_unchanged_and_trains_the_estimate():
    torch.manual_seed(0)
    unet = tiny_unet(face_size=32, patch_size=16).train()
    teacher = tiny_unet(face_size=32, patch_size=16).eval().requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(build_scheduler().config)
    clean = torch.rand(4, 3, 16, 16) * 2 - 1
    degraded = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1)
    batch = {"clean": clean, "degraded": degraded,
             "coordinates": coordinate_channels(32)[:, :, :16, :16].repeat(4, 1, 1, 1), "context": degraded}
    plain = training_loss(unet, noise_scheduler, batch, generator=torch.Generator().manual_seed(3))
    objective = OneStepObjective(OneStepWeights(l1=1.0, anchor=1.0, adversarial=0.1), teacher=teacher,
                                 discriminator=PatchDiscriminator(channels=8, layers=2))
    both = training_loss(unet, noise_scheduler, batch, generator=torch.Generator().manual_seed(3), objective=objective)
    assert both.terms["diffusion"] == pytest.approx(plain.terms["diffusion"], rel=1e-5)
    assert set(both.terms) == {"diffusion", "l1", "anchor", "adversarial"}
    assert both.terms["anchor"] < 1e-6  # student and teacher hold the same weights
    assert both.estimate.shape == clean.shape
    both.total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert unet.unet.conv_in.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_a_one_step_fine_tune_runs_resumes_and_logs_its_terms(tmp_path):
    faces = copy_val_faces(tmp_path / "faces", 6)
    start = tmp_path / "start"
    tiny = ["--face-size", "32", "--patch-size", "32", "--channels", "8,16", "--attention-levels", "1",
            "--batch-size", "2", "--num-workers", "0", "--validate-every", "0"]
    main(["--data", str(faces), "--output", str(start), "--max-steps", "1", *tiny])
    run = tmp_path / "run"
    fine_tune = ["--data", str(faces), "--output", str(run), "--init-from", str(start / "pipeline"),
                 "--perceptual-weight", "1", "--anchor-weight", "1", "--adversarial-weight", "0.05",
                 "--checkpoint-every", "2", *tiny]
    main([*fine_tune, "--max-steps", "2"])
    main([*fine_tune, "--max-steps", "4", "--resume", "latest"])
    record = json.loads((run / "pipeline" / "training_config.json").read_text())
    assert record["steps"] == 4
    assert (run / "checkpoints" / "checkpoint-4" / "model_1.safetensors").is_file()  # the discriminator


@pytest.mark.parametrize("arguments, message", [
    (["--anchor-weight", "1"], "--init-from"),
    (["--perceptual-weight", "1", "--face-size", "16", "--patch-size", "16"], "at least 18 pixels"),
])
def test_one_step_arguments_that_cannot_work_are_refused(tmp_path, capsys, arguments, message):
    from lpipdiff.io.images import save_image

    save_image(np.zeros((32, 32, 3), np.float32), tmp_path / "faces" / "face.png")
    assert main(["--data", str(tmp_path / "faces"), "--output", str(tmp_path / "run"), *arguments]) == 2
    assert message in capsys.readouterr().err
