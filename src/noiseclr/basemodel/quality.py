"""Quality of the embedded base model, measured with the factor readers (the model card's numbers).

Every bar of the base-model issue has one function here:

* :func:`evaluate_readers` -- readers on fresh renders;
* :func:`evaluate_vae` -- readers on VAE reconstructions (encode, decode);
* :func:`evaluate_text_conditioning` -- samples for a caption naming one factor value show it;
* :func:`evaluate_unconditional` -- null-prompt samples cover every value of every factor;
* :func:`evaluate_inversion` -- DDIM inversion then regeneration with the null prompt keeps values;
* :func:`time_discovery_step` -- one discovery micro-batch (6 images x 8 directions) with backward;
* :func:`controllability_probe` -- per factor value, how often a prompt term naming it moves a real
  image there (edit-friendly DDPM inversion, then ``eps_0 + s (eps(c_value) - eps_0)``), and what
  else changed: NoiseCLR can only find what the conditioning pathway can express. Cheap enough to
  run on training snapshots (``scripts/evaluate_basemodel.py --probe-only``).

Renders come from the evaluation seed range (never used to train the base model or the readers),
each evaluation from its own offset so no two share images.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..model import DiffusionModel
from ..world.factors import DOMAINS, domain_factors
from ..world.readers import FactorReader, ReaderNet, eval_renders, reader_accuracy, to_reader_input
from ..world.seeds import EVAL_OFFSETS, READER_TRAIN_SEED_BASE
from .reader_training import AugmentSettings, augment_for_reading
from ..world.render import render_many

RENDER_DOMAINS = tuple(DOMAINS)
# Offsets into the evaluation seed range, one per measurement (noiseclr.world.seeds).
VAE_OFFSET, INVERSION_OFFSET, DOMAIN_EVAL_OFFSET = (
    EVAL_OFFSETS["vae"],
    EVAL_OFFSETS["inversion"],
    EVAL_OFFSETS["domain"],
)


@dataclass
class QualitySettings:
    reader_images: int = 2000
    """Fresh renders per domain for the readers' accuracy."""
    vae_images: int = 500
    """Renders per domain pushed through the VAE."""
    samples_per_value: int = 16
    """Samples per caption naming one factor value."""
    unconditional_samples: int = 400
    inversion_images: int = 100
    """Renders per domain inverted and regenerated."""
    steps: int = 50
    guidance: float = 5.0
    batch: int = 64
    """Trajectories per sampling pass."""
    seed: int = 0


def _pixels(images: np.ndarray) -> torch.Tensor:
    return to_reader_input(images)


def load_readers(device: str | torch.device = "cpu") -> dict[str, FactorReader]:
    return {domain: FactorReader.load(domain, device=device) for domain in RENDER_DOMAINS}


# ---------------------------------------------------------------------------- readers and VAE
def evaluate_readers(readers: dict[str, FactorReader], settings: QualitySettings) -> dict[str, dict[str, float]]:
    result = {}
    for domain, reader in readers.items():
        images, labels = eval_renders(domain, settings.reader_images)
        result[domain] = reader_accuracy(reader, images, labels)
    return result


def evaluate_vae(
    model: DiffusionModel, readers: dict[str, FactorReader], settings: QualitySettings
) -> dict[str, dict[str, float]]:
    """Reader accuracy (against the true labels) on encode -> decode round trips."""
    result = {}
    for domain, reader in readers.items():
        images, labels = eval_renders(domain, settings.vae_images, start=VAE_OFFSET)
        pixels = _pixels(images)
        recon = torch.cat(
            [model.decode_latents(model.encode_images(chunk)).cpu() for chunk in pixels.split(settings.batch)]
        )
        result[domain] = reader_accuracy(reader, recon, labels)
    return result


