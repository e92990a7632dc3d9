import json
import shutil

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from lpipdiff.data import FacePatchDataset
from lpipdiff.sampling import default_scheduler
from lpipdiff.train import list_checkpoints, main, training_loss

from conftest import copy_val_faces, tiny_unet

TINY = ["--face-size", "32", "--patch-size", "16", "--channels", "8,16", "--attention-levels", "1",
        "--batch-size", "4", "--num-workers", "0", "--validate-every", "0"]


@pytest.fixture
def faces(tmp_path):
    return copy_val_faces(tmp_path / "faces", 6)


def test_dataset_gives_aligned_random_crops(faces):
    torch.manual_seed(0)
    dataset = FacePatchDataset(faces, face_size=32, patch_size=16)
    item = dataset[0]
    assert set(item) == {"clean", "degraded", "coordinates", "context"}
    assert all(v.shape == (c, 16, 16) for v, c in zip(item.values(), (3, 3, 2, 3)))
    assert item["clean"].min() >= -1 and item["clean"].max() <= 1
    corners = {tuple(dataset[0]["coordinates"][:, 0, 0].tolist()) for _ in range(20)}
    assert len(corners) > 5  # crops start anywhere, not only on a grid


def test_dataloader_workers_draw_different_degradations(faces):
    torch.manual_seed(0)
    dataset = FacePatchDataset(faces, face_size=32, patch_size=16)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, [0] * 4), batch_size=1, num_workers=2)
    crops = [batch["degraded"] for batch in loader]
    assert all(not torch.equal(crops[0], other) for other in crops[1:])


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(faces):
    torch.manual_seed(0)
    dataset = FacePatchDataset(faces, face_size=32, patch_size=16)
    batch = torch.utils.data.default_collate([dataset[i % len(dataset)] for i in range(8)])
    model = tiny_unet().train()
    noise_scheduler = DDPMScheduler.from_config(default_scheduler().config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def fixed_loss():
        with torch.no_grad():
            return training_loss(model, noise_scheduler, batch, generator=torch.Generator().manual_seed(0)).item()

    before = fixed_loss()
    for step in range(30):
        loss = training_loss(model, noise_scheduler, batch, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert fixed_loss() < 0.8 * before


def test_resume_restores_step_ema_and_optimizer(tmp_path, faces):
    run = tmp_path / "run"
    main(["--data", str(faces), "--output", str(run), "--max-steps", "4", "--checkpoint-every", "2", *TINY])
    checkpoints = list_checkpoints(run / "checkpoints")
    assert [p.name for p in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    saved = tmp_path / "saved"
    shutil.copytree(checkpoints[-1], saved)
    (run / "checkpoints" / ".partial-checkpoint-6").mkdir()  # a save killed half-way

    # Resume with nothing left to do: the checkpoint written again must equal the one loaded.
    main(["--data", str(faces), "--output", str(run), "--max-steps", "4", "--resume", "latest", *TINY])
    again = run / "checkpoints" / "checkpoint-4"
    assert json.loads((again / "train_state.json").read_text()) == {"step": 4}
    for name, loaded in load_file(saved / "model.safetensors").items():
        assert torch.equal(loaded, load_file(again / "model.safetensors")[name])
    old_opt = torch.load(saved / "optimizer.bin", weights_only=True)
    new_opt = torch.load(again / "optimizer.bin", weights_only=True)
    assert old_opt["state"][0]["step"] == new_opt["state"][0]["step"] == 4
    assert torch.equal(old_opt["state"][0]["exp_avg"], new_opt["state"][0]["exp_avg"])
    old_ema = torch.load(saved / "custom_checkpoint_0.pkl", weights_only=False)
    new_ema = torch.load(again / "custom_checkpoint_0.pkl", weights_only=False)
    assert old_ema["optimization_step"] == new_ema["optimization_step"] == 4
    assert all(torch.equal(a, b) for a, b in zip(old_ema["shadow_params"], new_ema["shadow_params"]))

    # Training on from the checkpoint continues the count and exports a loadable pipeline.
    main(["--data", str(faces), "--output", str(run), "--max-steps", "6", "--resume", "latest", "--export-fp16", *TINY])
    assert list_checkpoints(run / "checkpoints")[-1].name == "checkpoint-6"
    record = json.loads((run / "pipeline" / "training_config.json").read_text())
    assert record["steps"] == 6
    from lpipdiff.loading import load_pipeline

    pipeline = load_pipeline(run / "pipeline", device="cpu")
    assert pipeline.unet.dtype == torch.float32  # fp16 on disk, upcast for the CPU
    assert (run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size < 400_000
