"""Loading a pipeline: ``"embedded"``, a local diffusers folder or a hub id, on a device and dtype.

Also the one place a diffusers pipeline object is assembled (:func:`assemble_pipeline`, used by
:meth:`noiseclr.model.DiffusionModel.to_pipeline` and :func:`noiseclr.architecture.build_pipeline`),
and the one-line messages for a model that fails to load (:func:`damaged_weights`,
:func:`load_failure`).
"""

from __future__ import annotations

import json
import os
import warnings
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


def float64_text_encoder_supported() -> bool:
    """Whether the installed transformers' CLIP text encoder runs in float64.

    transformers 4 builds CLIP's causal mask with ``torch.full(..., finfo(float64).min)`` in the
    default float32, which torch refuses ("value cannot be converted to type float without
    overflow"): seen with 4.40 on torch 2.13, and the same line is in every 4.x release up to
    4.57. transformers 5 builds the mask another way.
    """
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def check_float64(dtype: torch.dtype) -> None:
    if dtype == torch.float64 and not float64_text_encoder_supported():
        import transformers

        raise NoiseCLRError(
            f"--dtype float64: the CLIP text encoder of transformers {transformers.__version__} cannot run in float64 "
            "(its attention mask overflows); use --dtype float32, or transformers 5 or newer for float64."
        )


def quiet_transformers() -> None:
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


