"""Model adapter: a Stable-Diffusion-layout pipeline, seen through what NoiseCLR needs.

:class:`DiffusionModel` wraps the five diffusers components (vae, text_encoder = CLIPTextModel,
tokenizer = CLIPTokenizer, unet = UNet2DConditionModel, scheduler) and offers:

* latents from images and back (VAE, scaled by the VAE's scaling factor);
* conditionings: the null prompt, text prompts, and *directions* -- learned token embeddings
  placed in the sequence ``[BOS, d_k, EOS, pad...]`` and fed through the frozen text encoder;
* noise predictions (``eps``) for a batch of latents under a batch of conditionings, in one
  UNet call, converted to epsilon whatever the model predicts (epsilon, v or sample).

Every size (token width, sequence length, latent channels, resolution) is read from the model,
never assumed. All modules are frozen and in eval mode; only direction embeddings ever get
gradients, through :meth:`DiffusionModel.encode_directions`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import NoiseCLRError

EMBEDDED = "embedded"
"""The ``--model`` value that names the base model shipped inside the package."""

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp64": torch.float64,
}


def embedded_model_path() -> Path:
    """Folder of the shipped base model (diffusers layout)."""
    return Path(__file__).parent / "assets" / "basemodel"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise NoiseCLRError(f"--device {device}: not a device name; use auto, cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise NoiseCLRError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on GPUs that support it (float16 otherwise) and float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        names = ", ".join(sorted({"auto", "float32", "float16", "bfloat16", "float64"}))
        raise NoiseCLRError(f"--dtype {dtype}: unknown; use one of {names}.") from None


def _quiet_transformers() -> None:
    # transformers warns about an optional torchvision backend on every CLIP import.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - logging is cosmetic
        pass
    try:
        from diffusers.utils import logging as df_logging

        df_logging.set_verbosity_error()
    except Exception:  # pragma: no cover
        pass


class DiffusionModel:
    """A frozen Stable-Diffusion-layout model with the operations NoiseCLR needs.

    Build one with :meth:`load` (``"embedded"``, a local folder or a hub id) or
    :meth:`from_pipeline` (an existing ``StableDiffusionPipeline``).
    """

    def __init__(
        self,
        *,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        scheduler: Any,
        name: str,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
    ):
        from diffusers import DDPMScheduler

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.name = name
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.unet = unet
        self.scheduler = scheduler
        for module in (vae, text_encoder, unet):
            module.requires_grad_(False)
            module.eval()
            module.to(device=self.device, dtype=self.dtype)

        config = dict(scheduler.config)
        self.prediction_type: str = config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise NoiseCLRError(
                f"model {name}: scheduler prediction_type {self.prediction_type!r} is not supported; "
                "expected epsilon, v_prediction or sample."
            )
        # The training noise schedule, whatever sampler the pipeline ships with.
        train_schedule = DDPMScheduler.from_config(config)
        self.alphas_cumprod: torch.Tensor = train_schedule.alphas_cumprod.to(torch.float64).cpu()
        self.num_train_timesteps: int = int(train_schedule.config.num_train_timesteps)
        # Stable Diffusion uses set_alpha_to_one=False: the step after t=0 has alpha_bar[0].
        self.final_alpha_cumprod: float = (
            1.0 if config.get("set_alpha_to_one", False) else float(self.alphas_cumprod[0])
        )

        self.vae_scale_factor: int = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor: float = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
        shift = getattr(vae.config, "shift_factor", None)
        self.shift_factor: float = float(shift) if shift is not None else 0.0
        self.latent_channels: int = int(unet.config.in_channels)
        sample_size = unet.config.sample_size
        sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        self.resolution: int = int(sample_size) * self.vae_scale_factor

        self.token_width: int = int(text_encoder.get_input_embeddings().embedding_dim)
        positions = int(getattr(text_encoder.config, "max_position_embeddings", tokenizer.model_max_length))
        self.max_length: int = min(int(tokenizer.model_max_length), positions)
        cross_width = unet.config.cross_attention_dim
        hidden = int(text_encoder.config.hidden_size)
        if isinstance(cross_width, int) and cross_width != hidden:
            raise NoiseCLRError(
                f"model {name}: UNet cross_attention_dim {cross_width} != text encoder width {hidden}; "
                "this is not a Stable Diffusion 1.x/2.x pipeline."
            )
        self._use_attention_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))
        null_ids = self._tokenize([""])
        self._null_ids = null_ids
        self._direction_ids, self._slot = self._direction_template(null_ids[0])
        self._null_conditioning: torch.Tensor | None = None
        self._fingerprint: dict[str, Any] | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        model: str | os.PathLike = EMBEDDED,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        revision: str | None = None,
        variant: str | None = None,
        local_files_only: bool | None = None,
    ) -> DiffusionModel:
        """Load an SD-1.x/2.x-layout pipeline: ``"embedded"``, a local folder or a hub id."""
        _quiet_transformers()
        from diffusers import StableDiffusionPipeline

        name = str(model)
        source: str | Path = name
        if name == EMBEDDED:
            source = embedded_model_path()
            if not (source / "model_index.json").is_file():
                raise NoiseCLRError(
                    f"--model embedded: the shipped base model is missing at {source}; "
                    "reinstall noiseclr or pass --model with a Stable Diffusion folder or hub id."
                )
            local_files_only = True
        elif Path(name).expanduser().exists():
            source = Path(name).expanduser()
            if not source.is_dir() or not (source / "model_index.json").is_file():
                raise NoiseCLRError(
                    f"--model {name}: not a diffusers Stable Diffusion folder (no model_index.json); "
                    "pass a folder saved with save_pretrained or a hub id."
                )
            local_files_only = True
        elif name.startswith((".", "/", "~")) or name.count("/") > 1:
            # Hub ids are "name" or "org/name"; anything else is a path that does not exist.
            raise NoiseCLRError(f"--model {name}: no such folder; pass an existing folder or a hub id like org/name.")

        device_ = resolve_device(device)
        dtype_ = resolve_dtype(dtype, device_)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch_dtype -> dtype rename in new diffusers
                pipe = StableDiffusionPipeline.from_pretrained(
                    str(source),
                    torch_dtype=dtype_,
                    revision=revision,
                    variant=variant,
                    safety_checker=None,
                    feature_extractor=None,
                    requires_safety_checker=False,
                    local_files_only=bool(local_files_only),
                )
        except NoiseCLRError:
            raise
        except (OSError, ValueError, EnvironmentError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise NoiseCLRError(
                f"--model {name}: could not load a Stable Diffusion pipeline ({first}); "
                "check the folder or hub id, and your network or HF_HUB_OFFLINE setting."
            ) from None
        display = "noiseclr/embedded-base" if name == EMBEDDED else name
        return cls.from_pipeline(pipe, name=display, device=device_, dtype=dtype_)

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        *,
        name: str | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
    ) -> DiffusionModel:
        """Wrap an existing ``StableDiffusionPipeline`` (its modules are frozen and moved)."""
        _quiet_transformers()
        if name is None:
            name = str(getattr(pipe, "name_or_path", None) or getattr(pipe.config, "_name_or_path", "") or "pipeline")
        return cls(
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            unet=pipe.unet,
            scheduler=pipe.scheduler,
            name=name,
            device=device,
            dtype=dtype,
        )

    def to_pipeline(self) -> Any:
        """The same components as a diffusers ``StableDiffusionPipeline`` (shares the modules)."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    # ---------------------------------------------------------------- speed-ups
    def optimize(
        self,
        *,
        channels_last: bool = False,
        gradient_checkpointing: bool = False,
        compile_unet: bool = False,
    ) -> DiffusionModel:
        """Opt-in speed/memory settings; all numerically equivalent to the plain path."""
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            # diffusers only checkpoints while training; the UNet stays frozen regardless.
            self.unet.train()
        if compile_unet:
            self.unet = torch.compile(self.unet, dynamic=False)
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for half-precision models; a no-op in float32/float64."""
        if self.dtype in (torch.float16, torch.bfloat16):
            return torch.autocast(device_type=self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    # --------------------------------------------------------------- latents
    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Images in [-1, 1], shape [B, 3, H, W] -> scaled latents [B, C, H/f, W/f] (float32).

        Uses the posterior mean, so the same image always gives the same latent.
        """
        out = []
        for chunk in pixels.split(batch_size):
            chunk = chunk.to(self.device, self.dtype)
            with self.autocast():
                posterior = self.vae.encode(chunk).latent_dist
            out.append(((posterior.mean.float() - self.shift_factor) * self.scaling_factor))
        return torch.cat(out)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1], float32 on the model's device."""
        out = []
        for chunk in latents.split(batch_size):
            chunk = chunk.to(self.device, self.dtype) / self.scaling_factor + self.shift_factor
            with self.autocast():
                image = self.vae.decode(chunk).sample
            out.append(image.float().clamp(-1, 1))
        return torch.cat(out)

    # ---------------------------------------------------------- conditioning
    def _tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    def _direction_template(self, null_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Token ids ``[BOS, slot, EOS, pad...]`` and the slot's position."""
        ids = null_ids.tolist()
        bos = self.tokenizer.bos_token_id
        slot = 1 if (bos is not None and ids[0] == bos) else 0
        # The slot holds a copy of the next token; its embedding is replaced by the direction.
        template = ids[:slot] + [ids[slot]] + ids[slot:]
        return torch.tensor(template[: self.max_length]), slot

    def _encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.device)
        mask = (ids != self.tokenizer.pad_token_id).long() if self._use_attention_mask else None
        with self.autocast():
            hidden = self.text_encoder(ids, attention_mask=mask)[0]
        return hidden

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text prompts -> conditionings [B, L, W] (as diffusers' pipelines compute them)."""
        return self._encode_ids(self._tokenize(prompts)).to(self.dtype)

    def null_conditioning(self) -> torch.Tensor:
        """The empty prompt's conditioning, [1, L, W]; computed once."""
        if self._null_conditioning is None:
            with torch.no_grad():
                self._null_conditioning = self._encode_ids(self._null_ids).to(self.dtype)
        return self._null_conditioning

    def encode_directions(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Direction embeddings [K, W] -> conditionings [K, L, W].

        Each row is placed after BOS in ``[BOS, d_k, EOS, pad...]``; gradients flow back to
        ``embeddings`` (the text encoder itself stays frozen).
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.token_width:
            raise ValueError(f"direction embeddings must be [K, {self.token_width}], got {tuple(embeddings.shape)}")
        count = embeddings.shape[0]
        ids = self._direction_ids.unsqueeze(0).expand(count, -1)
        with self._inject(embeddings):
            hidden = self._encode_ids(ids)
        return hidden.to(self.dtype)

    @contextlib.contextmanager
    def _inject(self, embeddings: torch.Tensor) -> Iterator[None]:
        slot = self._slot
        table = self.text_encoder.get_input_embeddings()

        def replace_slot(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            rows = embeddings.to(device=output.device, dtype=output.dtype).unsqueeze(1)
            return torch.cat([output[:, :slot], rows, output[:, slot + 1 :]], dim=1)

        handle = table.register_forward_hook(replace_slot)
        try:
            yield
        finally:
            handle.remove()

    # ------------------------------------------------------------- prediction
    def predict_eps(
        self, latents: torch.Tensor, timesteps: torch.Tensor | int, conditioning: torch.Tensor
    ) -> torch.Tensor:
        """Noise prediction for each latent under the matching conditioning row.

        ``latents`` [B, C, h, w]; ``timesteps`` an int, a 0-d tensor or [B]; ``conditioning``
        [B, L, W]. v- and sample-prediction outputs are converted to epsilon. The result is
        float32, or float64 for a float64 model (so float64 reference runs stay float64).
        """
        batch = latents.shape[0]
        t = torch.as_tensor(timesteps, device=self.device).long()
        t = t.expand(batch) if t.ndim == 0 else t.to(self.device)
        sample = latents.to(self.device, self.dtype)
        with self.autocast():
            output = self.unet(sample, t, encoder_hidden_states=conditioning.to(self.dtype), return_dict=False)[0]
        result_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        return self.output_to_eps(output.to(result_dtype), latents.to(self.device, result_dtype), t)

    def predict_eps_rows(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor | int,
        conditioning: torch.Tensor,
        max_batch: int | None = None,
    ) -> torch.Tensor:
        """:meth:`predict_eps` on many rows, in UNet calls of at most ``max_batch`` rows.

        Splitting changes memory use only: each row's prediction is the same, up to the kernels'
        batch-size-dependent rounding.
        """
        rows = latents.shape[0]
        t = torch.as_tensor(timesteps).long()
        t = t.expand(rows) if t.ndim == 0 else t
        if max_batch is None or rows <= max_batch:
            return self.predict_eps(latents, t, conditioning)
        parts = [
            self.predict_eps(latents[i : i + max_batch], t[i : i + max_batch], conditioning[i : i + max_batch])
            for i in range(0, rows, max_batch)
        ]
        return torch.cat(parts)

    def output_to_eps(self, output: torch.Tensor, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Convert the UNet's raw output to an epsilon prediction."""
        if self.prediction_type == "epsilon":
            return output
        alpha_bar = self.alphas_cumprod.to(latents.device)[timesteps.cpu()].to(latents.dtype)
        alpha_bar = alpha_bar.view(-1, *([1] * (latents.ndim - 1)))
        sqrt_a, sqrt_1ma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        if self.prediction_type == "v_prediction":
            # z = a x0 + s eps, v = a eps - s x0  =>  eps = a v + s z
            return sqrt_a * output + sqrt_1ma * latents
        return (latents - sqrt_a * output) / sqrt_1ma  # sample (x0) prediction

    def predict_eps_grid(
        self, latents: torch.Tensor, timesteps: torch.Tensor | int, conditionings: torch.Tensor
    ) -> torch.Tensor:
        """Every latent under every conditioning, in one UNet call.

        ``latents`` [B, C, h, w], ``conditionings`` [J, L, W] -> eps [J, B, C, h, w].
        Row j of the result uses conditioning j for all B latents.
        """
        count, batch = conditionings.shape[0], latents.shape[0]
        t = torch.as_tensor(timesteps, device=self.device).long()
        t = t.expand(batch) if t.ndim == 0 else t.to(self.device)
        tiled_latents = latents.unsqueeze(0).expand(count, *latents.shape).reshape(count * batch, *latents.shape[1:])
        tiled_cond = conditionings.repeat_interleave(batch, dim=0)
        eps = self.predict_eps(tiled_latents, t.repeat(count), tiled_cond)
        return eps.view(count, batch, *latents.shape[1:])

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """Forward diffusion: ``sqrt(a_t) z0 + sqrt(1 - a_t) noise`` (float32)."""
        t = torch.as_tensor(timesteps).long().cpu()
        alpha_bar = self.alphas_cumprod[t].to(device=latents.device, dtype=torch.float32)
        alpha_bar = alpha_bar.view(-1, *([1] * (latents.ndim - 1))) if alpha_bar.ndim else alpha_bar
        return alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise

    def inference_timesteps(self, num_steps: int) -> torch.Tensor:
        """Descending timesteps for ``num_steps`` denoising steps, with the model's spacing."""
        from diffusers import DDIMScheduler

        sampler = DDIMScheduler.from_config(self.scheduler.config)
        sampler.set_timesteps(num_steps)
        return sampler.timesteps.clone().long().cpu()

    # -------------------------------------------------------- identification
    def token_table(self) -> torch.Tensor:
        return self.text_encoder.get_input_embeddings().weight

    def typical_token_norm(self) -> float:
        """Mean L2 norm of the real token embeddings (used to initialise directions)."""
        with torch.no_grad():
            return float(self.token_table().float().norm(dim=1).mean())

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the text encoder's token table, stable across dtypes.

        ``shape`` and ``probe`` (row sums and squared norms of 64 spread rows, compared with a
        tolerance) survive fp32/fp16/bf16 round trips; ``sha256`` of the fp16 table tells exact
        equality.
        """
        if self._fingerprint is None:
            with torch.no_grad():
                table = self.token_table().detach().float().cpu()
                rows = torch.linspace(0, table.shape[0] - 1, steps=min(64, table.shape[0])).round().long()
                picked = table[rows]
                probe = torch.cat([picked.sum(dim=1), picked.square().sum(dim=1)])
                digest = hashlib.sha256(table.half().numpy().tobytes()).hexdigest()
            self._fingerprint = {
                "shape": list(table.shape),
                "probe": [round(float(v), 6) for v in probe],
                "sha256": digest,
            }
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """A summary of the sizes read from the model."""
        return {
            "name": self.name,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "resolution": self.resolution,
            "latent_shape": [self.latent_channels, self.latent_size, self.latent_size],
            "token_width": self.token_width,
            "max_length": self.max_length,
            "prediction_type": self.prediction_type,
            "num_train_timesteps": self.num_train_timesteps,
        }


def fingerprints_match(a: dict[str, Any], b: dict[str, Any], rtol: float = 2e-2, atol: float = 2e-3) -> bool:
    """Whether two :meth:`DiffusionModel.fingerprint` dicts name the same token table."""
    if list(a.get("shape", [])) != list(b.get("shape", [])):
        return False
    if a.get("sha256") and a.get("sha256") == b.get("sha256"):
        return True
    probe_a = torch.tensor(a.get("probe", []), dtype=torch.float64)
    probe_b = torch.tensor(b.get("probe", []), dtype=torch.float64)
    if probe_a.shape != probe_b.shape or probe_a.numel() == 0:
        return False
    return bool(torch.allclose(probe_a, probe_b, rtol=rtol, atol=atol))