# ------------------------------------------------------------------------------------ sampling
def sample(
    model: DiffusionModel,
    prompts: Sequence[str],
    settings: QualitySettings,
    *,
    guidance: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM samples (pixels [P, 3, S, S] on the CPU) for ``prompts``, in passes of ``settings.batch``."""
    from ..generation import generate_latents

    out = []
    for index, start in enumerate(range(0, len(prompts), settings.batch)):
        chunk = list(prompts[start : start + settings.batch])
        latents = generate_latents(
            model,
            chunk,
            [[]],
            guidance_scale=settings.guidance if guidance is None else guidance,
            steps=settings.steps,
            seed=settings.seed * 1000 + index,
            progress=progress,
        )[0]
        out.append(model.decode_latents(latents).cpu())
    return torch.cat(out)


def evaluate_text_conditioning(
    model: DiffusionModel,
    readers: dict[str, FactorReader],
    settings: QualitySettings,
    domains: Sequence[str] = RENDER_DOMAINS,
) -> dict[str, Any]:
    """For each factor value: the fraction of samples of ``caption_for_value`` whose reader reads that value.

    Per factor the rate is averaged over its values, per domain over its factors, overall over all factors.
    """
    from ..world.captions import caption_for_value

    jobs = [(d, f.name, i, v) for d in domains for f in domain_factors(d) for i, v in enumerate(f.values)]
    prompts = [caption_for_value(d, f, v) for d, f, _, v in jobs for _ in range(settings.samples_per_value)]
    pixels = sample(model, prompts, settings)
    per_value: dict[str, dict[str, dict[str, float]]] = {}
    cursor = 0
    for domain, factor, value_index, value in jobs:
        chunk = pixels[cursor : cursor + settings.samples_per_value]
        cursor += settings.samples_per_value
        reader = readers[domain]
        column = reader.factor_names.index(factor)
        hits = (reader.predict_indices(chunk)[:, column] == value_index).double().mean()
        per_value.setdefault(domain, {}).setdefault(factor, {})[value] = float(hits)
    per_factor = {d: {f: statistics.fmean(v.values()) for f, v in fs.items()} for d, fs in per_value.items()}
    return {
        "captions": {
            d: {f: caption_for_value(d, f, next(iter(v))) for f, v in fs.items()} for d, fs in per_value.items()
        },
        "per_value": per_value,
        "per_factor": per_factor,
        "per_domain": {d: statistics.fmean(fs.values()) for d, fs in per_factor.items()},
        "overall": statistics.fmean(rate for fs in per_factor.values() for rate in fs.values()),
    }


# --------------------------------------------------------------------------- domain of a sample
def train_domain_classifier(
    steps: int = 300, images_per_domain: int = 2000, seed: int = 0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A 3-way faces/cats/scenes classifier (the readers' CNN with one head), for unconditional samples.

    Trained on the readers' training seed range with the readers' augmentations; returns a function
    pixels [N, 3, 128, 128] in [-1, 1] -> domain indices [N] (order of :data:`RENDER_DOMAINS`).
    """
    pixels, targets = [], []
    for index, domain in enumerate(RENDER_DOMAINS):
        images, _ = render_many(domain, range(READER_TRAIN_SEED_BASE, READER_TRAIN_SEED_BASE + images_per_domain))
        pixels.append(_pixels(images))
        targets.append(torch.full((images_per_domain,), index))
    all_pixels, all_targets = torch.cat(pixels), torch.cat(targets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ReaderNet([len(RENDER_DOMAINS)])
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    rng = np.random.default_rng([seed, 31])
    net.train()
    for _ in range(steps):
        batch = torch.from_numpy(rng.integers(0, len(all_targets), size=64))
        logits = net(augment_for_reading(all_pixels[batch], rng, AugmentSettings()))
        loss = F.cross_entropy(logits, all_targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()

    @torch.inference_mode()
    def classify(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(chunk).argmax(dim=1) for chunk in to_reader_input(images).split(256)])

    return classify


def domain_classifier_accuracy(classify: Callable[[torch.Tensor], torch.Tensor], count: int = 300) -> float:
    correct = 0
    for index, domain in enumerate(RENDER_DOMAINS):
        images, _ = eval_renders(domain, count, start=DOMAIN_EVAL_OFFSET)
        correct += int((classify(_pixels(images)) == index).sum())
    return correct / (count * len(RENDER_DOMAINS))


def evaluate_unconditional(
    model: DiffusionModel,
    readers: dict[str, FactorReader],
    classify: Callable[[torch.Tensor], torch.Tensor],
    settings: QualitySettings,
) -> dict[str, Any]:
    """Null-prompt samples: how many of each domain, and which factor values appear (none missing is the bar)."""
    pixels = sample(model, [""] * settings.unconditional_samples, settings, guidance=1.0)
    domains = classify(pixels)
    counts, seen, missing = {}, {}, []
    for index, domain in enumerate(RENDER_DOMAINS):
        chunk = pixels[domains == index]
        counts[domain] = int(len(chunk))
        reader = readers[domain]
        read = reader.predict_indices(chunk) if len(chunk) else torch.empty(0, len(reader.factors), dtype=torch.long)
        for column, factor in enumerate(reader.factors):
            histogram = torch.bincount(read[:, column], minlength=len(factor.values)).tolist()
            seen.setdefault(domain, {})[factor.name] = dict(zip(factor.values, histogram))
            missing += [f"{domain}.{factor.name}={v}" for v, n in zip(factor.values, histogram) if n == 0]
    total_values = sum(len(f.values) for d in RENDER_DOMAINS for f in domain_factors(d))
    return {
        "samples": settings.unconditional_samples,
        "domain_counts": counts,
        "value_counts": seen,
        "missing_values": missing,
        "values_covered": (total_values - len(missing)) / total_values,
    }


# ----------------------------------------------------------------------------------- inversion
def evaluate_inversion(
    model: DiffusionModel, readers: dict[str, FactorReader], settings: QualitySettings
) -> dict[str, dict[str, float]]:
    """DDIM inversion with the null prompt, regeneration with the null prompt: reader accuracy vs the labels."""
    from ..editing import regenerate
    from ..inversion import invert

    result = {}
    for domain, reader in readers.items():
        images, labels = eval_renders(domain, settings.inversion_images, start=INVERSION_OFFSET)
        regenerated = []
        for chunk in _pixels(images).split(settings.batch):
            inversion = invert(model, model.encode_images(chunk), "ddim", settings.steps, progress=False)
            regenerated.append(model.decode_latents(regenerate(model, inversion, [[]], progress=False)[0]).cpu())
        result[domain] = reader_accuracy(reader, torch.cat(regenerated), labels)
    return result


# ------------------------------------------------------------------------------------- speed
def time_discovery_step(
    model: DiffusionModel, *, images: int = 6, directions: int = 8, repeats: int = 5
) -> dict[str, float]:
    """Median seconds of one micro-batch (``images`` x ``directions``, fast path) with backward."""
    from ..discovery import initial_directions, micro_batch_loss

    generator = torch.Generator().manual_seed(0)
    shape = (images, model.latent_channels, model.latent_size, model.latent_size)
    latents = torch.randn(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    vectors = initial_directions(model, directions, seed=0).to(model.device).requires_grad_(True)
    drawn = torch.arange(directions)
    times = []
    for repeat in range(repeats + 1):
        vectors.grad = None
        started = time.perf_counter()
        micro_batch_loss(model, vectors, latents.to(model.device), 500, noise.to(model.device), drawn).loss.backward()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if repeat:  # the first call warms up
            times.append(time.perf_counter() - started)
    return {
        "median_seconds": statistics.median(times),
        "min_seconds": min(times),
        "repeats": repeats,
        "images": images,
        "directions": directions,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- controllability
@dataclass
class ProbeSettings:
    images: int = 16
    """Held-out renders per domain (each value is tried on those that do not show it)."""
    steps: int = 15
    """DDPM inversion and denoising steps."""
    scales: tuple[float, ...] = (2.0, 4.0)
    """Prompt-term scales tried; each value reports every scale and its best."""
    domains: tuple[str, ...] = ("faces", "cats")
    trajectories_per_pass: int = 256
    seed: int = 0


def controllability_probe(
    model: DiffusionModel, readers: dict[str, FactorReader], settings: ProbeSettings = ProbeSettings()
) -> dict[str, Any]:
    """Per factor value: ``reached`` = fraction of images (not already at the value) that a prompt
    term naming it moves to it, ``others`` = mean fraction of the OTHER factors that changed on them,
    ``changed`` = which other factors changed most; per scale and at the best scale (max reached).

    Readings are compared with the unedited DDPM reconstruction (which equals the input up to the
    VAE), so inversion error never counts. Per factor the rates average over values, per domain
    over factors; ``score`` is reached at the best scale.
    """
    from ..editing import PromptTerm
    from ..measure import EditProtocol, PassSizes, read_factors, render_and_read
    from ..world.captions import caption_for_value

    protocol = EditProtocol(
        steps=settings.steps,
        inversion="ddpm",
        seed=settings.seed,
        passes=PassSizes(trajectories_per_pass=settings.trajectories_per_pass),
    )
    result: dict[str, Any] = {"settings": asdict(settings), "domains": {}}
    for domain in settings.domains:
        reader = readers[domain]
        factors = domain_factors(domain)
        images, _ = eval_renders(domain, settings.images, start=EVAL_OFFSETS["probe"])
        pixels = _pixels(images)
        from ..inversion import invert

        generator = torch.Generator().manual_seed(settings.seed)
        inversion = invert(
            model, model.encode_images(pixels), "ddpm", settings.steps, generator=generator, progress=False
        )
        recon = render_and_read(model, inversion, reader, [[]], protocol.passes, progress=False)[0][0]
        jobs = [
            (f_index, factor, v_index, value)
            for f_index, factor in enumerate(factors)
            for v_index, value in enumerate(factor.values)
        ]
        edits = [
            [PromptTerm(caption_for_value(domain, factor.name, value), scale)]
            for _, factor, _, value in jobs
            for scale in settings.scales
        ]
        edited = render_and_read(
            model, inversion, reader, edits, protocol.passes, desc=f"probe {domain}", progress=False
        )[0]
        edited = edited.view(len(jobs), len(settings.scales), *edited.shape[1:])  # [V, S, B, F]
        per_value: dict[str, dict[str, Any]] = {}
        for j, (f_index, factor, v_index, value) in enumerate(jobs):
            rows = recon[:, f_index] != v_index  # images not already at the value
            entry: dict[str, Any] = {
                "caption": caption_for_value(domain, factor.name, value),
                "images": int(rows.sum()),
                "scales": {},
            }
            for s_index, scale in enumerate(settings.scales):
                read = edited[j, s_index][rows]
                if not len(read):
                    continue
                reached = float((read[:, f_index] == v_index).double().mean())
                other_columns = [c for c in range(len(factors)) if c != f_index]
                moved = (read[:, other_columns] != recon[rows][:, other_columns]).double().mean(dim=0)
                top = sorted(zip([factors[c].name for c in other_columns], moved.tolist()), key=lambda item: -item[1])
                entry["scales"][f"{scale:g}"] = {
                    "reached": round(reached, 4),
                    "others": round(float(moved.mean()), 4),
                    "changed": {name: round(v, 3) for name, v in top[:3] if v > 0},
                }
            if entry["scales"]:
                best = max(
                    entry["scales"], key=lambda key: (entry["scales"][key]["reached"], -entry["scales"][key]["others"])
                )
                entry["best_scale"] = float(best)
                entry["reached"] = entry["scales"][best]["reached"]
                entry["others"] = entry["scales"][best]["others"]
            per_value.setdefault(factor.name, {})[value] = entry
        per_factor = {
            name: {
                "reached": statistics.fmean(v["reached"] for v in values.values() if "reached" in v),
                "others": statistics.fmean(v["others"] for v in values.values() if "others" in v),
            }
            for name, values in per_value.items()
        }
        result["domains"][domain] = {
            "per_value": per_value,
            "per_factor": per_factor,
            "reached": statistics.fmean(f["reached"] for f in per_factor.values()),
            "others": statistics.fmean(f["others"] for f in per_factor.values()),
            "reader_vs_recon": {
                f.name: round(float(a), 4)
                for f, a in zip(factors, (read_factors(reader, pixels) == recon).double().mean(dim=0))
            },
        }
    result["score"] = statistics.fmean(d["reached"] for d in result["domains"].values())
    return result
