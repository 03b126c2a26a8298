"""Localized edits: regions per term (auto and masks), gated guidance, latent blending, CLI, explore, bench."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noiseclr.cli import main
from noiseclr.directions import Directions
from noiseclr.editing import EditSettings, edit, regenerate, render_edits
from noiseclr.errors import NoiseCLRError
from noiseclr.generation import GenerateSettings, generate, generate_latents
from noiseclr.inversion import ddpm_step, invert
from noiseclr.metrics import PSNR_CAP, masked_psnr, target_comparison, upsample_region
from noiseclr.model import DiffusionModel
from noiseclr.regions import (
    AutoRegion,
    Region,
    auto_masks,
    box_mask,
    gaussian_smooth,
    resize_mask,
    top_cells,
    top_cells_within,
)
from noiseclr.terms import DirectionTerm, PromptTerm, parse_direction_spec


@pytest.fixture(scope="module")
def model64(tiny_model_dir) -> DiffusionModel:
    return DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float64")


def make_directions(model: DiffusionModel, count: int = 3, seed: int = 0, **metadata) -> Directions:
    vectors = torch.randn(count, model.token_width, generator=torch.Generator().manual_seed(seed))
    vectors = vectors / vectors.norm(dim=1, keepdim=True) * model.typical_token_norm()
    return Directions.for_model(model, vectors, **metadata)


def random_latents(model: DiffusionModel, batch: int, seed: int = 0) -> torch.Tensor:
    shape = (batch, model.latent_channels, model.latent_size, model.latent_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def random_pixels(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def quadrant(size: int, which: str) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.float64)
    half = size // 2
    rows = slice(0, half) if which[0] == "t" else slice(half, size)
    columns = slice(0, half) if which[1] == "l" else slice(half, size)
    mask[rows, columns] = 1.0
    return mask


class UNetCalls:
    """Counts UNet forward calls and their batch sizes."""

    def __init__(self, model: DiffusionModel):
        self.rows: list[int] = []
        self._handle = model.unet.register_forward_hook(lambda module, args, output: self.rows.append(args[0].shape[0]))

    def __enter__(self) -> UNetCalls:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


# --------------------------------------------------------------------------- the math
def direct_energy(difference: torch.Tensor, sigma: float) -> torch.Tensor:
    """One step's energy map by its definition, with loops: channel mean of |d|, Gaussian with clamped
    (replicate) indices, divided by its spatial mean."""
    energy = difference.abs().mean(dim=1)
    count, height, width = energy.shape
    radius = max(1, math.ceil(3 * sigma))
    weights = [math.exp(-(d * d) / (2 * sigma * sigma)) for d in range(-radius, radius + 1)]
    total = sum(weights)
    weights = [w / total for w in weights]
    smoothed = torch.zeros_like(energy)
    for b in range(count):
        for y in range(height):
            for x in range(width):
                value = 0.0
                for i, dy in enumerate(range(-radius, radius + 1)):
                    for j, dx in enumerate(range(-radius, radius + 1)):
                        yy, xx = min(max(y + dy, 0), height - 1), min(max(x + dx, 0), width - 1)
                        value += weights[i] * weights[j] * float(energy[b, yy, xx])
                smoothed[b, y, x] = value
        smoothed[b] /= smoothed[b].mean()
    return smoothed


def direct_top(energy: torch.Tensor, top: float) -> torch.Tensor:
    """The cells at or above the k-th largest value, k = ceil(top * h * w)."""
    keep = math.ceil(top * energy.shape[1] * energy.shape[2])
    masks = torch.zeros_like(energy)
    for b in range(energy.shape[0]):
        threshold = sorted(energy[b].flatten().tolist(), reverse=True)[keep - 1]
        masks[b] = (energy[b] >= threshold).to(energy.dtype)
    return masks


def test_gaussian_smoothing_and_auto_masks_match_their_definition():
    generator = torch.Generator().manual_seed(0)
    difference = torch.randn(3, 4, 6, 6, generator=generator, dtype=torch.float64)
    for top, sigma in ((0.25, 1.0), (0.5, 0.6), (1.0, 2.0), (0.1, 0.0)):
        masks = auto_masks(difference, AutoRegion(top, sigma).validate())
        if sigma > 0:
            assert torch.equal(masks, direct_top(direct_energy(difference, sigma), top)), (top, sigma)
        assert masks.shape == (3, 6, 6) and set(masks.unique().tolist()) <= {0.0, 1.0}
        assert (masks.flatten(1).sum(dim=1) == math.ceil(top * 36)).all()  # no ties in random maps
    # Smoothing keeps a constant map constant (normalised kernel, replicate padding).
    flat = torch.full((1, 5, 5), 2.5, dtype=torch.float64)
    assert torch.allclose(gaussian_smooth(flat, 1.5), flat, atol=1e-14, rtol=0)


def test_auto_region_settings_are_checked():
    for kwargs, flag in (
        ({"top": 0.0}, "--region-top"),
        ({"top": 1.5}, "--region-top"),
        ({"smoothing": -1.0}, "--region-smoothing"),
        ({"smoothing": float("nan")}, "--region-smoothing"),
        ({"box_top": 0.0}, "--region-box-top"),
        ({"box_top": "half"}, "--region-box-top"),
    ):
        with pytest.raises(NoiseCLRError, match=flag) as caught:
            AutoRegion(**kwargs).validate()
        assert "\n" not in str(caught.value)
    with pytest.raises(NoiseCLRError, match="--region-top"):
        EditSettings(auto_region=AutoRegion(top=2.0))


def test_masks_are_cropped_and_area_resampled_like_images():
    mask = torch.zeros(40, 80, dtype=torch.float64)
    mask[:, 20:40] = 1.0  # the left half of the centre square [20:60]
    small = resize_mask(mask, 4)
    assert torch.equal(small, torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4, dtype=torch.float64))
    assert resize_mask(torch.ones(2, 2), 8).equal(torch.ones(8, 8, dtype=torch.float64))


# --------------------------------------------------------------------------- the kernel
@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_a_region_of_zeros_reproduces_the_reconstruction_exactly(tiny_model, method):
    directions = make_directions(tiny_model)
    size = tiny_model.latent_size
    terms = [
        DirectionTerm(directions, 0, 6.0, region=torch.zeros(size, size)),
        DirectionTerm(directions, 1, -4.0, 0.2, 0.9, region=torch.zeros(3, 5)),
    ]
    result = edit(tiny_model, random_pixels(2), terms, EditSettings(steps=5, inversion=method), progress=False)
    assert torch.equal(result.edited_latents, result.reconstruction_latents)
    assert torch.equal(result.edited, result.reconstruction)
    assert result.region is not None and float(result.region.abs().max()) == 0.0
    if method == "ddpm":  # ... which is the input itself
        encoded = tiny_model.encode_images(result.source).to(result.reconstruction_latents)
        assert float((result.reconstruction_latents - encoded).abs().max()) < 1e-5


@pytest.mark.parametrize("window", [(0.0, 1.0), (0.4, 1.0), (0.0, 0.5)])
def test_a_region_of_ones_is_the_global_edit(model64, window):
    directions = make_directions(model64)
    size = model64.latent_size
    inversion = invert(model64, random_latents(model64, 2), "ddpm", 6, progress=False)
    edits = [
        [DirectionTerm(directions, 2, 5.0, *window, region=torch.ones(size, size))],
        [DirectionTerm(directions, 2, 5.0, *window)],
        [
            DirectionTerm(directions, 2, 5.0, *window, region=torch.ones(size, size)),
            DirectionTerm(directions, 0, -3.0, 0.0, 0.5, region=torch.ones(7, 7)),
        ],
        [DirectionTerm(directions, 2, 5.0, *window), DirectionTerm(directions, 0, -3.0, 0.0, 0.5)],
    ]
    latents, regions = regenerate(model64, inversion, edits, progress=False, return_regions=True)
    assert torch.allclose(latents[0], latents[1], atol=1e-12, rtol=0)
    assert torch.allclose(latents[2], latents[3], atol=1e-12, rtol=0)
    assert not torch.allclose(latents[0], latents[2])
    assert torch.equal(regions[0], torch.ones_like(regions[0]))


def reference_localized(model, inversion, terms, settings: AutoRegion):
    """The localized edit by its definition, in float64 with one UNet call per conditioning: auto
    masks from the running mean of each term's own energy maps, gated guidance, DDPM steps of the
    edit and of the reconstruction, and the edit blended onto the reconstruction outside the union
    of the held masks."""
    schedule = inversion.schedule
    batch = inversion.batch
    null = model.null_conditioning().expand(batch, -1, -1)
    conditionings = [
        model.encode_directions(t.directions.vectors[t.index : t.index + 1]).expand(batch, -1, -1) for t in terms
    ]
    edited, plain = inversion.start_latents.clone(), inversion.start_latents.clone()
    held = [torch.zeros(batch, model.latent_size, model.latent_size, dtype=torch.float64) for _ in terms]
    energy = [torch.zeros_like(h) for h in held]
    acted = [0 for _ in terms]
    unions = []
    for step in range(schedule.steps):
        t = int(schedule.timesteps[step])
        eps_null = model.predict_eps(edited, t, null).double()
        guided = eps_null.clone()
        for i, term in enumerate(terms):
            if bool(term.active_steps(schedule.steps)[step]):
                difference = model.predict_eps(edited, t, conditionings[i]).double() - eps_null
                energy[i] = energy[i] + direct_energy(difference, settings.smoothing)
                acted[i] += 1
                held[i] = direct_top(energy[i] / acted[i], settings.top)
                guided = guided + term.scale * held[i].unsqueeze(1) * difference
        levels = schedule.levels(step)
        noise = inversion.noise_maps[step]
        stepped = ddpm_step(edited, guided, *levels, noise, eta=1.0)
        plain = ddpm_step(plain, model.predict_eps(plain, t, null).double(), *levels, noise, eta=1.0)
        union = torch.stack(held).amax(dim=0)
        edited = plain + union.unsqueeze(1) * (stepped - plain)
        unions.append(union)
    return edited, plain, unions


def test_auto_regions_match_a_direct_float64_computation(model64, tmp_path):
    # Two terms from two files (a face and a cat direction on a scene), each with its own auto region.
    faces = make_directions(model64, 3, seed=1, domain="faces").save(tmp_path / "faces.safetensors")
    cats = make_directions(model64, 2, seed=2, domain="cats").save(tmp_path / "cats.safetensors")
    loaded: dict = {}
    face = parse_direction_spec(f"{faces}:2=6#auto", loaded)
    cat = parse_direction_spec(f"{cats}:0=-5@0.25:0.75#auto", loaded)
    settings = AutoRegion(top=0.3, smoothing=0.8)
    inversion = invert(model64, random_latents(model64, 2, seed=3), "ddpm", 8, progress=False)
    latents, regions = regenerate(
        model64, inversion, [[face, cat], []], progress=False, auto_region=settings, return_regions=True
    )
    expected, plain, reference_unions = reference_localized(model64, inversion, [face, cat], settings)
    assert torch.allclose(latents[1], plain, atol=1e-10, rtol=0)
    assert torch.allclose(latents[0], expected, atol=1e-9, rtol=0)
    assert torch.equal(regions[0], reference_unions[-1])
    # Outside the final union the edit IS the reconstruction, bit for bit; inside it moved.
    outside = (regions[0] == 0).unsqueeze(1).expand_as(latents[0])
    assert torch.equal(latents[0][outside], latents[1][outside])
    assert bool((latents[0] != latents[1])[~outside].all())
    assert 0.3 <= float(regions[0].mean()) < 0.7  # the union of two 30% regions


def conditioning_stub(model: DiffusionModel):
    """eps(x, t, c): a function of t and c only, so each step's combined eps can be read back exactly."""
    pattern = torch.randn(
        model.latent_channels, model.latent_size, model.latent_size, generator=torch.Generator().manual_seed(5)
    )

    def predict_eps(latents, timesteps, conditioning):
        t = torch.as_tensor(timesteps).to(latents.dtype).reshape(-1, 1, 1, 1).expand(latents.shape[0], 1, 1, 1)
        c = conditioning.to(latents.dtype)
        return torch.cos(pattern.to(latents) + t / 300) * c.mean(dim=(1, 2)).view(-1, 1, 1, 1) + c.std(dim=(1, 2)).view(
            -1, 1, 1, 1
        )

    return predict_eps


