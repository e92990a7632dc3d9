import json
import shutil

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from lpipdiff.model.sampling import build_scheduler
from lpipdiff.model.unet import coordinate_channels
from lpipdiff.training.data import (
    FacesFromFiles,
    FacesInMemory,
    PatchBatches,
    crop_examples,
    face_source,
    open_faces,
    pack_faces,
)
from lpipdiff.training.degradation_torch import BatchDegradation
from lpipdiff.training.train import list_checkpoints, main, training_loss

from conftest import copy_val_faces, tiny_unet

pytestmark = pytest.mark.slow  # training runs

TINY = ["--face-size", "32", "--patch-size", "16", "--channels", "8,16", "--attention-levels", "1",
        "--batch-size", "4", "--num-workers", "0", "--validate-every", "0"]


@pytest.fixture
def faces(tmp_path):
    return copy_val_faces(tmp_path / "faces", 6)


def patch_batches(faces, batch_size=8, patches_per_face=4, memory_budget=2**30):
    torch.manual_seed(0)
    source = face_source(open_faces(faces, 32), "cpu", memory_budget=memory_budget, num_workers=0)
    return PatchBatches(source, BatchDegradation(face_size=32), 16, batch_size, patches_per_face)


def test_batches_are_aligned_random_crops_of_degraded_real_faces(faces):
    batches = patch_batches(faces)
    assert isinstance(batches.faces, FacesInMemory) and batches.faces.faces.dtype == torch.uint8
    batch = next(batches)
    assert set(batch) == {"clean", "degraded", "coordinates", "context"}
    channels = {"clean": 3, "degraded": 3, "coordinates": 2, "context": 3}
    assert {k: v.shape for k, v in batch.items()} == {k: (8, c, 16, 16) for k, c in channels.items()}
    assert batch["clean"].min() >= -1 and batch["clean"].max() <= 1
    assert not torch.equal(batch["clean"], batch["degraded"])
    # Four crops share a face (and its context); the crop is where its coordinates say it is.
    context = batch["context"]
    assert torch.equal(context[0], context[3]) and not torch.equal(context[0], context[4])
    grid = coordinate_channels(32)[0]
    corners = set()
    for _ in range(5):
        for coordinates in next(batches)["coordinates"]:
            top = int(torch.nonzero(grid[0, :, 0] == coordinates[0, 0, 0]))
            left = int(torch.nonzero(grid[1, 0] == coordinates[1, 0, 0]))
            assert torch.equal(coordinates, grid[:, top : top + 16, left : left + 16])
            corners.add((top, left))
    assert len(corners) > 20  # crops start anywhere, not only on a grid


def test_crops_hold_the_face_pixels(faces):
    clean = torch.rand(2, 3, 32, 32)
    tops, lefts = torch.tensor([[0, 5], [16, 3]]), torch.tensor([[7, 0], [16, 9]])
    crops = crop_examples(clean, clean, coordinate_channels(32), tops, lefts, 16)
    assert torch.equal(crops["clean"][1], clean[0, :, 5:21, 0:16])
    assert torch.equal(crops["clean"][2], clean[1, :, 16:32, 16:32])


def test_a_pack_holds_the_folder_and_faces_past_the_budget_stream_from_it(faces, tmp_path):
    size = pack_faces(faces, tmp_path / "faces.pack")
    assert size < 1.01 * sum(p.stat().st_size for p in faces.iterdir()) + 4096
    from_folder, from_pack = open_faces(faces, 32), open_faces(tmp_path / "faces.pack", 32)
    assert len(from_pack) == len(from_folder) == 6
    assert all(torch.equal(from_folder[i], from_pack[i]) for i in range(6))
    streamed = patch_batches(tmp_path / "faces.pack", memory_budget=0)
    assert isinstance(streamed.faces, FacesFromFiles)
    assert next(streamed)["clean"].shape == (8, 3, 16, 16)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(faces):
    batch = next(patch_batches(faces))
    model = tiny_unet().train()
    noise_scheduler = DDPMScheduler.from_config(build_scheduler().config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def fixed_loss():
        with torch.no_grad():
            return training_loss(model, noise_scheduler, batch, generator=torch.Generator().manual_seed(0)).total.item()

    before = fixed_loss()
    for step in range(30):
        loss = training_loss(model, noise_scheduler, batch, generator=torch.Generator().manual_seed(step)).total
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
    old_ema = torch.load(saved / "ema.pt", weights_only=True)
    new_ema = torch.load(again / "ema.pt", weights_only=True)
    assert old_ema["optimization_step"] == new_ema["optimization_step"] == 4
    assert all(torch.equal(a, b) for a, b in zip(old_ema["shadow_params"], new_ema["shadow_params"]))

    # Training on from the checkpoint continues the count and exports a loadable pipeline.
    main(["--data", str(faces), "--output", str(run), "--max-steps", "6", "--resume", "latest", "--export-fp16", *TINY])
    assert list_checkpoints(run / "checkpoints")[-1].name == "checkpoint-6"
    record = json.loads((run / "pipeline" / "training_config.json").read_text())
    assert record["steps"] == 6
    from lpipdiff.model.loading import load_pipeline

    pipeline = load_pipeline(run / "pipeline", device="cpu")
    assert pipeline.unet.dtype == torch.float32  # fp16 on disk, upcast for the CPU
    assert (run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size < 400_000