# ------------------------------------------------------------------ the pipeline object
def pipeline_class(sdxl: bool) -> tuple[Any, dict[str, Any]]:
    """The diffusers pipeline class and the keyword arguments noiseclr always gives it: no safety
    checker (SD) and no watermarker (SDXL) -- both would change the images."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if sdxl:
        return StableDiffusionXLPipeline, {"add_watermarker": False}
    return StableDiffusionPipeline, {
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def assemble_pipeline(
    *,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    unet: Any,
    scheduler: Any,
    text_encoder_2: Any = None,
    tokenizer_2: Any = None,
    force_zeros_for_empty_prompt: bool = True,
) -> Any:
    """A ``StableDiffusionPipeline`` of these components (``StableDiffusionXLPipeline`` with a second
    text encoder); the pipeline shares the modules."""
    sdxl = text_encoder_2 is not None
    cls, extra = pipeline_class(sdxl)
    parts = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "scheduler": scheduler}
    if sdxl:
        parts.update(
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        )
    return cls(**parts, **extra)


# ------------------------------------------------------------------ loading
def load_pipeline(
    model: str | os.PathLike = EMBEDDED,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    revision: str | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
) -> tuple[Any, str, torch.device, torch.dtype]:
    """``(pipeline, display name, device, dtype)`` for :meth:`noiseclr.model.DiffusionModel.load`.

    SDXL is recognised by model_index.json (``_class_name`` with ``XL`` or a ``text_encoder_2``).
    """
    quiet_transformers()
    name = str(model)
    source, local_files_only = model_source(name, local_files_only)
    device_ = resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_)
    check_float64(dtype_)
    sdxl = _is_sdxl_index(_model_index(source, name, revision, local_files_only))
    pipeline_class_, extra = pipeline_class(sdxl)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch_dtype -> dtype rename in new diffusers
            pipe = pipeline_class_.from_pretrained(
                str(source),
                torch_dtype=dtype_,
                revision=revision,
                variant=variant,
                local_files_only=bool(local_files_only),
                **extra,
            )
    except NoiseCLRError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken folder fails in many library-specific ways
        if isinstance(source, Path):
            damaged = damaged_weights(source)
            if damaged is not None:
                raise NoiseCLRError(
                    f"--model {name}: {damaged[0]} cannot be loaded ({damaged[1]}); restore that file or re-save "
                    "the pipeline with save_pretrained."
                ) from None
        elif not isinstance(exc, (OSError, ValueError)):
            raise
        what = "an SDXL" if sdxl else "a Stable Diffusion"
        raise NoiseCLRError(load_failure(exc, name, what, hub=not isinstance(source, Path))) from None
    display = "noiseclr/embedded-base" if name == EMBEDDED else name
    return pipe, display, device_, dtype_


def model_source(name: str, local_files_only: bool | None) -> tuple[str | Path, bool | None]:
    """Where ``--model NAME`` loads from (a folder, or the hub id itself) and whether only local files may be used."""
    if name == EMBEDDED:
        source = embedded_model_path()
        if not (source / "model_index.json").is_file():
            raise NoiseCLRError(
                f"--model embedded: the shipped base model is missing at {source}; "
                "reinstall noiseclr or pass --model with a Stable Diffusion folder or hub id."
            )
        return source, True
    if Path(name).expanduser().exists():
        source = Path(name).expanduser()
        if not source.is_dir() or not (source / "model_index.json").is_file():
            raise NoiseCLRError(
                f"--model {name}: not a diffusers Stable Diffusion folder (no model_index.json); "
                "pass a folder saved with save_pretrained or a hub id."
            )
        return source, True
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        # Hub ids are "name" or "org/name"; anything else is a path that does not exist.
        raise NoiseCLRError(f"--model {name}: no such folder; pass an existing folder or a hub id like org/name.")
    return name, local_files_only


def _model_index(source: str | Path, name: str, revision: str | None, local_files_only: bool | None) -> dict[str, Any]:
    """model_index.json of a folder or hub id ({} when a hub id's cannot be read: loading reports it)."""
    if isinstance(source, Path):
        try:
            return json.loads((source / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NoiseCLRError(
                f"--model {name}: cannot read model_index.json ({exc}); re-save the pipeline with save_pretrained."
            ) from None
    try:
        from diffusers import DiffusionPipeline

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hub-client deprecation chatter; the config is all we want
            return dict(DiffusionPipeline.load_config(name, revision=revision, local_files_only=bool(local_files_only)))
    except Exception:  # noqa: BLE001 - from_pretrained gives the user-facing error
        return {}


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def damaged_weights(folder: Path) -> tuple[Path, str] | None:
    """The first weight file of a pipeline folder that cannot be read safely, and why (None: all fine).

    Called after a load failed, to name the file: safetensors headers are checked without reading
    the tensors, other files with ``torch.load(weights_only=True)``, which refuses pickled code.
    """
    from safetensors import SafetensorError, safe_open

    from .fileio import UnsafePickleError, read_tensor_file

    for path in sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as handle:
                    handle.keys()
            except (SafetensorError, OSError, ValueError) as exc:
                return path, f"damaged or not a safetensors file: {str(exc).splitlines()[0][:120]}"
            continue
        try:
            read_tensor_file(path)
        except UnsafePickleError:
            return (
                path,
                "a pickle holding Python objects: noiseclr never unpickles those, as that can run code; use safetensors weights",
            )
        except NoiseCLRError:
            return path, "damaged or not a torch weights file"
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _without_traceback_pointers(text: str) -> str:
    # diffusers ends with "Please check out the root cause in the stacktrace above.", which the
    # one-line error does not show: drop such sentences.
    sentences = [
        part
        for part in text.replace("\n", " ").split(". ")
        if not any(word in part.lower() for word in ("stacktrace", "stack trace", "traceback"))
    ]
    return ". ".join(sentences).strip().rstrip(".") or text.strip()


def load_failure(exc: BaseException, name: str, what: str = "a Stable Diffusion", *, hub: bool = True) -> str:
    """The one-line message for a pipeline that failed to load: what went wrong and what to do,
    self-contained (the exception chain is read here, never shown)."""
    chain = _chain(exc)
    kinds = " ".join(type(e).__name__ for e in chain)
    text = " ".join(str(e) for e in chain).lower()
    local = "pass --model with a local folder saved with save_pretrained, or --model embedded"
    if hub and ("OfflineModeIsEnabled" in kinds or "offline mode is enabled" in text):
        return (
            f"--model {name}: not in the local Hugging Face cache, and downloads are off (HF_HUB_OFFLINE is set); "
            f"unset HF_HUB_OFFLINE to download it, or {local}."
        )
    if hub and any(k in kinds for k in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError")):
        return (
            f"--model {name}: the Hugging Face hub has no model by that id that you may read (misspelt, private "
            f"or gated); check the id (org/name), log in to the hub (hf auth login) for a gated one, or {local}."
        )
    network = (
        "ConnectError",
        "ConnectionError",
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "gaierror",
        "MaxRetryError",
    )
    if hub and (
        any(k in kinds for k in network) or "name or service not known" in text or "network is unreachable" in text
    ):
        return (
            f"--model {name}: could not reach the Hugging Face hub, and the model is not in the local cache; "
            f"connect to the network and retry, or download it elsewhere and {local}."
        )
    reason = next((_without_traceback_pointers(str(e)) for e in chain if str(e).strip()), type(exc).__name__)
    reason = reason.splitlines()[0][:300]
    fix = (
        "check the hub id, your network and HF_HUB_OFFLINE, or " + local
        if hub
        else "re-save the pipeline with save_pretrained"
    )
    return f"--model {name}: could not load {what} pipeline ({reason}); {fix}."


def _is_sdxl_index(index: dict[str, Any]) -> bool:
    entry = index.get("text_encoder_2")
    has_second = isinstance(entry, (list, tuple)) and bool(entry) and entry[0] is not None
    return "XL" in str(index.get("_class_name", "")) or has_second
