"""Samplers and real-image inversion (NoiseCLR, paper Sec. 3.3, Eq. 8-9).

The sampler math is a handful of short pure functions in the epsilon parameterisation of
DDIM (Song et al., 2021) -- the same formulas as diffusers' ``DDIMScheduler.step``:

* :func:`predict_x0` -- the clean-latent estimate from a noisy latent and its eps;
* :func:`ddim_step` -- deterministic (eta = 0) move from one noise level to another; it runs
  forwards (denoising) and backwards (DDIM inversion) alike;
* :func:`ddpm_sigma`, :func:`ddpm_mean`, :func:`ddpm_step`, :func:`ddpm_noise` -- the
  stochastic (eta = 1, i.e. DDPM) step ``x_prev = mu(x, eps) + sigma z`` and, given a target
  ``x_prev``, the noise ``z`` that reaches it exactly.

Noise levels are ``alpha_bar`` values (cumulative products of the training schedule), always
float64. A :class:`Schedule` lists the model's own inference timesteps (descending) and the
levels before/after each step: step ``i`` goes from ``alpha_bars[i]`` to ``alpha_bars[i + 1]``
and the last step lands on ``model.final_alpha_cumprod``.

Real images are inverted with the *null* (empty-prompt) conditioning by :func:`invert`:

* ``"ddim"``: DDIM inversion -- the denoising steps run in reverse, with eps evaluated at the
  current (less noisy) latent and the target step's timestep. Only approximately invertible
  (exact when eps does not depend on the latent).
* ``"ddpm"``: the *edit-friendly DDPM noise space* of Huberman-Spiegelglas, Kadosh & Michaeli
  (CVPR 2024): a noisy latent is drawn independently from ``q(x_t | x_0)`` for every step, then
  the noise maps ``z_t`` are solved so the eta = 1 sampler reproduces that chain; its final
  step lands on ``x_0``. Regenerating with the same ``z`` (null conditioning, no directions)
  reconstructs the input latents exactly up to rounding.

Sampler state is kept in float64 (float32 on devices without float64), whatever the model's
dtype: latents are tiny next to the UNet, and this keeps the chain's own rounding negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from .errors import NoiseCLRError
from .options import INVERSION_METHODS, check_count, check_inversion, check_max_batch  # noqa: F401 (INVERSION_METHODS re-exported)

if TYPE_CHECKING:
    from .model import DiffusionModel


# --------------------------------------------------------------------------- pure sampler math
def predict_x0(latents: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """Clean-latent estimate ``(x - sqrt(1 - a) eps) / sqrt(a)``."""
    return (latents - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def ddim_step(latents: torch.Tensor, eps: torch.Tensor, alpha_bar_from: float, alpha_bar_to: float) -> torch.Tensor:
    """Deterministic DDIM move (eta = 0): predict x0, re-noise it to ``alpha_bar_to`` with the same eps.

    Denoising has ``alpha_bar_to > alpha_bar_from``; inversion runs it the other way.
    """
    x0 = predict_x0(latents, eps, alpha_bar_from)
    return math.sqrt(alpha_bar_to) * x0 + math.sqrt(1.0 - alpha_bar_to) * eps


def ddpm_sigma(alpha_bar_from: float, alpha_bar_to: float, eta: float = 1.0) -> float:
    """Standard deviation of the fresh noise in a DDIM step with ``eta`` (eta = 1 is DDPM's posterior)."""
    variance = (1.0 - alpha_bar_to) / (1.0 - alpha_bar_from) * (1.0 - alpha_bar_from / alpha_bar_to)
    return eta * math.sqrt(max(variance, 0.0))


def ddpm_mean(
    latents: torch.Tensor, eps: torch.Tensor, alpha_bar_from: float, alpha_bar_to: float, sigma: float
) -> torch.Tensor:
    """Mean of the stochastic step: ``sqrt(a_to) x0 + sqrt(1 - a_to - sigma^2) eps``."""
    x0 = predict_x0(latents, eps, alpha_bar_from)
    return math.sqrt(alpha_bar_to) * x0 + math.sqrt(max(1.0 - alpha_bar_to - sigma**2, 0.0)) * eps


def ddpm_step(
    latents: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_from: float,
    alpha_bar_to: float,
    noise: torch.Tensor,
    eta: float = 1.0,
) -> torch.Tensor:
    """Stochastic step ``x_to = mu(x, eps) + sigma z`` (``DDIMScheduler.step`` with ``eta`` and ``variance_noise=z``)."""
    sigma = ddpm_sigma(alpha_bar_from, alpha_bar_to, eta)
    return ddpm_mean(latents, eps, alpha_bar_from, alpha_bar_to, sigma) + sigma * noise


def ddpm_noise(
    latents: torch.Tensor,
    eps: torch.Tensor,
    target: torch.Tensor,
    alpha_bar_from: float,
    alpha_bar_to: float,
    eta: float = 1.0,
) -> torch.Tensor:
    """The noise ``z`` for which :func:`ddpm_step` from ``latents`` lands exactly on ``target``."""
    sigma = ddpm_sigma(alpha_bar_from, alpha_bar_to, eta)
    if sigma <= 0.0:
        raise ValueError("ddpm_noise needs sigma > 0 (eta > 0 and distinct noise levels)")
    return (target - ddpm_mean(latents, eps, alpha_bar_from, alpha_bar_to, sigma)) / sigma


# ---------------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class Schedule:
    """The denoising steps: timesteps and the noise level before and after each.

    Step ``i`` evaluates the UNet at ``timesteps[i]`` and moves from ``alpha_bars[i]`` to
    ``alpha_bars[i + 1]``; ``alpha_bars[-1]`` is the model's ``final_alpha_cumprod``.
    """

    timesteps: torch.Tensor
    """[N] int64, descending (the model's own spacing, as its DDIM sampler uses)."""
    alpha_bars: torch.Tensor
    """[N + 1] float64 on the CPU."""

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    def levels(self, step: int) -> tuple[float, float]:
        """``(alpha_bar_from, alpha_bar_to)`` of denoising step ``step``."""
        return float(self.alpha_bars[step]), float(self.alpha_bars[step + 1])


def check_steps(model: DiffusionModel, steps: int, flag: str = "--steps") -> None:
    """Refuse step counts the model's scheduler cannot provide."""
    check_count(steps, flag, why="must be a whole number of at least 1; 50 is typical.")
    if steps > model.num_train_timesteps:
        raise NoiseCLRError(
            f"{flag} {steps}: more than the model's {model.num_train_timesteps} training timesteps; use fewer steps."
        )


def make_schedule(model: DiffusionModel, steps: int) -> Schedule:
    """The model's ``steps`` inference timesteps and their noise levels."""
    check_steps(model, steps)
    timesteps = model.inference_timesteps(steps)
    if int(timesteps.max()) >= model.num_train_timesteps or int(timesteps.min()) < 0:
        # diffusers' "leading" spacing with steps_offset can run past the last timestep.
        raise NoiseCLRError(
            f"--steps {steps}: the model's timestep spacing gives timestep {int(timesteps.max())}, outside "
            f"0..{model.num_train_timesteps - 1}; use fewer steps."
        )
    levels = model.alphas_cumprod.to(torch.float64)[timesteps]
    final = torch.tensor([model.final_alpha_cumprod], dtype=torch.float64)
    return Schedule(timesteps=timesteps, alpha_bars=torch.cat([levels, final]))


def work_dtype(device: torch.device) -> torch.dtype:
    """Dtype of the sampler state: float64 except where the device has none (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


# ---------------------------------------------------------------------------------- inversion
@dataclass
class Inversion:
    """Real images mapped to the noise that regenerates them (see :func:`invert`).

    Invert once, then render any number of edits from it with
    :func:`noiseclr.editing.regenerate`.
    """

    method: str
    """``"ddim"`` or ``"ddpm"``."""
    schedule: Schedule
    source_latents: torch.Tensor
    """[B, C, h, w] the inverted (clean) latents, in the sampler's dtype."""
    start_latents: torch.Tensor
    """[B, C, h, w] the noisiest latents, where regeneration starts."""
    noise_maps: torch.Tensor | None = None
    """[N, B, C, h, w] ``z`` per step and image (``"ddpm"`` only); None for ``"ddim"``."""
    eta: float = 0.0
    """Sampler stochasticity the noise maps belong to: 0 for DDIM, 1 for DDPM."""

    @property
    def steps(self) -> int:
        return self.schedule.steps

    @property
    def timesteps(self) -> torch.Tensor:
        return self.schedule.timesteps

    @property
    def batch(self) -> int:
        return int(self.source_latents.shape[0])

    def select(self, indices: list[int]) -> Inversion:
        """The same inversion restricted to images ``indices`` (in that order)."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.source_latents.device)
        return replace(
            self,
            source_latents=self.source_latents[index],
            start_latents=self.start_latents[index],
            noise_maps=None if self.noise_maps is None else self.noise_maps[:, index],
        )


@torch.no_grad()
def invert(
    model: DiffusionModel,
    latents: torch.Tensor,
    method: str = "ddim",
    steps: int = 50,
    *,
    generator: torch.Generator | None = None,
    max_batch: int | None = None,
    progress: bool = True,
) -> Inversion:
    """Invert clean latents ``[B, C, h, w]`` (from ``model.encode_images``) to noise, with the null prompt.

    ``method`` is ``"ddim"`` (deterministic, approximate) or ``"ddpm"`` (edit-friendly, exact in the latents;
    its random draws come from ``generator``, a CPU ``torch.Generator``; seed 0 if None).
    ``max_batch`` caps the UNet rows per call.
    """
    check_inversion(method)
    if latents.ndim != 4:
        raise ValueError(f"latents must be [B, C, h, w], got {tuple(latents.shape)}")
    check_max_batch(max_batch)
    schedule = make_schedule(model, steps)
    x0 = latents.to(model.device, work_dtype(model.device))
    if method == "ddim":
        return _invert_ddim(model, x0, schedule, max_batch=max_batch, progress=progress)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return _invert_ddpm(model, x0, schedule, generator, max_batch=max_batch, progress=progress)


def _invert_ddim(
    model: DiffusionModel, x0: torch.Tensor, schedule: Schedule, *, max_batch: int | None, progress: bool
) -> Inversion:
    from tqdm.auto import tqdm

    null = model.null_conditioning().expand(x0.shape[0], -1, -1)
    latents = x0
    # Denoising step i goes alpha_bars[i] -> alpha_bars[i+1]; inversion undoes the steps last to first,
    # using eps at the current (less noisy) latent and the step's own timestep.
    for step in tqdm(
        reversed(range(schedule.steps)),
        total=schedule.steps,
        desc="inverting (ddim)",
        disable=not progress,
        leave=False,
    ):
        eps = model.predict_eps_rows(latents, int(schedule.timesteps[step]), null, max_batch).to(latents.dtype)
        level_from, level_to = schedule.levels(step)
        latents = ddim_step(latents, eps, level_to, level_from)
    return Inversion(method="ddim", schedule=schedule, source_latents=x0, start_latents=latents, eta=0.0)


def _invert_ddpm(
    model: DiffusionModel,
    x0: torch.Tensor,
    schedule: Schedule,
    generator: torch.Generator,
    *,
    max_batch: int | None,
    progress: bool,
) -> Inversion:
    from tqdm.auto import tqdm

    steps, batch = schedule.steps, x0.shape[0]
    # Independent draws x_i ~ q(x_i | x_0) at every step's starting level (not a Markov chain:
    # that independence is what makes the noise maps "edit friendly"). Drawn on the CPU in
    # float32 so a seed gives the same chain on every device and dtype.
    gaussian = torch.randn((steps, *x0.shape), generator=generator, device=generator.device, dtype=torch.float32)
    gaussian = gaussian.to(x0.device, x0.dtype)
    level = schedule.alpha_bars[:steps].to(x0.device, x0.dtype).view(-1, 1, 1, 1, 1)
    chain = level.sqrt() * x0.unsqueeze(0) + (1 - level).sqrt() * gaussian  # [N, B, ...]
    # The chain's states are independent, so all N*B predictions batch freely (max_batch rows a
    # call; one step's images per call by default, so the progress bar moves).
    rows = chain.reshape(steps * batch, *x0.shape[1:])
    row_t = schedule.timesteps.repeat_interleave(batch)
    null = model.null_conditioning()
    per_call = max_batch or batch
    eps_parts = []
    for start in tqdm(range(0, rows.shape[0], per_call), desc="inverting (ddpm)", disable=not progress, leave=False):
        part = slice(start, start + per_call)
        count = rows[part].shape[0]
        eps_parts.append(
            model.predict_eps_rows(rows[part], row_t[part], null.expand(count, -1, -1), max_batch).to(x0.dtype)
        )
    eps = torch.cat(eps_parts).view(steps, *x0.shape)
    noise_maps = torch.empty_like(chain)
    for step in range(steps):
        target = chain[step + 1] if step + 1 < steps else x0  # the last step lands on x_0 itself
        level_from, level_to = schedule.levels(step)
        noise_maps[step] = ddpm_noise(chain[step], eps[step], target, level_from, level_to, eta=1.0)
    return Inversion(
        method="ddpm", schedule=schedule, source_latents=x0, start_latents=chain[0], noise_maps=noise_maps, eta=1.0
    )