def eps_used(before: torch.Tensor, after: torch.Tensor, level_from: float, level_to: float) -> torch.Tensor:
    ratio = math.sqrt(level_to / level_from)
    return (after - ratio * before) / (math.sqrt(1 - level_to) - ratio * math.sqrt(1 - level_from))


def test_each_term_is_gated_by_its_own_region(model64, monkeypatch):
    stub = conditioning_stub(model64)
    monkeypatch.setattr(model64, "predict_eps", stub)
    directions = make_directions(model64, 2)
    size, steps = model64.latent_size, 6
    top_left, bottom_right = quadrant(size, "tl"), quadrant(size, "br")
    inversion = invert(model64, random_latents(model64, 1), "ddim", steps, progress=False)
    edits = [
        [DirectionTerm(directions, 0, 2.0, region=top_left), DirectionTerm(directions, 1, -1.5, region=bottom_right)]
    ]
    states = [inversion.start_latents.repeat(2, 1, 1, 1)]  # the edit and the added reconstruction
    with UNetCalls(model64):
        latents, regions = regenerate(
            model64,
            inversion,
            edits,
            progress=False,
            return_regions=True,
            callback=lambda step, z: states.append(z.clone()),
        )
    assert latents.shape[0] == 1  # the reconstruction was added to the batch, and dropped from the output
    assert torch.equal(regions[0, 0], top_left + bottom_right)
    conditionings = torch.cat([model64.null_conditioning(), model64.encode_directions(directions.vectors)])
    for step in range(steps):
        t = int(inversion.schedule.timesteps[step])
        e_null, e_0, e_1 = stub(states[step][:1].repeat(3, 1, 1, 1), t, conditionings)
        used = eps_used(states[step][0], states[step + 1][0], *inversion.schedule.levels(step))
        inside_a, inside_b = top_left.bool(), bottom_right.bool()
        assert torch.allclose(used[:, inside_a], (e_null + 2.0 * (e_0 - e_null))[:, inside_a], atol=1e-8, rtol=0)
        assert torch.allclose(used[:, inside_b], (e_null - 1.5 * (e_1 - e_null))[:, inside_b], atol=1e-8, rtol=0)
        outside = ~(inside_a | inside_b)
        assert torch.equal(states[step + 1][0][:, outside], states[step + 1][1][:, outside])


