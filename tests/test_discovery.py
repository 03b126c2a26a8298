"""The discovery loop on tiny models: gradients, convergence, run folder, resume, Ctrl-C, NaN, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from noiseclr import discovery
from noiseclr.checkpoint import DiscoveryCheckpoint, list_checkpoints
from noiseclr.directions import Directions
from noiseclr.discovery import (
    DiscoveryInterrupted,
    DiscoverySettings,
    Sampler,
    discover,
    micro_batch_loss,
    timestep_bounds,
)
from noiseclr.processes import Processes
from noiseclr.runtime import RuntimeSettings
from noiseclr.errors import NoiseCLRError, TrainingDiverged
from noiseclr.images import ImageSet


def make_pixels(count: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator) * 2 - 1


def small(**changes) -> DiscoverySettings:
    base = dict(num_directions=5, batch_size=3, num_negatives=3, micro_batches=2, steps=6, checkpoint_every=3, seed=3)
    return DiscoverySettings(**{**base, **changes})


def write_pngs(folder: Path, count: int, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    for index in range(count):
        array = (torch.rand(size + 8, size, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(array).save(folder / f"img{index}.png")
    return folder


# ----------------------------------------------------------------------- the objective in the model
def test_gradients_reach_only_drawn_direction_rows(any_tiny_model):
    model = any_tiny_model
    count, batch = 6, 3
    vectors = torch.nn.Parameter(discovery.initial_directions(model, count, seed=0))
    latents = torch.randn(batch, model.latent_channels, model.latent_size, model.latent_size)
    noise = torch.randn_like(latents)
    drawn = torch.tensor([4, 1, 2])

    unet_batches: list[tuple[int, bool]] = []
    handle = model.unet.register_forward_hook(
        lambda module, args, output: unet_batches.append((args[0].shape[0], torch.is_grad_enabled()))
    )
    try:
        result = micro_batch_loss(model, vectors, latents, 500, noise, drawn, variant="all-anchors", temperature=0.5)
    finally:
        handle.remove()
    # One small null pass without grad, then ONE UNet call for all J*N pairs with grad.
    assert unet_batches == [(batch, False), (len(drawn) * batch, True)]
    assert result.features.shape == (3, batch, model.latent_channels * model.latent_size**2)
    assert result.loss.dtype == torch.float32 and torch.isfinite(result.loss)
    result.loss.backward()

    for module in (model.unet, model.vae, model.text_encoder):
        for name, parameter in module.named_parameters():
            assert not parameter.requires_grad, name
            assert parameter.grad is None, name
    row_has_grad = vectors.grad.abs().sum(dim=1) > 0
    assert row_has_grad.tolist() == [False, True, True, False, True, False]


def test_null_pass_has_no_graph(tiny_model):
    seen = []
    original = tiny_model.predict_eps

    def spy(latents, timesteps, conditioning):
        out = original(latents, timesteps, conditioning)
        seen.append((latents.shape[0], out.requires_grad))
        return out

    tiny_model.predict_eps = spy
    vectors = torch.nn.Parameter(discovery.initial_directions(tiny_model, 4, seed=0))
    latents = torch.randn(2, 4, 8, 8)
    micro_batch_loss(tiny_model, vectors, latents, 10, torch.randn_like(latents), torch.tensor([0, 3]))
    assert seen == [(2, False), (4, True)]


def test_initial_directions_have_token_norm(tiny_model):
    rows = discovery.initial_directions(tiny_model, 7, seed=1)
    assert rows.shape == (7, tiny_model.token_width)
    torch.testing.assert_close(rows.norm(dim=1), torch.full((7,), tiny_model.typical_token_norm()))
    assert not torch.equal(rows, discovery.initial_directions(tiny_model, 7, seed=2))


# ----------------------------------------------------------------------------------- sampling
def test_sampler_is_reproducible_and_restorable(tiny_model):
    kwargs = dict(
        num_directions=10, num_drawn=4, timestep_bounds=(100, 200), num_images=9, global_batch=5, latent_shape=(4, 8, 8)
    )
    first, second = Sampler(0), Sampler(0)
    state = first.state()
    a = first.draw(**kwargs)
    b = second.draw(**kwargs)
    for x, y in zip(a, b):
        assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))
    assert len(set(a.drawn.tolist())) == 4 and len(set(a.image_indices.tolist())) == 5
    assert 100 <= a.timestep < 200
    first.load_state(state)
    assert torch.equal(first.draw(**kwargs).noise, a.noise)
    assert not torch.equal(Sampler(1).draw(**kwargs).noise, a.noise)
    assert timestep_bounds(tiny_model, (0.0, 1.0)) == (0, 1000)
    assert timestep_bounds(tiny_model, (0.2, 0.5)) == (200, 500)


def test_single_process_needs_no_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    procs = Processes.detect("cpu")
    assert (procs.size, procs.rank, procs.is_main, procs.accelerator) == (1, 0, True, None)
    local = torch.randn(3, 2, 5, requires_grad=True)
    assert procs.gather_features(local) is local


# ---------------------------------------------------------------------------------- training
def test_loss_decreases(tiny_model, tmp_path):
    settings = DiscoverySettings(
        num_directions=6, batch_size=4, num_negatives=5, micro_batches=1, steps=50, checkpoint_every=0, seed=0
    )
    result = discover(tiny_model, make_pixels(8), tmp_path / "run", settings, progress=False)
    losses = [row["loss"] for row in result.loss_log]
    assert len(losses) == 50
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.2, (first, last)
    assert all(row["delta_abs_cos"] >= 0 for row in result.loss_log)


@pytest.mark.parametrize("variant", ["single-anchor", "all-anchors"])
def test_runs_on_eps_and_v_models(any_tiny_model, tmp_path, variant):
    result = discover(
        any_tiny_model, make_pixels(6), tmp_path / "run", small(steps=2, loss_variant=variant), progress=False
    )
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.final_loss))
    loaded = Directions.load(result.directions_path)
    loaded.check_compatible(any_tiny_model)
    assert loaded.width == any_tiny_model.token_width
    assert loaded.settings["loss_variant"] == variant


def test_run_folder_layout(tiny_model, tmp_path):
    run = tmp_path / "run"
    settings = small(steps=7, checkpoint_every=2, keep_checkpoints=2, domain="noise", names=list("abcde"))
    result = discover(
        tiny_model, ImageSet(make_pixels(7), [Path(f"{i}.png") for i in range(7)]), run, settings, progress=False
    )
    assert result.run_dir == run and result.directions_path == run / "directions.safetensors"
    assert result.steps == 7 and result.seconds > 0
    # Checkpoints at 2, 4, 6 and the final 7; the latest two are kept.
    assert [step for step, _ in list_checkpoints(run)] == [6, 7]
    assert result.checkpoint_path == run / "checkpoints" / "step-000007.safetensors"
    lines = (run / "loss.csv").read_text().splitlines()
    assert (
        lines[0] == "step,loss,seconds,delta_abs_cos,vector_abs_cos,response_mean,response_min,reseeded"
        and len(lines) == 8
    )
    # Per direction and log step (every 10 steps and the last): response and conditioning change.
    responses = (run / "responses.csv").read_text().splitlines()
    assert responses[0] == "step,direction,response,conditioning_change" and len(responses) == 1 + 5
    saved = json.loads((run / "settings.json").read_text())
    assert saved["settings"]["num_directions"] == 5 and saved["images"]["count"] == 7 and saved["world_size"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 7 and summary["final_loss"] == pytest.approx(result.final_loss)
    directions = Directions.load(run / "directions.safetensors")
    assert directions.names == list("abcde") and directions.domain == "noise"
    assert len(directions.calibration["response"]) == 5 and min(directions.calibration["response"]) > 0
    assert directions.settings["batch_size"] == 3 and directions.settings["steps_done"] == 7
    assert torch.equal(directions.vectors, result.directions.vectors)
    ckpt = DiscoveryCheckpoint.load(run / "checkpoints" / "step-000007.safetensors")
    assert (
        ckpt.step == 7
        and set(ckpt.rng) == set(discovery.RNG_STREAMS)
        and set(ckpt.optimizer_state()) == {"step", "exp_avg", "exp_avg_sq"}
    )
    assert torch.equal(ckpt.directions, directions.vectors) and len(ckpt.loss_log) == 7


def test_image_folder_input(tiny_model, tmp_path, caplog):
    folder = write_pngs(tmp_path / "imgs", 4)
    (folder / "notes.txt").write_text("not an image")
    result = discover(tiny_model, folder, tmp_path / "run", small(steps=1), progress=False)
    assert result.steps == 1
    assert "notes.txt" in caplog.text
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["images"]["count"] == 4


def test_bfloat16_model_keeps_float32_directions(tiny_model_dir, tmp_path):
    result = discover(
        str(tiny_model_dir),
        make_pixels(4),
        tmp_path / "run",
        small(steps=2),
        runtime=RuntimeSettings(device="cpu", dtype="bfloat16"),
        progress=False,
    )
    assert result.directions.vectors.dtype == torch.float32
    assert torch.isfinite(torch.tensor(result.final_loss))


# ------------------------------------------------------------------------- resume, Ctrl-C, NaN
def test_resume_equals_uninterrupted(tiny_model, tmp_path):
    pixels = make_pixels(8)
    straight = discover(tiny_model, pixels, tmp_path / "straight", small(steps=6), progress=False)
    discover(tiny_model, pixels, tmp_path / "split", small(steps=3), progress=False)
    resumed = discover(tiny_model, pixels, tmp_path / "split", small(steps=6), resume=True, progress=False)
    assert resumed.steps == 6
    assert torch.equal(resumed.directions.vectors, straight.directions.vectors)
    assert [r["loss"] for r in resumed.loss_log] == [r["loss"] for r in straight.loss_log]


def test_version_1_checkpoints_still_resume(tiny_model, tmp_path):
    # Format 1 stored Adam's state as adam.step [1], adam.exp_avg, adam.exp_avg_sq.
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    pixels = make_pixels(8)
    straight = discover(tiny_model, pixels, tmp_path / "straight", small(steps=6), progress=False)
    discover(tiny_model, pixels, tmp_path / "split", small(steps=3), progress=False)
    path = tmp_path / "split" / "checkpoints" / "step-000003.safetensors"
    tensors = load_file(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    old = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    old.update({"adam." + k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith("optimizer.state.0.")})
    old["adam.step"] = old["adam.step"].reshape(1)
    meta["format_version"] = "1"
    del meta["optimizer"]
    save_file(old, path, metadata=meta)
    assert DiscoveryCheckpoint.load(path).optimizer_state().keys() == {"step", "exp_avg", "exp_avg_sq"}
    resumed = discover(tiny_model, pixels, tmp_path / "split", small(steps=6), resume=True, progress=False)
    assert torch.equal(resumed.directions.vectors, straight.directions.vectors)


def test_ctrl_c_writes_checkpoint_and_resume_continues(tiny_model, tmp_path, monkeypatch):
    pixels = make_pixels(8)
    settings = small(steps=6, checkpoint_every=0)
    straight = discover(tiny_model, pixels, tmp_path / "straight", settings, progress=False)

    calls = {"n": 0}
    real = discovery.micro_batch_loss

    def interrupt_in_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:  # second micro-batch of step 5
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(discovery, "micro_batch_loss", interrupt_in_step_five)
    with pytest.raises(DiscoveryInterrupted) as caught:
        discover(tiny_model, pixels, tmp_path / "run", settings, progress=False)
    assert isinstance(caught.value, KeyboardInterrupt)
    assert caught.value.step == 4
    assert caught.value.checkpoint == tmp_path / "run" / "checkpoints" / "step-000004.safetensors"
    assert "--resume" in str(caught.value)
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [4]
    assert len((tmp_path / "run" / "loss.csv").read_text().splitlines()) == 5

    monkeypatch.setattr(discovery, "micro_batch_loss", real)
    resumed = discover(tiny_model, pixels, tmp_path / "run", settings, resume=True, progress=False)
    assert torch.equal(resumed.directions.vectors, straight.directions.vectors)


def test_nan_stops_and_keeps_last_good_checkpoint(tiny_model, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = discovery.micro_batch_loss
    calls = {"n": 0}
    digest = {}

    def nan_in_step_four(*args, **kwargs):
        calls["n"] += 1
        result = real(*args, **kwargs)
        if calls["n"] == 4:
            digest["before"] = hashlib.sha256(
                (run / "checkpoints" / "step-000002.safetensors").read_bytes()
            ).hexdigest()
            return result._replace(loss=result.loss * float("nan"))
        return result

    monkeypatch.setattr(discovery, "micro_batch_loss", nan_in_step_four)
    with pytest.raises(TrainingDiverged) as caught:
        discover(tiny_model, make_pixels(6), run, small(micro_batches=1, checkpoint_every=2), progress=False)
    message = str(caught.value)
    assert isinstance(caught.value, NoiseCLRError) and "\n" not in message
    assert "step 4" in message and "nan" in message and "step-000002" in message
    assert "--lr" in message and "--dtype float32" in message
    assert [step for step, _ in list_checkpoints(run)] == [2]
    after = hashlib.sha256((run / "checkpoints" / "step-000002.safetensors").read_bytes()).hexdigest()
    assert after == digest["before"]
    assert not (run / "directions.safetensors").exists()


# -------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(num_directions=1, num_negatives=None), "--num-directions 1"),
        (dict(num_negatives=5), "--negatives 5"),
        (dict(num_negatives=0), "--negatives 0"),
        (dict(batch_size=1), "--batch 1: the contrast needs at least 2 images"),
        (dict(timestep_range=(0.5, 0.5)), "--timesteps 0.5:0.5"),
        (dict(names=["a"]), "--names: got 1 names for 5 directions"),
        (dict(loss_variant="best"), "--loss best"),
        (dict(steps=0), "--steps 0"),
    ],
)
def test_bad_settings(tiny_model, tmp_path, changes, match):
    with pytest.raises(NoiseCLRError, match=match) as caught:
        discover(tiny_model, make_pixels(8), tmp_path / "run", small(**changes), progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_too_few_images(tiny_model, tmp_path):
    with pytest.raises(NoiseCLRError, match="only 2 image"):
        discover(tiny_model, make_pixels(2), tmp_path / "run", small(batch_size=3), progress=False)
    folder = write_pngs(tmp_path / "imgs", 2)
    (folder / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(NoiseCLRError, match=r"only 2 usable image\(s\).*need at least 3"):
        discover(tiny_model, folder, tmp_path / "run2", small(batch_size=3), progress=False)


def test_missing_empty_and_wrong_size_images(tiny_model, tmp_path):
    with pytest.raises(NoiseCLRError, match="no such folder"):
        discover(tiny_model, tmp_path / "nowhere", tmp_path / "run", small(), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoiseCLRError, match="the folder is empty"):
        discover(tiny_model, tmp_path / "empty", tmp_path / "run", small(), progress=False)
    with pytest.raises(NoiseCLRError, match=r"images must be \[M, 3, 64, 64\]"):
        discover(tiny_model, make_pixels(8, size=32), tmp_path / "run", small(), progress=False)


def test_unwritable_output(tiny_model, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(NoiseCLRError, match="--out .*cannot write there"):
        discover(tiny_model, make_pixels(8), blocker / "run", small(), progress=False)
    with pytest.raises(NoiseCLRError, match="--out .*not a folder"):
        discover(tiny_model, make_pixels(8), blocker, small(), progress=False)


def test_existing_run_needs_resume(tiny_model, tmp_path):
    pixels = make_pixels(8)
    discover(tiny_model, pixels, tmp_path / "run", small(steps=1), progress=False)
    with pytest.raises(NoiseCLRError, match="pass --resume to continue it or pick another folder"):
        discover(tiny_model, pixels, tmp_path / "run", small(steps=2), progress=False)


def test_resume_with_incompatible_run(tiny_model, tiny_v_model, tmp_path):
    pixels = make_pixels(8)
    run = tmp_path / "run"
    discover(tiny_model, pixels, run, small(steps=1), progress=False)
    with pytest.raises(NoiseCLRError, match="the run has 5 directions but --num-directions is 6"):
        discover(tiny_model, pixels, run, small(num_directions=6, steps=2), resume=True, progress=False)
    with pytest.raises(NoiseCLRError, match="the run used 8 images but --images now has 7"):
        discover(tiny_model, pixels[:7], run, small(steps=2), resume=True, progress=False)
    with pytest.raises(NoiseCLRError, match="made with model .* not .*--model"):
        discover(tiny_v_model, pixels, run, small(steps=2), resume=True, progress=False)


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_kept(tiny_model, tmp_path):
    pixels = make_pixels(8)
    first = discover(tiny_model, pixels, tmp_path / "run", small(steps=2), resume=True, progress=False)
    again = discover(tiny_model, pixels, tmp_path / "run", small(steps=2), resume=True, progress=False)
    assert again.steps == 2 and torch.equal(again.directions.vectors, first.directions.vectors)


class _NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is poisoned."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_nan_gradient_also_stops(tiny_model, tmp_path, monkeypatch):
    real = discovery.micro_batch_loss

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        return result._replace(loss=_NaNGradient.apply(result.loss))

    monkeypatch.setattr(discovery, "micro_batch_loss", poisoned)
    with pytest.raises(
        TrainingDiverged, match="step 1: the gradient became nan or inf .*no checkpoint was written yet"
    ):
        discover(tiny_model, make_pixels(6), tmp_path / "run", small(), progress=False)
    assert list_checkpoints(tmp_path / "run") == []


# ------------------------------------------------------------------------- resume edge cases
def _damage(path: Path) -> bytes:
    garbage = b"not a checkpoint: damaged on purpose"
    path.write_bytes(garbage)
    return garbage


def test_resume_refuses_when_every_checkpoint_is_unreadable(tiny_model, tmp_path):
    pixels = make_pixels(8)
    run = tmp_path / "run"
    discover(tiny_model, pixels, run, small(steps=4, checkpoint_every=2), progress=False)
    paths = [path for _, path in list_checkpoints(run)]
    assert [p.name for p in paths] == ["step-000002.safetensors", "step-000004.safetensors"]
    garbage = {path: _damage(path) for path in paths}
    with pytest.raises(NoiseCLRError) as caught:
        discover(tiny_model, pixels, run, small(steps=6, checkpoint_every=2), resume=True, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "--resume" in message
    assert "step-000002.safetensors" in message and "step-000004.safetensors" in message
    assert "move" in message and "start" in message
    # Nothing was trained and nothing was deleted.
    assert {path: path.read_bytes() for path in paths} == garbage


def test_rotation_never_deletes_a_checkpoint_it_could_not_read(tiny_model, tmp_path, caplog):
    pixels = make_pixels(8)
    run = tmp_path / "run"
    discover(tiny_model, pixels, run, small(steps=4, checkpoint_every=2), progress=False)
    old = run / "checkpoints" / "step-000002.safetensors"
    garbage = _damage(old)
    # Resumes from step 4; rotation at steps 6 and 8 removes only what it could read or wrote.
    result = discover(tiny_model, pixels, run, small(steps=8, checkpoint_every=2), resume=True, progress=False)
    assert result.steps == 8
    assert old.read_bytes() == garbage
    assert [step for step, _ in list_checkpoints(run)] == [2, 6, 8]
    assert "step-000002.safetensors" in caplog.text

    # A damaged NEWER checkpoint: resume falls back to the older one and keeps the damaged file aside.
    run2 = tmp_path / "run2"
    discover(tiny_model, pixels, run2, small(steps=4, checkpoint_every=2), progress=False)
    newer = run2 / "checkpoints" / "step-000004.safetensors"
    garbage = _damage(newer)
    result = discover(tiny_model, pixels, run2, small(steps=6, checkpoint_every=2), resume=True, progress=False)
    assert result.steps == 6
    kept = [p for p in (run2 / "checkpoints").iterdir() if p.read_bytes() == garbage]
    assert len(kept) == 1 and kept[0].name.startswith("step-000004.safetensors")
    straight = discover(tiny_model, pixels, tmp_path / "straight", small(steps=6, checkpoint_every=2), progress=False)
    assert torch.equal(result.directions.vectors, straight.directions.vectors)


def test_resume_refuses_other_images_of_the_same_count(tiny_model, tmp_path, caplog):
    run = tmp_path / "run"
    pixels = make_pixels(8, seed=0)
    discover(tiny_model, pixels, run, small(steps=2), progress=False)
    recorded = json.loads((run / "settings.json").read_text())["images"]
    assert len(recorded["sha256"]) == 64 and recorded["count"] == 8
    with pytest.raises(NoiseCLRError, match=r"--images.*not the images the run .* was trained on") as caught:
        discover(tiny_model, make_pixels(8, seed=1), run, small(steps=4), resume=True, progress=False)
    assert "\n" not in str(caught.value)
    assert [step for step, _ in list_checkpoints(run)] == [2]
    # The same images in another order are the same set: resumed, with a warning that the
    # trajectory (which image each draw picks) differs from an uninterrupted run.
    result = discover(tiny_model, pixels.flip(0), run, small(steps=4), resume=True, progress=False)
    assert result.steps == 4
    assert "image order" in caplog.text
    # Folders are fingerprinted by their pixels as the model sees them, not by file names.
    folder = write_pngs(tmp_path / "imgs", 4)
    discover(tiny_model, folder, tmp_path / "run2", small(steps=1), progress=False)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for path in sorted(folder.iterdir()):
        (renamed / f"x-{path.name}").write_bytes(path.read_bytes())
    assert discover(tiny_model, renamed, tmp_path / "run2", small(steps=2), resume=True, progress=False).steps == 2
    array = (torch.rand(72, 64, 3) * 255).byte().numpy()
    Image.fromarray(array).save(renamed / "x-img0.png")
    with pytest.raises(NoiseCLRError, match=r"--images .*renamed"):
        discover(tiny_model, renamed, tmp_path / "run2", small(steps=3), resume=True, progress=False)


def test_resume_with_fewer_steps_keeps_the_longer_run_and_says_so(tiny_model, tmp_path, caplog):
    pixels = make_pixels(8)
    run = tmp_path / "run"
    longer = discover(tiny_model, pixels, run, small(steps=6), progress=False)
    caplog.clear()
    result = discover(tiny_model, pixels, run, small(steps=3), resume=True, progress=False)
    assert "--steps 3" in caplog.text and "already has 6 steps" in caplog.text
    assert result.steps == 6 and torch.equal(result.directions.vectors, longer.directions.vectors)
    saved = Directions.load(run / "directions.safetensors")
    assert saved.settings["steps"] == 6 and saved.settings["steps_done"] == 6
    assert json.loads((run / "settings.json").read_text())["settings"]["steps"] == 6
    assert json.loads((run / "summary.json").read_text())["steps"] == 6


def test_images_are_checked_before_the_model_is_loaded(tiny_model_dir, tmp_path, monkeypatch):
    from noiseclr.model import DiffusionModel

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --images was checked")

    monkeypatch.setattr(DiffusionModel, "load", no_model)
    run = tmp_path / "run"
    with pytest.raises(NoiseCLRError, match="--images .*no such folder"):
        discover(str(tiny_model_dir), tmp_path / "nowhere", run, small(), progress=False)
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("not an image")
    write_pngs(folder, 2)
    with pytest.raises(
        NoiseCLRError, match=r"--images .*notes: only 2 usable image\(s\) \(skipped 1\), need at least 3"
    ):
        discover(str(tiny_model_dir), folder, run, small(batch_size=3), progress=False)
    assert not run.exists()


def test_reseeding_duplicates_restarts_the_later_direction_and_resumes_exactly(tiny_model, tmp_path, monkeypatch):
    from noiseclr import discovery

    monkeypatch.setattr(discovery, "RESEED_EVERY", 2)
    pixels = make_pixels(8)
    plain = discover(tiny_model, pixels, tmp_path / "plain", small(steps=6), progress=False)
    # A threshold this low calls every pair a duplicate: directions 1..4 restart at steps 2 and 4.
    settings = dict(steps=6, reseed_duplicates=1e-9)
    straight = discover(tiny_model, pixels, tmp_path / "straight", small(**settings), progress=False)
    assert [row.get("reseeded") for row in straight.loss_log] == [None, 4, None, 4, None, None]
    logged = list(csv.DictReader((tmp_path / "straight" / "loss.csv").read_text().splitlines()))
    assert [row["reseeded"] for row in logged] == ["", "4", "", "4", "", ""]  # the restarts are in the log too
    assert not torch.allclose(straight.directions.vectors[1:], plain.directions.vectors[1:])
    discover(tiny_model, pixels, tmp_path / "split", small(**{**settings, "steps": 3}), progress=False)
    resumed = discover(tiny_model, pixels, tmp_path / "split", small(**settings), resume=True, progress=False)
    assert torch.equal(resumed.directions.vectors, straight.directions.vectors)
    with pytest.raises(NoiseCLRError, match="--reseed-duplicates 1.5"):
        small(reseed_duplicates=1.5).validate()
