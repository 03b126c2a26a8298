"""The FLOP and memory analysis of benchmarks/speed.py: what a micro-batch costs, not how long it
takes. Model FLOPs are counted on a twin of the model (the meta device for SD-1.5, a CPU copy for
the small archs), the activation bytes one image keeps are measured with saved-tensor hooks, and
the floor at a given peak follows from the counts. None of it times anything, so it lives apart
from the timed sections of speed.py, which reports these numbers beside its timings."""

from __future__ import annotations

from typing import Any

import torch

from measuring import GIB, count_flops, model_storages, saved_for_backward
from speed_steps import build_model, fast_step, micro_batch_inputs, reference_step


def meta_twin(arch: str) -> Any:
    """The same architecture on the meta device (for counting FLOPs by shapes)."""
    return build_model(arch, device="meta", dtype="float32")


def counting_twin(arch: str) -> Any:
    """Where FLOPs are counted: the meta device for SD-1.5 (no memory, no compute); small archs
    run for real on the CPU, which is quicker than the meta device's Python shape functions
    (both give the same count, see tests/test_benchmarks.py)."""
    return meta_twin(arch) if arch == "sd15" else build_model(arch, device="cpu", dtype="float32")


def saved_bytes_per_image(model: Any) -> dict[str, Any]:
    """Bytes one image keeps for the backward of the grad UNet call (fast path, no checkpointing)."""
    inputs = micro_batch_inputs(model, 1, 1)
    conditioning = model.null_conditioning().clone().requires_grad_(True)
    noisy = model.add_noise(inputs["latents"], inputs["noise"], inputs["timestep"])
    total = saved_for_backward(
        lambda: model.predict_eps(noisy, inputs["timestep"], conditioning), model_storages(model)
    )
    return {"bytes_per_image": total, "gib_per_image": total / GIB, "dtype": str(model.dtype).replace("torch.", "")}


# ============================================================================ FLOP analysis
def flop_analysis(arch: str, batch: int, count: int, variant: str, full: bool = False) -> dict[str, Any]:
    """Model FLOPs of a twin of ``arch``: UNet forward per image, the fast and the reference micro-batch.

    The reference's cost is linear in J (each direction adds one identical text-encoder + UNet
    forward and backward), so it is counted at J = 2 and 3 and extrapolated exactly. ``full``
    adds the hardware FLOPs with gradient-checkpointing recompute.
    """
    twin = counting_twin(arch)
    inputs = micro_batch_inputs(twin, batch, count)
    null = twin.null_conditioning()
    one = micro_batch_inputs(twin, 1, 1)

    def unet_forward() -> None:
        with torch.no_grad():
            twin.predict_eps(one["latents"], 500, null)

    def text_forward() -> None:
        with torch.no_grad():
            twin.encode_directions(one["vectors"][:1])

    def fast() -> None:
        fast_step(twin, inputs, torch.nn.Parameter(inputs["vectors"]), variant)

    def fast_checkpointed() -> None:
        twin.unet.enable_gradient_checkpointing()
        twin.unet.train()
        try:
            fast()
        finally:
            twin.unet.disable_gradient_checkpointing()
            twin.unet.eval()

    def reference(drawn: int, checkpointing: bool) -> int:
        few = dict(inputs, drawn=inputs["drawn"][:drawn])
        return count_flops(lambda: reference_step(twin, few, torch.nn.Parameter(inputs["vectors"]), checkpointing))[
            "total"
        ]

    def reference_at(checkpointing: bool) -> int:
        two, three = reference(2, checkpointing), reference(3, checkpointing)
        return two + (count - 2) * (three - two)

    result: dict[str, Any] = {
        "unet_forward_per_image": count_flops(unet_forward)["total"],
        "text_encoder_per_direction": count_flops(text_forward)["total"],
        "fast": count_flops(fast),
        "reference": reference_at(False),
    }
    if full:
        result["fast_with_checkpointing"] = count_flops(fast_checkpointed)["total"]
        result["reference_with_checkpointing"] = reference_at(True)
    grad_rows = count * batch
    forward = (batch + grad_rows) * result["unet_forward_per_image"] + count * result["text_encoder_per_direction"]
    # Backward of the grad rows over their forward: ~1 with frozen weights (input gradients only), ~2 with weight gradients.
    result["fast_backward_over_forward"] = (result["fast"]["total"] - forward) / (
        grad_rows * result["unet_forward_per_image"]
    )
    return result


def flop_floor(flops: dict[str, Any], peak_tflops: float) -> dict[str, float]:
    """The seconds the counted FLOPs take at ``peak_tflops`` (what ``--device meta`` reports)."""
    peak = peak_tflops * 1e12
    return {
        "peak_tflops": peak_tflops,
        "fast_s": flops["fast"]["total"] / peak,
        "fast_with_checkpointing_s": flops["fast_with_checkpointing"] / peak,
        "reference_s": flops["reference_with_checkpointing"] / peak,
    }