def test_a_global_term_makes_the_edit_global(model64):
    directions = make_directions(model64)
    inversion = invert(model64, random_latents(model64, 2), "ddpm", 5, progress=False)
    size = model64.latent_size
    latents, regions = regenerate(
        model64,
        inversion,
        [
            [DirectionTerm(directions, 0, 3.0), DirectionTerm(directions, 1, 4.0, region=torch.zeros(size, size))],
            [DirectionTerm(directions, 0, 3.0)],
        ],
        progress=False,
        return_regions=True,
    )
    # The region term (all zeros) contributes nothing and the edit is not blended.
    assert torch.allclose(latents[0], latents[1], atol=1e-12, rtol=0)
    assert torch.equal(regions[0], torch.ones_like(regions[0]))


def test_one_unet_call_per_step_with_regions(tiny_model, tmp_path):
    directions = make_directions(tiny_model)
    steps, images = 6, 2
    inversion = invert(tiny_model, random_latents(tiny_model, images).float(), "ddpm", steps, progress=False)
    size = tiny_model.latent_size
    edits = [
        [DirectionTerm(directions, 0, 2.0, region="auto")],
        [
            DirectionTerm(directions, 1, 1.0, 0.5, 1.0, region=quadrant(size, "tr")),
            DirectionTerm(directions, 2, -2.0, region="auto"),
        ],
        [DirectionTerm(directions, 0, 2.0)],
    ]
    with UNetCalls(tiny_model) as calls:
        latents = regenerate(tiny_model, inversion, edits, progress=False)
    assert latents.shape == (3, images, 4, 8, 8)
    # One call per step: null rows for the 3 edits and the added reconstruction, plus the active pairs.
    assert calls.rows == [4 * images + images * (1 + 1 + (step >= 3) + 1) for step in range(steps)]
    # With the reconstruction among the edits nothing is added.
    with UNetCalls(tiny_model) as calls:
        regenerate(tiny_model, inversion, [edits[0], []], progress=False)
    assert calls.rows == [2 * images + images] * steps


def test_generation_with_regions(tiny_model):
    directions = make_directions(tiny_model)
    size = tiny_model.latent_size
    with UNetCalls(tiny_model) as calls:
        latents, regions = generate_latents(
            tiny_model,
            ["a cat", "a dog"],
            [
                [DirectionTerm(directions, 0, 4.0, region=torch.zeros(size, size))],
                [DirectionTerm(directions, 1, 4.0, region="auto")],
            ],
            steps=4,
            seed=3,
            progress=False,
            return_regions=True,
        )
    assert len(calls.rows) == 4 and latents.shape[0] == 2
    plain = generate_latents(tiny_model, ["a cat", "a dog"], [[]], steps=4, seed=3, progress=False)[0]
    # float32 rows in another batch round differently (see test_editing); the zero region is the plain sample.
    assert torch.allclose(latents[0], plain, atol=1e-4, rtol=0)
    outside = (regions[1] == 0).unsqueeze(1).expand_as(plain)
    assert torch.allclose(latents[1][outside], plain[outside], atol=1e-4) and not torch.allclose(
        latents[1], plain, atol=1e-2
    )
    result = generate(
        tiny_model,
        ["a cat"],
        [DirectionTerm(directions, 1, 4.0, region="auto")],
        GenerateSettings(steps=3),
        compare=True,
        progress=False,
    )
    assert result.region is not None and result.region.shape == (1, size, size)
    assert result.grid().width > 3 * 64


