"""Editing with directions: specs, the batched denoising kernel, edit() and generate()."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from noiseclr.directions import Directions
from noiseclr.editing import EditSettings, combine_eps, denoise, edit, regenerate, render_edits
from noiseclr.errors import NoiseCLRError
from noiseclr.generation import GenerateSettings, generate, generate_latents
from noiseclr.images import ImageSet
from noiseclr.inversion import invert, make_schedule
from noiseclr.model import DiffusionModel
from noiseclr.terms import SPEC_FORM, DirectionTerm, parse_direction_spec, window_mask


@pytest.fixture(scope="module")
def model64(tiny_model_dir) -> DiffusionModel:
    return DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float64")


def make_directions(model: DiffusionModel, count: int = 3, seed: int = 0, **metadata) -> Directions:
    vectors = torch.randn(count, model.token_width, generator=torch.Generator().manual_seed(seed))
    vectors = vectors / vectors.norm(dim=1, keepdim=True) * model.typical_token_norm()
    return Directions.for_model(model, vectors, **metadata)


def save_directions(model: DiffusionModel, path: Path, **kwargs) -> Path:
    make_directions(model, **kwargs).save(path)
    return path


def random_pixels(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def random_latents(model: DiffusionModel, batch: int, seed: int = 0) -> torch.Tensor:
    shape = (batch, model.latent_channels, model.latent_size, model.latent_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class UNetCalls:
    """Counts UNet forward calls and their batch sizes."""

    def __init__(self, model: DiffusionModel):
        self.rows: list[int] = []
        self._handle = model.unet.register_forward_hook(lambda module, args, output: self.rows.append(args[0].shape[0]))

    def __enter__(self) -> UNetCalls:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


# ------------------------------------------------------------------------------- specs
@pytest.fixture()
def faces_file(tiny_model, tmp_path) -> Path:
    return save_directions(
        tiny_model, tmp_path / "faces.safetensors", count=3, domain="faces", names=["smile", "age", "glasses"]
    )


def test_parse_good_specs(faces_file, tmp_path, tiny_model):
    odd = save_directions(tiny_model, tmp_path / "odd:name@v2.safetensors", count=2, seed=1)
    loaded: dict[str, Directions] = {}
    cases = [
        (f"{faces_file}:1=4.5", 1, 4.5, 0.0, 1.0),
        (f"{faces_file}:0=-3", 0, -3.0, 0.0, 1.0),
        (f"{faces_file}:2=1.5@0:0.6", 2, 1.5, 0.0, 0.6),
        (f"{faces_file}:2=-.5@0.25:1", 2, -0.5, 0.25, 1.0),
        (f"{faces_file}:0=2e-1@0.5:1.0", 0, 0.2, 0.5, 1.0),
        (f"{odd}:1=2@0.5:1", 1, 2.0, 0.5, 1.0),  # ':' and '@' inside the file name
    ]
    for spec, index, scale, start, end in cases:
        term = parse_direction_spec(spec, loaded)
        assert (term.index, term.scale, term.start, term.end) == (index, scale, start, end), spec
    assert set(loaded) == {str(faces_file), str(odd)}  # each file read once
    first, second = (parse_direction_spec(f"{faces_file}:{i}=1", loaded) for i in (0, 1))
    assert first.directions is second.directions


def test_parse_windows_drive_path_from_the_right(tiny_model):
    directions = make_directions(tiny_model)
    name = "C:\\runs\\faces\\directions.safetensors"
    term = parse_direction_spec(f"{name}:2=3@0:0.5", {name: directions})
    assert term.directions is directions and (term.index, term.scale, term.start, term.end) == (2, 3.0, 0.0, 0.5)


def test_parse_uses_edit_defaults_when_scale_is_omitted(tiny_model, tmp_path):
    defaults = [{"scale": 2.0, "start": 0.0, "end": 0.7}, {"scale": -4.0, "start": 0.2, "end": 1.0}]
    path = save_directions(tiny_model, tmp_path / "d.safetensors", count=2, edit_defaults=defaults)
    term = parse_direction_spec(f"{path}:1")
    assert (term.scale, term.start, term.end) == (-4.0, 0.2, 1.0)
    term = parse_direction_spec(f"{path}:0@0:0.3")  # own window, default scale
    assert (term.scale, term.start, term.end) == (2.0, 0.0, 0.3)


@pytest.mark.parametrize(
    "tail, problem",
    [
        ("", "no :INDEX"),
        (":=2", "no direction INDEX"),
        (":x=2", "not a whole number"),
        (":1=abc", "SCALE 'abc' is not a number"),
        (":1=nan", "not a finite number"),
        (":1=2@0.6:0.6", "0 <= START < END <= 1"),
        (":1=2@0.8:0.2", "0 <= START < END <= 1"),
        (":1=2@-0.1:0.5", "0 <= START < END <= 1"),
        (":1=2@0:1.5", "0 <= START < END <= 1"),
        (":1=2@0.5", "not START:END"),
        (":1=2@a:1", "START 'a' is not a number"),
        (":1", "no =SCALE or =STRENGTH% given"),
        (":1=abc%", "STRENGTH 'abc' is not a number"),
        (":7=1", "out of range"),
        (":-1=1", "out of range"),
    ],
)
def test_parse_malformed_specs_are_one_line_errors(faces_file, tail, problem):
    spec = f"{faces_file}{tail}"
    with pytest.raises(NoiseCLRError) as caught:
        parse_direction_spec(spec)
    message = str(caught.value)
    assert message.startswith(f"--direction {spec}:") and "\n" not in message
    assert problem in message
    if "out of range" not in problem:
        assert SPEC_FORM in message


def test_parse_missing_file_and_missing_file_name(tmp_path):
    with pytest.raises(NoiseCLRError, match="--direction .*no such directions file"):
        parse_direction_spec(f"{tmp_path / 'nope.safetensors'}:0=1")
    with pytest.raises(NoiseCLRError, match="no FILE"):
        parse_direction_spec(":0=1")


def test_direction_term_validates(tiny_model):
    directions = make_directions(tiny_model, count=2)
    with pytest.raises(NoiseCLRError, match="out of range"):
        DirectionTerm(directions, 2, 1.0)
    for start, end in ((0.5, 0.5), (-0.1, 1.0), (0.0, 1.1)):
        with pytest.raises(NoiseCLRError, match="window"):
            DirectionTerm(directions, 0, 1.0, start, end)
    with pytest.raises(NoiseCLRError, match="finite"):
        DirectionTerm(directions, 0, math.inf)


def test_edit_settings_validate():
    for kwargs, flag in (
        ({"steps": 0}, "--steps"),
        ({"inversion": "null-text"}, "--inversion"),
        ({"max_batch": 0}, "--max-batch"),
    ):
        with pytest.raises(NoiseCLRError, match=flag):
            EditSettings(**kwargs)


# ------------------------------------------------------------------------- kernel pieces
def test_window_mask_counts_steps_exactly():
    assert window_mask(0.0, 1.0, 50).all()
    assert window_mask(0.0, 0.6, 50).nonzero().flatten().tolist() == list(range(30))
    assert window_mask(0.5, 1.0, 50).nonzero().flatten().tolist() == list(range(25, 50))
    assert window_mask(1 / 3, 2 / 3, 3).tolist() == [False, True, False]


def test_combine_eps_matches_a_plain_loop():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, 2, 2, generator=generator, dtype=torch.float64)
    pairs = torch.randn(4, 4, 2, 2, generator=generator, dtype=torch.float64)
    trajectory = torch.tensor([0, 2, 2, 0])
    weight = torch.tensor([1.5, -2.0, 0.25, 3.0], dtype=torch.float64)
    reference = base.clone()
    for p in range(4):
        reference[trajectory[p]] += weight[p] * (pairs[p] - base[trajectory[p]])
    assert torch.allclose(combine_eps(base, pairs, trajectory, weight), reference, atol=1e-14, rtol=0)
    assert torch.equal(combine_eps(base, pairs[:0], trajectory[:0], weight[:0]), base)


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
    """The eps a DDIM step must have used to go from ``before`` to ``after``."""
    ratio = math.sqrt(level_to / level_from)
    return (after - ratio * before) / (math.sqrt(1 - level_to) - ratio * math.sqrt(1 - level_from))


def test_scales_act_linearly_on_their_windows(model64, monkeypatch):
    stub = conditioning_stub(model64)
    monkeypatch.setattr(model64, "predict_eps", stub)
    directions = make_directions(model64, count=2)
    steps = 8
    inversion = invert(model64, random_latents(model64, 1), "ddim", steps, progress=False)
    edits = [
        [DirectionTerm(directions, 0, 2.0, 0.5, 1.0)],
        [DirectionTerm(directions, 0, 4.0, 0.5, 1.0)],
        [DirectionTerm(directions, 0, -1.5), DirectionTerm(directions, 1, 0.75, 0.0, 0.25)],
        [],
    ]
    states = [inversion.start_latents.repeat(len(edits), 1, 1, 1)]
    regenerate(model64, inversion, edits, progress=False, callback=lambda step, latents: states.append(latents.clone()))
    schedule = inversion.schedule
    conditionings = torch.cat([model64.null_conditioning(), model64.encode_directions(directions.vectors)])
    for step in range(steps):
        t = int(schedule.timesteps[step])
        e_null, e_0, e_1 = stub(states[step][:3], t, conditionings)
        used = eps_used(states[step], states[step + 1], *schedule.levels(step))
        late, early = step >= steps // 2, step < steps // 4
        expected = [
            e_null + (2.0 * (e_0 - e_null) if late else 0),
            e_null + (4.0 * (e_0 - e_null) if late else 0),
            e_null - 1.5 * (e_0 - e_null) + (0.75 * (e_1 - e_null) if early else 0),
            e_null,
        ]
        for m in range(len(edits)):
            assert torch.allclose(used[m], expected[m], atol=1e-8, rtol=0), (step, m)


def test_denoise_checks_the_weight_table(model64):
    schedule = make_schedule(model64, 3)
    with pytest.raises(ValueError, match="weights must be"):
        denoise(
            model64,
            random_latents(model64, 2),
            schedule,
            model64.null_conditioning(),
            torch.zeros(2, 1, 4),
            progress=False,
        )


# ------------------------------------------------------------------ editing real images
@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_zero_scales_return_exactly_the_reconstruction(tiny_model, method):
    directions = make_directions(tiny_model)
    terms = [DirectionTerm(directions, 0, 0.0), DirectionTerm(directions, 2, 0.0, 0.2, 0.7)]
    result = edit(tiny_model, random_pixels(2), terms, EditSettings(steps=6, inversion=method), progress=False)
    assert result.edited.shape == result.reconstruction.shape == (2, 3, 64, 64)
    assert torch.equal(result.edited_latents, result.reconstruction_latents)
    assert torch.equal(result.edited, result.reconstruction)
    # A real scale changes the output.
    terms = [DirectionTerm(directions, 0, 3.0)]
    changed = edit(tiny_model, random_pixels(2), terms, EditSettings(steps=6, inversion=method), progress=False)
    assert not torch.allclose(changed.edited_latents, changed.reconstruction_latents)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_late_window_leaves_the_first_half_untouched(model64, method):
    directions = make_directions(model64)
    steps = 10
    inversion = invert(model64, random_latents(model64, 2), method, steps, progress=False)
    states = []
    regenerate(
        model64,
        inversion,
        [[DirectionTerm(directions, 1, 5.0, 0.5, 1.0)], []],
        progress=False,
        callback=lambda step, latents: states.append(latents.clone()),
    )
    for step in range(steps):
        edited, plain = states[step][:2], states[step][2:]
        if step < steps // 2:
            assert torch.equal(edited, plain), step
        else:
            assert not torch.allclose(edited, plain), step


def test_max_batch_chunks_without_changing_results(model64):
    directions = make_directions(model64)
    inversion = invert(model64, random_latents(model64, 3), "ddpm", 6, progress=False)
    edits = [
        [DirectionTerm(directions, 0, 2.0)],
        [DirectionTerm(directions, 1, -1.0, 0.3, 1.0), DirectionTerm(directions, 2, 1.0)],
        [],
    ]
    whole = regenerate(model64, inversion, edits, progress=False)
    with UNetCalls(model64) as calls:
        chunked = regenerate(model64, inversion, edits, max_batch=4, progress=False)
    assert max(calls.rows) <= 4
    assert torch.allclose(whole, chunked, atol=1e-10, rtol=0)


def test_one_unet_call_per_denoising_step(tiny_model):
    directions = make_directions(tiny_model)
    steps, images = 6, 2
    inversion = invert(tiny_model, random_latents(tiny_model, images).float(), "ddim", steps, progress=False)
    edits = [
        [DirectionTerm(directions, 0, 2.0)],
        [DirectionTerm(directions, 1, 1.0, 0.5, 1.0), DirectionTerm(directions, 2, -2.0)],
        [],
    ]
    with UNetCalls(tiny_model) as calls:
        latents = regenerate(tiny_model, inversion, edits, progress=False)
    assert latents.shape == (3, images, 4, 8, 8)
    assert len(calls.rows) == steps
    # Rows: a null row for all 3*2 trajectories, plus one per active (trajectory, direction) pair.
    assert calls.rows == [6 + 2 + 2 * (1 + (step >= 3)) for step in range(steps)]
    # edit(): inversion (one call per step) + one batched pass for edited and reconstruction.
    with UNetCalls(tiny_model) as calls:
        edit(tiny_model, random_pixels(images), edits[1], EditSettings(steps=steps), progress=True)
    assert len(calls.rows) == 2 * steps


def test_directions_from_two_files_combine(tiny_model, tmp_path):
    faces = save_directions(tiny_model, tmp_path / "faces.safetensors", count=3, seed=1, domain="faces")
    cats = save_directions(tiny_model, tmp_path / "cats.safetensors", count=2, seed=2, domain="cats")
    loaded: dict[str, Directions] = {}
    face_term = parse_direction_spec(f"{faces}:2=3", loaded)
    cat_term = parse_direction_spec(f"{cats}:0=-2@0:0.5", loaded)
    inversion = invert(tiny_model, random_latents(tiny_model, 1).float(), "ddpm", 6, progress=False)
    with UNetCalls(tiny_model) as calls:
        latents = regenerate(
            tiny_model, inversion, [[face_term, cat_term], [face_term], [cat_term], []], progress=False
        )
    assert len(calls.rows) == 6
    combined, face_only, cat_only, plain = latents[:, 0]
    for other in (face_only, cat_only, plain):
        assert not torch.allclose(combined, other)


def test_directions_from_another_model_are_refused(tiny_model, tiny_v_model, tmp_path):
    foreign = save_directions(tiny_v_model, tmp_path / "v-model.safetensors", count=2)
    term = parse_direction_spec(f"{foreign}:0=2")
    with pytest.raises(NoiseCLRError, match="width 24 .* token width 32") as caught:
        edit(tiny_model, random_pixels(1), [term], EditSettings(steps=3), progress=False)
    assert "\n" not in str(caught.value)
    with pytest.raises(NoiseCLRError, match="width"):
        generate(tiny_model, ["a cat"], [term], GenerateSettings(steps=3), progress=False)
    # Same width, different text encoder: refused by the fingerprint.
    fingerprint = dict(
        tiny_model.fingerprint(), sha256="0" * 64, probe=[v + 1.0 for v in tiny_model.fingerprint()["probe"]]
    )
    lookalike = Directions(vectors=torch.randn(2, 32), model_id="other/model", fingerprint=fingerprint)
    with pytest.raises(NoiseCLRError, match="made for model other/model"):
        regenerate(
            tiny_model,
            invert(tiny_model, random_latents(tiny_model, 1).float(), "ddim", 2, progress=False),
            [[DirectionTerm(lookalike, 0, 1.0)]],
            progress=False,
        )


def test_v_prediction_models_edit_and_generate(any_tiny_model):
    directions = make_directions(any_tiny_model)
    term = DirectionTerm(directions, 1, 2.5, 0.0, 0.8)
    result = edit(any_tiny_model, random_pixels(1), [term], EditSettings(steps=5, inversion="ddpm"), progress=False)
    assert bool(torch.isfinite(result.edited).all()) and not torch.equal(
        result.edited_latents, result.reconstruction_latents
    )
    # DDPM inversion stays exact for v-prediction: reconstruction == the encoded input latents.
    encoded = any_tiny_model.encode_images(result.source)
    assert float((result.reconstruction_latents - encoded).abs().max()) < 1e-5
    pixels = generate(any_tiny_model, ["a cat", "a dog"], [term], GenerateSettings(steps=4), progress=False).images
    assert pixels.shape == (2, 3, 64, 64) and bool(torch.isfinite(pixels).all())


def test_edit_result_keeps_paths_and_draws_a_grid(tiny_model):
    images = ImageSet(random_pixels(2), [Path("a.png"), Path("b.png")])
    term = DirectionTerm(make_directions(tiny_model, names=["smile", "age", "hair"]), 0, 2.0, 0.0, 0.5)
    result = edit(tiny_model, images, [term], EditSettings(steps=3), progress=False)
    assert result.paths == images.paths and len(result) == 2
    assert torch.equal(result.source, images.pixels)
    grid = result.grid()
    assert grid.width > 3 * 64 and grid.height > 2 * 64
    assert "0: smile x2 @0-0.5" in term.describe()


def test_render_edits_decodes_every_variant(tiny_model):
    directions = make_directions(tiny_model)
    inversion = invert(tiny_model, tiny_model.encode_images(random_pixels(2)), "ddpm", 4, progress=False)
    scales = [-2.0, 0.0, 2.0]
    pixels = render_edits(
        tiny_model, inversion, [[DirectionTerm(directions, 0, s)] for s in scales], image_indices=[1], progress=False
    )
    assert pixels.shape == (3, 1, 3, 64, 64)
    plain = render_edits(tiny_model, inversion, [[]], image_indices=[1], progress=False)
    # Another batch size: float32 kernels round differently (measured: latents 3e-6 apart, and
    # the random VAE decoder amplifies that to 3e-4 in pixels), so close rather than bitwise.
    assert torch.allclose(pixels[1], plain[0], atol=2e-3, rtol=0)


# ------------------------------------------------------------------------- text to image
def test_generation_without_directions_matches_diffusers_ddim_pipeline(any_tiny_model):
    from diffusers import DDIMScheduler

    pipe = any_tiny_model.to_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(any_tiny_model.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts, steps, guidance = ["a red cat", "two dogs"], 8, 6.0
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    reference = pipe(
        prompts,
        latents=noise.clone(),
        num_inference_steps=steps,
        guidance_scale=guidance,
        eta=0.0,
        output_type="latent",
    ).images
    ours = generate_latents(
        any_tiny_model, prompts, [[]], guidance_scale=guidance, steps=steps, noise=noise, progress=False
    )[0]
    # diffusers steps in float32 (and keeps alpha_bar in float32); ours in float64.
    assert float((ours.float() - reference).abs().max()) < 1e-4 * float(reference.abs().max())


def test_generation_variants_share_noise_and_seed(tiny_model):
    directions = make_directions(tiny_model)
    edits = [[], [DirectionTerm(directions, 0, 0.0)], [DirectionTerm(directions, 0, 3.0, 0.0, 0.5)]]
    with UNetCalls(tiny_model) as calls:
        latents = generate_latents(tiny_model, ["a cat"], edits, steps=4, seed=7, progress=False)
    assert len(calls.rows) == 4
    assert torch.equal(latents[0], latents[1]) and not torch.allclose(latents[0], latents[2])
    again = generate_latents(tiny_model, ["a cat"], [[]], steps=4, seed=7, progress=False)
    other = generate_latents(tiny_model, ["a cat"], [[]], steps=4, seed=8, progress=False)
    # Same seed in a smaller batch: equal up to float32 kernels' batch-size-dependent rounding.
    assert torch.allclose(again[0], latents[0], atol=1e-4, rtol=0) and not torch.allclose(
        other[0], latents[0], atol=1e-2
    )


def test_non_finite_model_outputs_stop_the_edit(tiny_model, tmp_path):
    # A NaN prediction used to decode to an all-black image and exit 0. A scale this large
    # overflows float32: the guided prediction of the edited trajectory becomes infinite.
    directions = Directions.for_model(tiny_model, torch.randn(2, tiny_model.token_width))
    term = DirectionTerm(directions, 0, 1e38)
    with pytest.raises(NoiseCLRError, match=r"step \d/3: .*NaN or infinite for 1 of 2 trajectories") as caught:
        edit(tiny_model, random_pixels(1), [term], EditSettings(steps=3), progress=False)
    assert "\n" not in str(caught.value)
