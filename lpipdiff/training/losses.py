"""The training losses, as pure functions of tensors.

Two objectives share one batch:

* the **diffusion loss**: the UNet's prediction at a random timestep against its target (noise,
  velocity or the sample), what every sampling path relies on;
* the **one-step loss**: the clean estimate the model makes in one step from pure noise at the
  last timestep, which is exactly what the pipeline returns at ``fidelity=1``, pushed towards a
  sharp face (a perceptual term and optionally an adversarial one) while its low frequencies stay
  anchored to a frozen teacher's estimate (the model before fine-tuning), so that detail may change
  but the person, whose identity lives in the coarse shape of the face, does not.

Nothing here holds state or reads arguments: the training script builds the inputs and the
networks and passes the weights in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class OneStepWeights:
    """How much each term of the one-step loss counts (0 turns a term off).

    Args:
        perceptual: the perceptual distance between the one-step estimate and the clean patch.
        l1: the mean absolute difference between them, in [-1, 1] image units.
        anchor: the mean absolute difference between the low frequencies of the one-step estimate
            and those of the teacher's (both average-pooled by ``anchor_factor``).
        anchor_factor: the pooling factor that defines "low frequencies" (4: a 64-pixel patch is
            compared at 16 x 16).
        adversarial: the generator's hinge loss against the patch discriminator.
    """

    perceptual: float = 0.0
    l1: float = 0.0
    anchor: float = 0.0
    anchor_factor: int = 4
    adversarial: float = 0.0

    @property
    def active(self) -> bool:
        """Whether the one-step estimate is trained at all."""
        return any(w > 0 for w in (self.perceptual, self.l1, self.anchor, self.adversarial))


def diffusion_target(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, scheduler) -> torch.Tensor:
    """What the UNet is trained to predict for ``x0`` noised with ``noise`` at ``timesteps``."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    return x0


def clean_estimate(sample: torch.Tensor, prediction: torch.Tensor, alpha_bar: torch.Tensor,
                   prediction_type: str) -> torch.Tensor:
    """The clean sample a prediction at a timestep of signal fraction ``alpha_bar`` implies: the
    ``pred_original_sample`` of diffusers' DDIM step, per batch row (``alpha_bar`` of shape ``(N,)``)."""
    alpha_bar = alpha_bar.to(sample.dtype).view(-1, *([1] * (sample.ndim - 1)))
    signal, noise_level = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "epsilon":
        return (sample - noise_level * prediction) / signal
    if prediction_type == "v_prediction":
        return signal * sample - noise_level * prediction
    return prediction


def low_frequencies(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``images`` average-pooled by ``factor`` (the part of a face that carries its shape)."""
    return F.avg_pool2d(images, factor) if factor > 1 else images


def anchor_loss(estimate: torch.Tensor, teacher: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean absolute difference of the low frequencies of ``estimate`` and of the (detached) ``teacher``."""
    return (low_frequencies(estimate.float(), factor) - low_frequencies(teacher.detach().float(), factor)).abs().mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: real logits pushed above 1, fake ones below -1."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss: the discriminator's logits on its outputs, raised."""
    return -fake_logits.float().mean()


def one_step_loss(estimate: torch.Tensor, clean: torch.Tensor, teacher: torch.Tensor | None, weights: OneStepWeights,
                  perceptual=None, fake_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted one-step loss and its terms (as floats, for the log).

    Args:
        estimate: the model's one-step clean patches, ``(N, 3, P, P)`` in [-1, 1].
        clean: the true clean patches, same shape.
        teacher: the frozen teacher's one-step clean patches, same shape (needed when
            ``weights.anchor > 0``).
        weights: the terms' weights.
        perceptual: a callable ``(a, b) -> (N, ...)`` distance of images in [-1, 1] (needed when
            ``weights.perceptual > 0``).
        fake_logits: the discriminator's logits on ``estimate`` (needed when ``weights.adversarial > 0``).
    """
    terms: dict[str, torch.Tensor] = {}
    if weights.perceptual > 0:
        terms["perceptual"] = perceptual(estimate.float(), clean.float()).mean()
    if weights.l1 > 0:
        terms["l1"] = (estimate.float() - clean.float()).abs().mean()
    if weights.anchor > 0:
        terms["anchor"] = anchor_loss(estimate, teacher, weights.anchor_factor)
    if weights.adversarial > 0:
        terms["adversarial"] = hinge_generator_loss(fake_logits)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}