def test_a_direction_repeated_with_different_regions_is_refused(tiny_model):
    directions = make_directions(tiny_model)
    inversion = invert(tiny_model, random_latents(tiny_model, 1).float(), "ddim", 2, progress=False)
    same = [
        DirectionTerm(directions, 0, 1.0, 0.0, 0.5, region="auto"),
        DirectionTerm(directions, 0, 2.0, 0.5, 1.0, region="auto"),
    ]
    regenerate(tiny_model, inversion, [same], progress=False)  # the same region: weights add up
    with pytest.raises(NoiseCLRError, match="the same direction twice in one edit with different regions"):
        regenerate(tiny_model, inversion, [[same[0], DirectionTerm(directions, 0, 2.0)]], progress=False)


def test_prompt_terms_take_regions(tiny_model):
    inversion = invert(tiny_model, random_latents(tiny_model, 1).float(), "ddpm", 3, progress=False)
    term = PromptTerm("a cartoon cat", 3.0, region=torch.zeros(4, 4))
    latents = regenerate(tiny_model, inversion, [[term], []], progress=False)
    assert torch.equal(latents[0], latents[1]) and "#tensor" in term.describe()


# --------------------------------------------------------------------------- specs and mask files
@pytest.fixture()
def faces_file(tiny_model, tmp_path) -> Path:
    return make_directions(tiny_model, names=["smile", "age", "glasses"]).save(tmp_path / "faces#v1.safetensors")


def write_mask(path: Path, size=(64, 64), box=(0, 0, 32, 32)) -> Path:
    image = Image.new("L", size, 0)
    image.paste(255, box)
    image.save(path)
    return path


def test_specs_with_regions(faces_file, tmp_path):
    mask = write_mask(tmp_path / "mask#1.png")
    loaded: dict = {}
    term = parse_direction_spec(f"{faces_file}:1=4@0:0.6#auto", loaded)
    assert (term.index, term.scale, term.end) == (1, 4.0, 0.6) and term.region.kind == "auto"
    assert term.describe().endswith("@0-0.6 #auto")
    term = parse_direction_spec(f"{faces_file}:2=-3#{mask}", loaded)
    assert term.region.kind == "mask" and term.region.size == (64, 64) and term.region.source == "mask#1.png"
    assert torch.equal(term.region.latent_mask(2), torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    assert parse_direction_spec(f"{faces_file}:0=1#none", loaded).region is None
    assert parse_direction_spec(f"{faces_file}:0=1", loaded).region is None  # '#' in FILE alone is not a region


@pytest.mark.parametrize(
    "region, problem",
    [
        ("", "no region after '#'"),
        ("missing.png", "mask missing.png: no such file"),
        ("notes.txt", "cannot read it as an image"),
    ],
)
def test_bad_mask_files_are_one_line_errors(faces_file, tmp_path, monkeypatch, region, problem):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    spec = f"{faces_file}:1=2#{region}"
    with pytest.raises(NoiseCLRError) as caught:
        parse_direction_spec(spec)
    message = str(caught.value)
    assert message.startswith(f"--direction {spec}:") and "\n" not in message and problem in message


def test_bad_region_values_are_one_line_errors(tiny_model):
    directions = make_directions(tiny_model)
    for region, problem in (
        (torch.full((4, 4), 2.0), "in [0, 1]"),
        (torch.zeros(2, 2, 2, 2), "shape"),
        (3, "use None, 'auto'"),
    ):
        with pytest.raises(NoiseCLRError, match=re.escape(problem)) as caught:
            DirectionTerm(directions, 0, 1.0, region=region)
        assert "\n" not in str(caught.value)
    per_image = DirectionTerm(directions, 0, 1.0, region=torch.zeros(2, 4, 4))
    inversion = invert(tiny_model, random_latents(tiny_model, 3).float(), "ddim", 2, progress=False)
    with pytest.raises(NoiseCLRError, match="2 masks for the images"):
        regenerate(tiny_model, inversion, [[per_image]], progress=False)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(2):
        base = rng.random((8, 8, 3))
        Image.fromarray((base * 255).astype(np.uint8)).resize((64, 64), Image.Resampling.BICUBIC).save(
            folder / f"img{index}.png"
        )
    return folder


def test_edit_cli_with_a_mask_and_auto(capsys, tiny_model_dir, image_dir, tmp_path):
    directions = make_directions(DiffusionModel.load(tiny_model_dir, device="cpu")).save(tmp_path / "d.safetensors")
    big = write_mask(tmp_path / "big.png", size=(256, 256), box=(0, 0, 128, 256))  # any size with the image's aspect
    code, out, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--image",
        image_dir / "img0.png",
        "--direction",
        f"{directions}:0=4#{big}",
        "--direction",
        f"{directions}:1=-3@0:0.5#auto",
        "--region-top",
        "0.2",
        "--out",
        tmp_path / "edits",
        "--steps",
        "3",
        "--inversion",
        "ddpm",
    )
    assert code == 0, err
    for name in ("img0-edited.png", "img0-reconstruction.png", "img0-region.png", "comparison.png"):
        assert (tmp_path / "edits" / name).is_file(), name
    assert "term 1 (#big.png): 50%" in out and "term 2 (#auto): " in out and "all terms together: " in out
    # A mask of another aspect ratio would not line up after the centre crop: refused before the model loads.
    wide = write_mask(tmp_path / "wide.png", size=(128, 64))
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--image",
        image_dir / "img0.png",
        "--direction",
        f"{directions}:0=4#{wide}",
        "--out",
        tmp_path / "e2",
        "--steps",
        "2",
    )
    lines = [line for line in err.splitlines() if line.startswith("noiseclr: error:")]
    assert code == 2 and len(lines) == 1 and "wide.png is 128x64 but image img0.png is 64x64" in lines[0]
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--image",
        image_dir / "img0.png",
        "--direction",
        f"{directions}:0=4#auto",
        "--region-top",
        "0",
        "--out",
        tmp_path / "e3",
    )
    assert code == 2 and "--region-top 0" in err


