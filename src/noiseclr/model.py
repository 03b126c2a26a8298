"""Model adapter: a Stable-Diffusion-layout pipeline (SD 1.x/2.x or SDXL), seen through what NoiseCLR needs.

:class:`DiffusionModel` offers latents from images and back, conditionings (the null prompt,
prompts, and directions as ``[BOS, d_k, EOS, pad...]`` through the frozen text encoder) and
noise predictions converted to epsilon. Loading lives in :mod:`noiseclr.loading`. How an SDXL
conditioning packs its pooled vector as an extra row is specified in ``docs/discovery.md``,
"The model adapter".
"""

from __future__ import annotations

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .errors import NoiseCLRError
from .loading import (  # noqa: F401 (re-exported: noiseclr.model was their home)
    EMBEDDED,
    WEIGHT_SUFFIXES,
    assemble_pipeline,
    check_float64,
    damaged_weights,
    embedded_model_path,
    float64_text_encoder_supported,
    load_failure,
    load_pipeline,
    quiet_transformers,
    resolve_device,
    resolve_dtype,
)


def pack_conditioning(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """SDXL: hidden states [B, L, W] and pooled [B, P] (P <= W) -> one conditioning [B, L + 1, W]."""
    width = hidden.shape[-1]
    row = torch.nn.functional.pad(pooled.to(hidden.dtype), (0, width - pooled.shape[-1]))
    return torch.cat([hidden, row.unsqueeze(1)], dim=1)


def unpack_conditioning(conditioning: torch.Tensor, pooled_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_conditioning`: ``(hidden [B, L, W], pooled [B, P])``."""
    return conditioning[:, :-1], conditioning[:, -1, :pooled_width]


def _table_fingerprint(table: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        table = table.detach().float().cpu()
        rows = torch.linspace(0, table.shape[0] - 1, steps=min(64, table.shape[0])).round().long()
        picked = table[rows]
        probe = torch.cat([picked.sum(dim=1), picked.square().sum(dim=1)])
        digest = hashlib.sha256(table.half().numpy().tobytes()).hexdigest()
    return {"shape": list(table.shape), "probe": [round(float(v), 6) for v in probe], "sha256": digest}


class DiffusionModel:
    """A frozen Stable-Diffusion-layout model (SD 1.x/2.x or SDXL) with the operations NoiseCLR needs.

    Build one with :meth:`load` (``"embedded"``, a local folder or a hub id) or
    :meth:`from_pipeline` (an existing ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``).
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
        text_encoder_2: Any = None,
        tokenizer_2: Any = None,
        force_zeros_for_empty_prompt: bool = True,
    ):
        if (text_encoder_2 is None) != (tokenizer_2 is None):
            raise NoiseCLRError(f"model {name}: text_encoder_2 and tokenizer_2 come together; pass both or neither.")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        check_float64(self.dtype)
        self.name = name
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self.kind: str = "sdxl" if text_encoder_2 is not None else "sd"
        self.unet = unet
        self.scheduler = scheduler
        for module in (vae, text_encoder, unet) + ((text_encoder_2,) if text_encoder_2 is not None else ()):
            module.requires_grad_(False)
            module.eval()
            module.to(device=self.device, dtype=self.dtype)
        self._read_schedule(dict(scheduler.config))
        self._read_latent_geometry()
        self._read_text_geometry(force_zeros_for_empty_prompt)
        self._prepare_sequences()

    def _read_schedule(self, config: dict[str, Any]) -> None:
        from diffusers import DDPMScheduler

        name = self.name
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

    def _read_latent_geometry(self) -> None:
        vae, unet = self.vae, self.unet
        self.vae_scale_factor: int = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor: float = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
        shift = getattr(vae.config, "shift_factor", None)
        self.shift_factor: float = float(shift) if shift is not None else 0.0
        self.latent_channels: int = int(unet.config.in_channels)
        sample_size = unet.config.sample_size
        sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        self.resolution: int = int(sample_size) * self.vae_scale_factor

    def _read_text_geometry(self, force_zeros_for_empty_prompt: bool) -> None:
        name, unet, text_encoder, tokenizer = self.name, self.unet, self.text_encoder, self.tokenizer
        self.encoders: list[tuple[Any, Any]] = [(text_encoder, tokenizer)]
        if self.text_encoder_2 is not None:
            self.encoders.append((self.text_encoder_2, self.tokenizer_2))
        self.token_widths: list[int] = [int(enc.get_input_embeddings().embedding_dim) for enc, _ in self.encoders]
        """Width of each encoder's part of a direction: [W] for SD, [W1, W2] for SDXL."""
        self.token_width: int = sum(self.token_widths)
        lengths = []
        for encoder, tok in self.encoders:
            positions = int(getattr(encoder.config, "max_position_embeddings", tok.model_max_length))
            lengths.append(min(int(tok.model_max_length), positions))
        if len(set(lengths)) > 1:
            raise NoiseCLRError(
                f"model {name}: the tokenizers' sequence lengths {lengths[0]} and {lengths[1]} differ; SDXL "
                "concatenates both encoders' hidden states, so set both tokenizers' model_max_length alike."
            )
        self.max_length: int = lengths[0]
        cross_width = unet.config.cross_attention_dim
        hiddens = [int(encoder.config.hidden_size) for encoder, _ in self.encoders]
        self.hidden_width: int = sum(hiddens)
        """Width of a conditioning row (the UNet's cross-attention width)."""
        self.pooled_width: int = 0
        self.force_zeros_for_empty_prompt: bool = False
        self._time_ids: torch.Tensor | None = None
        if self.kind == "sd" and isinstance(cross_width, int) and cross_width != hiddens[0]:
            raise NoiseCLRError(
                f"model {name}: UNet cross_attention_dim {cross_width} != text encoder width {hiddens[0]}; "
                "this is not a Stable Diffusion 1.x/2.x pipeline."
            )
        if self.kind == "sdxl":
            self._check_sdxl(cross_width, hiddens)
            self.force_zeros_for_empty_prompt = bool(force_zeros_for_empty_prompt)
            size = float(self.resolution)
            # (original H, W, crop top, crop left, target H, W), StableDiffusionXLPipeline's defaults.
            self._time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]], dtype=torch.float64)
        self.conditioning_length: int = self.max_length + (1 if self.kind == "sdxl" else 0)
        """Rows of one conditioning: L for SD, L + 1 (the pooled row) for SDXL."""
        self._use_attention_mask = self.kind == "sd" and bool(getattr(text_encoder.config, "use_attention_mask", False))

    def _prepare_sequences(self) -> None:
        """The null prompt's token ids and each encoder's ``[BOS, slot, EOS, pad...]`` template."""
        self._null_ids_all = [self._tokenize_with(tok, [""]) for _, tok in self.encoders]
        templates = [self._direction_template(ids[0], tok) for ids, (_, tok) in zip(self._null_ids_all, self.encoders)]
        self._direction_ids_all = [ids for ids, _ in templates]
        self._slots = [slot for _, slot in templates]
        self._null_ids = self._null_ids_all[0]
        self._direction_ids, self._slot = templates[0]
        self._null_conditioning: torch.Tensor | None = None
        self._fingerprints: list[dict[str, Any] | None] = [None] * len(self.encoders)

    def _check_sdxl(self, cross_width: Any, hiddens: list[int]) -> None:
        name, unet = self.name, self.unet
        if isinstance(cross_width, int) and cross_width != sum(hiddens):
            raise NoiseCLRError(
                f"model {name}: UNet cross_attention_dim {cross_width} != the text encoders' widths "
                f"{hiddens[0]} + {hiddens[1]}; this is not an SDXL pipeline."
            )
        if getattr(unet.config, "addition_embed_type", None) != "text_time":
            raise NoiseCLRError(
                f"model {name}: has two text encoders but its UNet's addition_embed_type is "
                f"{getattr(unet.config, 'addition_embed_type', None)!r}, not 'text_time'; this is not an SDXL pipeline."
            )
        self.pooled_width = int(getattr(self.text_encoder_2.config, "projection_dim", 0) or 0)
        expected = int(unet.config.addition_time_embed_dim) * 6 + self.pooled_width
        actual = int(unet.add_embedding.linear_1.in_features)
        if expected != actual:
            raise NoiseCLRError(
                f"model {name}: UNet add_embedding takes {actual} numbers but 6 time ids x "
                f"{unet.config.addition_time_embed_dim} + pooled width {self.pooled_width} = {expected}; "
                "check unet projection_class_embeddings_input_dim and text_encoder_2 projection_dim."
            )
        if not 0 < self.pooled_width <= sum(hiddens):
            raise NoiseCLRError(
                f"model {name}: pooled width {self.pooled_width} does not fit one conditioning row of width "
                f"{sum(hiddens)}; noiseclr packs the pooled vector into one row."
            )

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
        """Load an SD-1.x/2.x- or SDXL-layout pipeline: ``"embedded"``, a local folder or a hub id
        (:func:`noiseclr.loading.load_pipeline`)."""
        pipe, display, device_, dtype_ = load_pipeline(
            model, device=device, dtype=dtype, revision=revision, variant=variant, local_files_only=local_files_only
        )
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
        """Wrap an existing ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (its modules
        are frozen and moved)."""
        quiet_transformers()
        if name is None:
            name = str(getattr(pipe, "name_or_path", None) or getattr(pipe.config, "_name_or_path", "") or "pipeline")
        sdxl: dict[str, Any] = {}
        if getattr(pipe, "text_encoder_2", None) is not None or getattr(pipe, "tokenizer_2", None) is not None:
            if getattr(pipe, "text_encoder", None) is None:
                raise NoiseCLRError(
                    f"model {name}: has no first text encoder (an SDXL refiner?); directions need both of "
                    "SDXL base's text encoders -- load an SDXL base model."
                )
            sdxl = {
                "text_encoder_2": pipe.text_encoder_2,
                "tokenizer_2": pipe.tokenizer_2,
                "force_zeros_for_empty_prompt": bool(pipe.config.get("force_zeros_for_empty_prompt", True)),
            }
        return cls(
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            unet=pipe.unet,
            scheduler=pipe.scheduler,
            name=name,
            device=device,
            dtype=dtype,
            **sdxl,
        )

    def to_pipeline(self) -> Any:
        """The same components as a diffusers ``StableDiffusionPipeline`` (``StableDiffusionXLPipeline``
        for SDXL; shares the modules)."""
        return assemble_pipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt,
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
    def _tokenize_with(self, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
        return tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    def _tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self._tokenize_with(self.tokenizer, prompts)

    def _direction_template(self, null_ids: torch.Tensor, tokenizer: Any = None) -> tuple[torch.Tensor, int]:
        """Token ids ``[BOS, slot, EOS, pad...]`` and the slot's position."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        ids = null_ids.tolist()
        bos = tokenizer.bos_token_id
        slot = 1 if (bos is not None and ids[0] == bos) else 0
        if self.kind == "sd":
            # The slot holds a copy of the next token; its embedding is replaced by the direction.
            filler = ids[slot]
        else:
            # CLIP reads the pooled output at the first EOS (or, in old configs, the highest id):
            # the slot's id must be neither, so SDXL's pooled vector comes from the real EOS.
            filler = bos if bos is not None else (1 if tokenizer.eos_token_id == 0 else 0)
        template = ids[:slot] + [filler] + ids[slot:]
        return torch.tensor(template[: self.max_length]), slot

    def _encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.device)
        mask = (ids != self.tokenizer.pad_token_id).long() if self._use_attention_mask else None
        with self.autocast():
            hidden = self.text_encoder(ids, attention_mask=mask)[0]
        return hidden

    def _encode_sdxl(
        self, ids_per_encoder: Sequence[torch.Tensor], parts: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Both encoders as StableDiffusionXLPipeline.encode_prompt runs them (no clip_skip), packed."""
        hidden = []
        for index, ((encoder, _), ids) in enumerate(zip(self.encoders, ids_per_encoder)):
            inject = (
                self._inject(parts[index], encoder, self._slots[index])
                if parts is not None
                else contextlib.nullcontext()
            )
            with inject, self.autocast():
                out = encoder(ids.to(self.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
        pooled = out.text_embeds  # encoder 2's projected pooled output
        return pack_conditioning(torch.cat(hidden, dim=-1), pooled)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text prompts -> conditionings [B, L, W] (SDXL: [B, L + 1, W], packed; as diffusers' pipelines compute them)."""
        if self.kind == "sdxl":
            ids = [self._tokenize_with(tok, prompts) for _, tok in self.encoders]
            return self._encode_sdxl(ids).to(self.dtype)
        return self._encode_ids(self._tokenize(prompts)).to(self.dtype)

    def null_conditioning(self) -> torch.Tensor:
        """The empty prompt's conditioning, [1, L, W] (SDXL: [1, L + 1, W], zeros with
        ``force_zeros_for_empty_prompt``); computed once."""
        if self._null_conditioning is None:
            with torch.no_grad():
                if self.kind == "sd":
                    self._null_conditioning = self._encode_ids(self._null_ids).to(self.dtype)
                elif self.force_zeros_for_empty_prompt:
                    shape = (1, self.conditioning_length, self.hidden_width)
                    self._null_conditioning = torch.zeros(shape, device=self.device, dtype=self.dtype)
                else:
                    self._null_conditioning = self._encode_sdxl(self._null_ids_all).to(self.dtype)
        return self._null_conditioning

    def split_directions(self, embeddings: torch.Tensor) -> list[torch.Tensor]:
        """[K, W1 + W2] direction rows -> each encoder's part ([K, W] alone for SD)."""
        return list(embeddings.split(self.token_widths, dim=-1))

    def encode_directions(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Direction embeddings [K, W] -> conditionings [K, L, W] (SDXL: [K, L + 1, W1 + W2]).

        Each row is placed after BOS in ``[BOS, d_k, EOS, pad...]`` (SDXL: each encoder's part
        in its own encoder's sequence); gradients flow back to ``embeddings`` (the text
        encoders themselves stay frozen).
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.token_width:
            raise ValueError(f"direction embeddings must be [K, {self.token_width}], got {tuple(embeddings.shape)}")
        count = embeddings.shape[0]
        if self.kind == "sdxl":
            ids = [template.unsqueeze(0).expand(count, -1) for template in self._direction_ids_all]
            return self._encode_sdxl(ids, self.split_directions(embeddings)).to(self.dtype)
        ids = self._direction_ids.unsqueeze(0).expand(count, -1)
        with self._inject(embeddings):
            hidden = self._encode_ids(ids)
        return hidden.to(self.dtype)

    @contextlib.contextmanager
    def _inject(self, embeddings: torch.Tensor, encoder: Any = None, slot: int | None = None) -> Iterator[None]:
        slot = self._slot if slot is None else slot
        table = (encoder if encoder is not None else self.text_encoder).get_input_embeddings()

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
        [B, L, W] (SDXL: [B, L + 1, W], see ``docs/discovery.md``, "The model adapter"). v- and
        sample-prediction outputs are converted to epsilon. The result is float32, or float64 for a float64 model
        (so float64 reference runs stay float64).
        """
        batch = latents.shape[0]
        t = torch.as_tensor(timesteps, device=self.device).long()
        t = t.expand(batch) if t.ndim == 0 else t.to(self.device)
        sample = latents.to(self.device, self.dtype)
        hidden, extra = conditioning.to(self.dtype), {}
        if self.kind == "sdxl":
            if conditioning.ndim != 3 or conditioning.shape[1] != self.conditioning_length:
                raise ValueError(
                    f"SDXL conditionings must be [B, {self.conditioning_length}, {self.hidden_width}] "
                    f"(the pooled row last), got {tuple(conditioning.shape)}"
                )
            hidden, pooled = unpack_conditioning(hidden.to(self.device), self.pooled_width)
            time_ids = self._time_ids.to(self.device, self.dtype).expand(batch, -1)
            extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
        with self.autocast():
            output = self.unet(sample, t, encoder_hidden_states=hidden, return_dict=False, **extra)[0]
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

        ``latents`` [B, C, h, w], ``conditionings`` [J, L, W] (SDXL: [J, L + 1, W]) -> eps [J, B, C, h, w].
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

    def typical_token_norms(self) -> list[float]:
        """Mean L2 norm of each encoder's real token embeddings."""
        with torch.no_grad():
            return [float(enc.get_input_embeddings().weight.float().norm(dim=1).mean()) for enc, _ in self.encoders]

    def typical_token_norm(self) -> float:
        """Mean L2 norm of the real token embeddings (used to initialise directions).

        SDXL: the norm of a direction row whose two parts each have their encoder's typical norm.
        """
        norms = self.typical_token_norms()
        return norms[0] if len(norms) == 1 else math.sqrt(sum(n * n for n in norms))

    def scale_to_token_norms(self, rows: torch.Tensor) -> torch.Tensor:
        """[K, W] rows with each encoder's part rescaled to that encoder's typical token norm."""
        if self.kind == "sd":
            return rows / rows.norm(dim=1, keepdim=True) * self.typical_token_norm()
        parts = self.split_directions(rows)
        return torch.cat(
            [p / p.norm(dim=1, keepdim=True) * n for p, n in zip(parts, self.typical_token_norms())], dim=1
        )

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the (first) text encoder's token table, stable across dtypes.

        ``shape`` and ``probe`` (row sums and squared norms of 64 spread rows, compared with a
        tolerance) survive fp32/fp16/bf16 round trips; ``sha256`` of the fp16 table tells exact
        equality.
        """
        if self._fingerprints[0] is None:
            self._fingerprints[0] = _table_fingerprint(self.token_table())
        return self._fingerprints[0]

    def second_encoder_fingerprint(self) -> dict[str, Any] | None:
        """The same for SDXL's second text encoder; None for SD 1.x/2.x."""
        if self.kind != "sdxl":
            return None
        if self._fingerprints[1] is None:
            self._fingerprints[1] = _table_fingerprint(self.text_encoder_2.get_input_embeddings().weight)
        return self._fingerprints[1]

    def describe(self) -> dict[str, Any]:
        """A summary of the sizes read from the model."""
        info = {
            "name": self.name,
            "kind": self.kind,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "resolution": self.resolution,
            "latent_shape": [self.latent_channels, self.latent_size, self.latent_size],
            "token_width": self.token_width,
            "token_widths": list(self.token_widths),
            "max_length": self.max_length,
            "prediction_type": self.prediction_type,
            "num_train_timesteps": self.num_train_timesteps,
        }
        if self.kind == "sdxl":
            info["pooled_width"] = self.pooled_width
            info["conditioning_shape"] = [self.conditioning_length, self.hidden_width]
            info["force_zeros_for_empty_prompt"] = self.force_zeros_for_empty_prompt
        return info


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