def test_explore_with_auto_regions(capsys, tiny_model_dir, image_dir, tmp_path):
    directions = make_directions(DiffusionModel.load(tiny_model_dir, device="cpu"), 2).save(tmp_path / "d.safetensors")
    code, _, err = run_cli(
        capsys,
        "explore",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--directions",
        directions,
        "--images",
        image_dir,
        "--out",
        tmp_path / "g",
        "--scales",
        "-2",
        "0",
        "2",
        "--num-images",
        "2",
        "--steps",
        "3",
        "--region",
        "auto",
    )
    assert code == 0, err
    strip = Image.open(tmp_path / "g" / "direction-000.png")
    assert strip.width > 6 * 64  # input, 3 scales, global, region
    page = (tmp_path / "g" / "index.html").read_text()
    assert "localized (auto regions)" in page and "#auto" in page


# --------------------------------------------------------------------------- bench
def test_masked_psnr_and_target_comparison_by_hand():
    reference = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    edited = reference.clone()
    edited[0, :, :2, :2] = 0.2  # inside a top-left region only
    edited[1] += 0.02  # everywhere
    region = torch.zeros(2, 2, 2, dtype=torch.bool)
    region[:, 0, 0] = True
    outside = ~upsample_region(region, 4)
    assert outside[0, :2, :2].sum() == 0 and outside[0].sum() == 12
    psnr = masked_psnr(edited, reference, outside)
    assert psnr[0] == PSNR_CAP and psnr[1] == pytest.approx(10 * math.log10(4 / 0.02**2))
    whole = masked_psnr(edited, reference)
    assert whole[0] == pytest.approx(10 * math.log10(4 / (0.2**2 / 4)))
    assert math.isnan(float(masked_psnr(edited, reference, torch.zeros(2, 4, 4, dtype=torch.bool))[0]))
    compared = target_comparison(torch.tensor([[0.8, 0.2, 0.0]]), torch.tensor([[0.7, 0.0, 0.1]]))
    assert compared["target"].tolist() == [0]
    assert compared["main_change_local"].tolist() == pytest.approx([0.7])
    assert compared["preservation_global"].tolist() == pytest.approx([0.9])
    assert compared["preservation_local"].tolist() == pytest.approx([0.95])


class BandReader:
    """TEST DOUBLE of the factor reader (as in test_bench): factor j is the quantised mean of one
    colour channel over the j-th horizontal band of the image."""

    def __init__(self, domain: str):
        from noiseclr.world.factors import domain_factors

        self.domain = domain
        self.factors = domain_factors(domain)

    def predict_indices(self, images: torch.Tensor) -> torch.Tensor:
        count = len(self.factors)
        columns = []
        for j, factor in enumerate(self.factors):
            band = images[:, j % 3, (j * 128) // count : ((j + 1) * 128) // count].float().mean(dim=(1, 2))
            columns.append(((band + 1) * 0.5 * len(factor.values) * 7).floor().long() % len(factor.values))
        return torch.stack(columns, dim=1)


def test_bench_measures_global_and_localized_side_by_side(tiny_model, tmp_path):
    from noiseclr.bench import BenchSettings, run_bench
    from noiseclr.measure import DirectionRecord, annotate_directions

    # The default kind of grid (calibrated strengths), as the measurement runs it.
    settings = BenchSettings(
        methods=("random", "prompt"),
        num_directions=2,
        heldout=4,
        validation=3,
        steps=3,
        strengths=(20.0,),
        windows=((0.0, 1.0),),
        strip_images=2,
        cross_images=3,
        cross_per_domain=1,
        region="auto",
        early_stop=False,
        auto_region=AutoRegion(top=0.3),
    )
    result = run_bench(
        tiny_model, "cats", tmp_path / "cats", settings, readers={"cats": BandReader("cats")}, progress=False
    )
    results = json.loads((tmp_path / "cats" / "results.json").read_text())
    for name in ("random", "prompt"):
        local = results["methods"][name]["localized"]
        assert local["region"] == "auto" and local["auto_region"] == {"top": 0.3, "smoothing": 1.0, "box_top": 0.4}
        assert len(local["directions"]) == results["methods"][name]["summary"]["count"]
        for row in local["directions"]:
            assert 0.29 <= row["region_fraction"] <= 1.0 and row["images"] == 4
            assert all(
                row[key] is not None
                for key in ("psnr_global", "psnr_local", "psnr_outside_global", "psnr_outside_local")
            )
        assert {"target_change_global", "target_change_local", "preservation_global", "preservation_local"} <= set(
            local["comparison"]
        )
        strip = results["methods"][name]["directions"][0]["strip"]
        assert Image.open(tmp_path / "cats" / strip).height > 6 * 64  # input, recon, -, +, local -, local +, region
    assert "global -> localized" in result.table
    assert "Global vs localized" in (tmp_path / "cats" / "report.html").read_text()

    # Cross-domain on scenes: every edit also localized, each direction with its own region.
    files = []
    for domain, factors in (("faces", ["glasses", "skin"]), ("cats", ["stripes", "fur_color"])):
        directions = make_directions(tiny_model, 2, seed=len(files), domain=domain)
        records = [
            DirectionRecord(index=k, name=f, main_factor=f, main_change=0.6, purity=0.7, scale=4.0, start=0.0, end=1.0)
            for k, f in enumerate(factors)
        ]
        files.append(
            annotate_directions(tiny_model, directions, records, domain=domain, source="test").save(
                tmp_path / f"{domain}.safetensors"
            )
        )
    scenes = run_bench(
        tiny_model,
        "scenes",
        tmp_path / "scenes",
        settings,
        cross_domain=(files[0], files[1]),
        readers={"scenes": BandReader("scenes")},
        progress=False,
    )
    cross = scenes.results["cross_domain"]
    local = cross["localized"]
    assert local["summary"]["pairs"] == cross["summary"]["pairs"] == 1
    assert 0.0 <= local["summary"]["interference"] <= 1.0 and local["summary"]["region_fraction"] >= 0.3
    assert len(local["alone"]) == len(cross["alone"]) == 2 and "psnr_outside_local" in local["pairs"][0]
    assert (
        "localized:" in scenes.table and "Localized (auto regions" in (tmp_path / "scenes" / "report.html").read_text()
    )


def test_bench_default_stays_global(tiny_model):
    from noiseclr.bench import BenchSettings

    settings = BenchSettings()
    assert settings.region == "none" and not settings.localized
    with pytest.raises(NoiseCLRError, match="--region everywhere"):
        BenchSettings(region="everywhere").validate()
    assert Region.auto().label() == "auto"


def test_report_renders_a_strength_grid():
    # The default grid is --strengths (settings["scales"] is None); the report used to fail on it.
    from noiseclr.bench.report import render_report

    page = render_report(
        {"settings": {"scales": None, "strengths": [2.0, 4.0], "windows": [[0.0, 1.0]]}, "methods": {}}
    )
    assert "strengths &plusmn;2%, &plusmn;4%" in page
    assert "scales &plusmn;3" in render_report({"settings": {"scales": [3.0], "windows": [[0.0, 1.0]]}, "methods": {}})


# -------------------------------------------------------------------------------- boxes
@pytest.mark.parametrize(
    "frame, box",
    [
        ((80, 40), (25, 5, 45, 30)),
        ((40, 80), (3, 21, 40, 59)),
        ((64, 64), (0, 0, 64, 64)),
        ((64, 64), (10.5, 3.25, 33, 61)),
    ],
)
def test_box_masks_are_the_area_share_of_a_drawn_box(frame, box):
    # Reference: draw the box on a supersampled pixel grid and crop/area-resample it like a mask file.
    width, height = frame
    scale = 4
    drawn = torch.zeros(height * scale, width * scale, dtype=torch.float64)
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    drawn[y0:y1, x0:x1] = 1.0
    reference = resize_mask(drawn, 4)
    assert torch.allclose(box_mask(box, frame, 4), reference, atol=1e-12, rtol=0)
    assert torch.allclose(Region.box(box).latent_mask(4, frame=frame), reference, atol=1e-12, rtol=0)


def test_top_cells_within_a_box():
    energy = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(top_cells_within(energy, 0.25, torch.ones_like(energy)), top_cells(energy, 0.25))
    within = torch.zeros_like(energy)
    within[:, 2:6, 1:5] = 1.0
    within[:, 6, 1:5] = 0.5  # a box edge through the middle of a row of cells
    kept = top_cells_within(energy, 0.25, within)
    assert float(kept[within == 0].abs().max()) == 0.0
    assert [int((row > 0).sum()) for row in kept] == [math.ceil(0.25 * 20)] * 3
    assert set(kept.unique().tolist()) <= {0.0, 0.5, 1.0}


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_a_whole_image_box_is_the_global_edit_and_auto_in_it_is_auto(model64, method):
    directions = make_directions(model64)
    inversion = invert(model64, random_latents(model64, 2), method, 5, progress=False)
    whole = (0, 0, model64.resolution, model64.resolution)
    edits = [
        [DirectionTerm(directions, 1, 5.0)],
        [DirectionTerm(directions, 1, 5.0, region=Region.box(whole))],
        [DirectionTerm(directions, 1, 5.0, region="auto")],
        [DirectionTerm(directions, 1, 5.0, region=Region.box(whole, auto=True))],
    ]
    # the box keeps box_top of its cells: with box_top = top a whole-image box is no box at all
    same = AutoRegion(top=0.3, box_top=0.3)
    latents = regenerate(model64, inversion, edits, progress=False, auto_region=same)
    assert torch.allclose(latents[0], latents[1], atol=1e-12, rtol=0)
    assert torch.allclose(latents[2], latents[3], atol=1e-12, rtol=0)  # float64 round-off only
    # With the defaults (top 0.25, box_top 0.4) in one batch each row keeps its own fraction.
    _, _, own = regenerate(model64, inversion, edits[2:], progress=False, return_regions=True, return_term_regions=True)
    cells = model64.latent_size**2
    assert [int((own[e][0][0] > 0).sum()) for e in (0, 1)] == [math.ceil(0.25 * cells), math.ceil(0.4 * cells)]


def test_an_auto_region_in_a_box_stays_in_it(model64):
    directions = make_directions(model64)
    size, resolution = model64.latent_size, model64.resolution
    inversion = invert(model64, random_latents(model64, 2), "ddpm", 5, progress=False)
    left = Region.box((0, 0, resolution // 2, resolution), auto=True)
    edits = [
        [DirectionTerm(directions, 0, 6.0, region=left), DirectionTerm(directions, 2, -4.0, region="box=0,0,16,16")],
        [],
    ]
    latents, union, own = regenerate(
        model64,
        inversion,
        edits,
        progress=False,
        return_regions=True,
        return_term_regions=True,
        auto_region=AutoRegion(top=0.5, box_top=0.25),
    )
    outside = torch.ones(size, size, dtype=torch.bool)
    outside[:, : size // 2] = False
    outside[: size * 16 // resolution, : size * 16 // resolution] = False
    # Outside both boxes the edit IS the reconstruction (DDPM: the inversion of the input).
    assert torch.equal(latents[0][..., outside], latents[1][..., outside])
    assert float(own[0][0][:, :, size // 2 :].abs().max()) == 0.0
    # box_top, not top, is the fraction of the box kept
    assert [int((own[0][0][b] > 0).sum()) for b in range(2)] == [math.ceil(0.25 * size * size / 2)] * 2
    corner = (16 / resolution) ** 2
    assert torch.allclose(own[0][1].mean(dim=(1, 2)), torch.full((2,), corner, dtype=torch.float64))
    assert torch.equal(union[0], torch.maximum(own[0][0], own[0][1]))


def test_boxes_follow_each_image_file(tiny_model, tmp_path):
    # The box is in pixels of each input file; a 128x64 file is centre-cropped to its middle 64x64.
    from noiseclr.images import load_image_files

    Image.new("RGB", (128, 64), (120, 30, 200)).save(tmp_path / "wide.png")
    images = load_image_files([tmp_path / "wide.png"], tiny_model.resolution)
    assert images.sizes == [(128, 64)]
    directions = make_directions(tiny_model)
    term = DirectionTerm(directions, 0, 4.0, region="box=32,0,64,64")  # the crop's left half
    result = edit(tiny_model, images, [term, DirectionTerm(directions, 1, 2.0)], EditSettings(steps=3), progress=False)
    assert result.coverage()[0] == [pytest.approx(0.5)] and result.coverage()[1] == [1.0]


def test_exif_rotated_files_report_their_shown_size(tmp_path):
    from noiseclr.images import display_size

    image = Image.new("RGB", (60, 20), (10, 200, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 20 wide, 60 high
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert display_size(tmp_path / "rotated.jpg") == (20, 60)


@pytest.mark.parametrize(
    "region, problem",
    [
        ("box=1,2,3", "need 4 numbers"),
        ("box=a,b,c,d", "not numbers"),
        ("box=10,10,5,20", "empty or inverted"),
        ("box=4,4,4,9", "empty or inverted"),
        ("box=-1,0,5,5", "negative"),
        ("box=", "need 4 numbers"),
        ("auto+box=1,2,nan,4", "not finite"),
        ("box=1,,3,4", "need 4 numbers"),
    ],
)
def test_bad_boxes_are_one_line_errors_naming_the_term(faces_file, region, problem):
    spec = f"{faces_file}:1=2#{region}"
    with pytest.raises(NoiseCLRError) as caught:
        parse_direction_spec(spec)
    message = str(caught.value)
    assert message.startswith(f"--direction {spec}:") and "\n" not in message and problem in message


def test_boxes_outside_the_image_are_refused_before_the_model_loads(capsys, tiny_model_dir, image_dir, tmp_path):
    directions = make_directions(DiffusionModel.load(tiny_model_dir, device="cpu")).save(tmp_path / "d.safetensors")
    for region, problem in (
        ("box=10,10,80,40", "reaches outside the 64x64 image"),
        ("auto+box=0,0,10,65", "reaches outside"),
    ):
        spec = f"{directions}:0=4#{region}"
        code, _, err = run_cli(
            capsys,
            "edit",
            "--model",
            tmp_path / "no-model",
            "--device",
            "cpu",
            "--image",
            image_dir / "img0.png",
            "--direction",
            spec,
            "--out",
            tmp_path / "e",
        )
        lines = [line for line in err.splitlines() if line.startswith("noiseclr: error:")]
        assert (
            code == 2 and len(lines) == 1 and f"--direction {spec} on img0.png: box" in lines[0] and problem in lines[0]
        ), err
    # A box in the part of a wide image that the centre crop drops.
    Image.new("RGB", (128, 64)).save(tmp_path / "wide.png")
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tmp_path / "no-model",
        "--device",
        "cpu",
        "--image",
        tmp_path / "wide.png",
        "--direction",
        f"{directions}:0=4#box=0,0,20,20",
        "--out",
        tmp_path / "e",
    )
    assert code == 2 and "outside the centre 64x64 square" in err
    # The Python API names the term too.
    model = DiffusionModel.load(tiny_model_dir, device="cpu")
    term = DirectionTerm(Directions.load(directions), 0, 1.0, region=Region.box((0, 0, 500, 10)))
    inversion = invert(model, random_latents(model, 1).float(), "ddim", 2, progress=False)
    with pytest.raises(NoiseCLRError, match=r"direction 0 .*box 0,0,500,10 reaches outside the 64x64 image"):
        regenerate(model, inversion, [[term]], progress=False)


# ------------------------------------------------------------------ composition (one object, one trajectory)
def test_which_edits_run_apart():
    from noiseclr.composition import separates, split_edits

    directions = Directions(torch.randn(3, 8))
    left, right = Region.box((0, 0, 32, 64)), Region.box((32, 0, 64, 64), auto=True)
    a, b = DirectionTerm(directions, 0, 1.0, region=left), DirectionTerm(directions, 1, 1.0, region=right)
    a_late = DirectionTerm(directions, 2, 1.0, 0.5, 1.0, region=Region.box((0, 0, 32, 64)))
    auto, mask = (
        DirectionTerm(directions, 1, 1.0, region="auto"),
        DirectionTerm(directions, 2, 1.0, region=torch.ones(4, 4)),
    )
    glob = DirectionTerm(directions, 2, 1.0)
    assert separates([a, b], "auto") and not separates([a, b], "joint") and separates([a, b], "separate")
    assert not separates([a], "auto") and not separates([a, a_late], "auto")  # one box: one object
    assert not separates([a, auto], "auto") and separates([a, auto], "separate")  # auto/mask: joint unless asked
    assert not separates([auto, mask], "auto") and separates([auto, mask], "separate")
    assert not separates([a, glob], "separate")  # a global term: nothing to keep apart
    expanded, parts = split_edits([[a, b, a_late], [glob], []], "auto")
    assert expanded == [[a, a_late], [b], [glob], []] and parts == [[0, 1], [2], [3]]
    with pytest.raises(NoiseCLRError, match="--compose"):
        separates([a, b], "apart")


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_box_terms_on_separate_trajectories_match_their_definition(model64, method):
    """Two boxes (left and right halves): the composite is the reconstruction plus each term's own
    localized edit's change, so inside each box it is that term's edit alone; jointly the terms meet."""
    directions = make_directions(model64)
    size, resolution = model64.latent_size, model64.resolution
    inversion = invert(model64, random_latents(model64, 2), method, 5, progress=False)
    left = DirectionTerm(directions, 0, 6.0, region=Region.box((0, 0, resolution // 2, resolution)))
    right = DirectionTerm(
        directions, 2, -5.0, 0.2, 1.0, region=Region.box((resolution // 2, 0, resolution, resolution), auto=True)
    )
    pair, recon = [left, right], []
    together, maps, own = regenerate(
        model64,
        inversion,
        [pair, [left], [right], recon],
        progress=False,
        return_regions=True,
        return_term_regions=True,
    )
    expected = together[3] + (together[1] - together[3]) + (together[2] - together[3])
    assert torch.allclose(together[0], expected, atol=1e-12, rtol=0)
    half = size // 2
    assert torch.allclose(together[0][..., :half], together[1][..., :half], atol=1e-12, rtol=0)
    assert torch.allclose(together[0][..., half:], together[2][..., half:], atol=1e-12, rtol=0)
    assert torch.equal(maps[0], torch.maximum(maps[1], maps[2]))
    assert len(own[0]) == 2 and torch.equal(own[0][0], own[1][0]) and torch.equal(own[0][1], own[2][0])
    joint = regenerate(model64, inversion, [pair], progress=False, compose="joint")[0]
    assert not torch.allclose(joint[..., :half], together[1][..., :half], atol=1e-6)
    # EditSettings carries the choice to edit(); joint there is the single trajectory
    assert EditSettings(compose="joint").compose == "joint"
    with pytest.raises(NoiseCLRError, match="--compose"):
        EditSettings(compose="apart")


def test_box_edits_are_composited_in_pixel_space(model64):
    """Rendered pixels of a box pair are the reconstruction's plus each part's decoded change, each
    part decoded alone (the decoder then cannot carry one box's latent change into the other):
    through render_edits, edit() and generate()."""
    directions = make_directions(model64)
    res = model64.resolution
    left = DirectionTerm(directions, 0, 6.0, region=Region.box((0, 0, res // 2, res)))
    right = DirectionTerm(directions, 2, -5.0, region=Region.box((res // 2, 0, res, res)))
    pixels = random_pixels(2, seed=3).double()
    result = edit(model64, pixels, [left, right], EditSettings(steps=4), progress=False)
    parts = render_edits(model64, result.inversion, [[left], [right], []], progress=False)
    expected = (parts[2] + (parts[0] - parts[2]) + (parts[1] - parts[2])).clamp(-1, 1)
    assert torch.allclose(result.edited, expected, atol=1e-6, rtol=0)
    assert torch.allclose(result.reconstruction, parts[2], atol=1e-6, rtol=0)
    rendered = render_edits(model64, result.inversion, [[left, right]], progress=False)[0]
    assert torch.allclose(rendered, expected, atol=1e-6, rtol=0)
    # the latents stay the latent composite (decoding it is what the pixel sum replaces)
    latents = regenerate(model64, result.inversion, [[left, right]], progress=False)[0]
    assert torch.allclose(result.edited_latents, latents, atol=1e-12, rtol=0)
    plain = GenerateSettings(steps=3, seed=1)
    made = generate(model64, ["a cat"], [left, right], plain, compare=True, progress=False)
    alone = [generate(model64, ["a cat"], terms, plain, progress=False).images for terms in ([left], [right])]
    summed = (made.plain + (alone[0] - made.plain) + (alone[1] - made.plain)).clamp(-1, 1)
    assert torch.allclose(made.images, summed, atol=1e-6, rtol=0)


def test_separate_trajectories_still_take_one_unet_call_per_step(tiny_model):
    directions = make_directions(tiny_model)
    steps, images = 4, 2
    inversion = invert(tiny_model, random_latents(tiny_model, images).float(), "ddpm", steps, progress=False)
    res = tiny_model.resolution
    pair = [
        DirectionTerm(directions, 0, 2.0, region=f"box=0,0,{res // 2},{res}"),
        DirectionTerm(directions, 1, 2.0, region=f"box={res // 2},0,{res},{res}"),
    ]
    with UNetCalls(tiny_model) as calls:
        regenerate(tiny_model, inversion, [pair], progress=False)
    # two single-term trajectories and the reconstruction: their null rows and one pair each
    assert calls.rows == [3 * images + 2 * images] * steps


def test_generation_composes_box_terms_apart(tiny_model):
    directions = make_directions(tiny_model)
    res = tiny_model.resolution
    left = DirectionTerm(directions, 0, 4.0, region=f"box=0,0,{res // 2},{res}")
    right = DirectionTerm(directions, 1, -4.0, region=f"box={res // 2},0,{res},{res}")
    runs = generate_latents(
        tiny_model, ["a cat"], [[left, right], [left], [right], []], steps=3, seed=1, progress=False
    )
    assert torch.allclose(runs[0], runs[1] + runs[2] - runs[3], atol=1e-5, rtol=0)
    joint = generate_latents(tiny_model, ["a cat"], [[left, right]], steps=3, seed=1, progress=False, compose="joint")
    assert not torch.allclose(joint[0], runs[0], atol=1e-4)
