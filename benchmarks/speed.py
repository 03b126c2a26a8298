#!/usr/bin/env python
"""Speed benchmarks of NoiseCLR discovery and editing, fast path against the published procedure.

One command per architecture (random weights built from configs; they cost the same time as
trained ones, nothing is downloaded)::

    python benchmarks/speed.py --arch sd15 --device cuda --repeats 5 --json sd15-h100.json
    python benchmarks/speed.py --arch base --device cpu --repeats 5 --also-directions 8 --json base-cpu.json
    python benchmarks/speed.py --arch tiny --device cpu --repeats 1          # smoke test (seconds)
    python benchmarks/speed.py --arch sd15 --device meta                     # FLOP analysis only, instant

Sections (``--skip`` any of them):

* ``peak``      -- the device's matmul peak, measured in the same run (bf16 8192^3 on a GPU,
  float32 2048^3 on the CPU; median of several), the yardstick for "share of peak";
* ``fast``      -- one discovery micro-batch (N images, J drawn directions, backward into the
  directions) through :func:`noiseclr.discovery.micro_batch_loss`: one no-grad null UNet call
  + ONE batched grad call for all J*N rows; bf16 autocast on the GPU, SDPA attention, optional
  ``--channels-last`` / ``--compile`` / ``--gradient-checkpointing``. Median seconds, peak
  memory, model FLOPs (``FlopCounterMode``), achieved TFLOP/s and share of the measured peak;
* ``reference`` -- the same micro-batch the way the published code (gemlab-vt/NoiseCLR,
  ``core/trainer.py`` + ``core/loss.py``) computes it: float32, no autocast, the whole token
  table trainable (so the null pass stays in the graph), the text encoder and the UNet called
  once per direction (J+1 calls of N rows), gradient checkpointing on (its default config), and
  ``-log(mean_pos / mean_neg)`` for one anchor; the per-micro-batch VAE encode it also does is
  timed separately. Same run, same inputs; speed-up = reference / fast;
* ``check``     -- fast vs reference on identical inputs (single-anchor): relative error of the
  loss and ``|g_fast - g_ref| / |g_ref|`` of the direction gradients, with dtype thresholds;
* ``edit``      -- one image at the model's resolution: encode, 50-step DDIM inversion, 50-step
  edit with 1 and with 3 directions (:func:`noiseclr.editing.regenerate`), decode;
* ``projection``-- the full default discovery (K=100, 1000 steps x 4 micro-batches): 4000 x the
  micro-batch + 1000 x the optimizer step + encoding 100 images x 2 flips once.

``--device meta`` counts FLOPs only (no timing): per-image UNet forward, the fast micro-batch
(with and without gradient-checkpointing recompute) and the reference micro-batch, and the
floor they imply at ``--peak-tflops``. ``--saved-bytes`` measures the activation memory one
image keeps for the backward pass of the grad call (saved-tensor hooks, parameters excluded).

FLOPs are *model* FLOPs (no recompute), counted with ``FlopCounterMode`` on a twin of the model
(meta device for SD-1.5, a CPU copy for the small archs) with the math attention kernel, so
attention is counted as matmuls on every device (the CPU's fused kernel is not in the counter's
table).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

# The published procedure's replica lives beside this script (benchmarks/published.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measuring import (  # noqa: E402
    environment,
    load_average,
    matmul_peak,
    measure_memory,
    strict_float32,
    summarize,
    time_call,
)
from published import published_training_mode, reference_micro_batch_loss  # noqa: E402
from speed_flops import (  # noqa: E402, F401  (re-exported: tests use speed.count_flops and speed.meta_twin)
    count_flops,
    counting_twin,
    flop_analysis,
    flop_floor,
    meta_twin,
    saved_bytes_per_image,
)
from speed_steps import (  # noqa: E402, F401  (re-exported: tests and callers use them as speed.*)
    ARCHS,
    build_model,
    build_pipeline_for,
    fast_step,
    micro_batch_inputs,
    reference_step,
    wrap,
)
from speed_table import table  # noqa: E402

SECTIONS = ("peak", "fast", "reference", "check", "edit", "projection")
PAPER_DEFAULTS = {"directions_total": 100, "steps": 1000, "micro_batches": 4, "images": 100}
"""The published configuration: K=100 directions, 1000 AdamW steps of 4 micro-batches."""

CHECK_THRESHOLDS = {
    # fast-path dtype -> (loss relative error, gradient relative error) against the float32 reference
    torch.float64: (1e-8, 1e-8),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-2, 2e-2),
}
H100_BF16_DENSE_TFLOPS = 790.0
"""bf16 dense matmul rate measured on the lent H100s (8192^3); used by ``--device meta``."""


def fresh_leaf(vectors: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(vectors.detach().clone().float())


# ============================================================================ the two paths, compared
def _leaf_for(model: Any, vectors: torch.Tensor) -> torch.nn.Parameter:
    # float64 models get float64 directions, so a float64 comparison stays float64 end to end.
    leaf = fresh_leaf(vectors)
    return torch.nn.Parameter(leaf.detach().double()) if model.dtype == torch.float64 else leaf


def run_fast(model: Any, inputs: dict[str, Any], checkpointing: bool = False) -> tuple[float, torch.Tensor]:
    """Single-anchor loss and the drawn rows' gradients [J, W] (float64, CPU) through the fast path."""
    vectors = _leaf_for(model, inputs["vectors"])
    with published_training_mode(model, checkpointing):
        loss = fast_step(model, inputs, vectors, "single-anchor")
    return float(loss), vectors.grad[inputs["drawn"].to(vectors.device)].double().cpu()


def run_reference(
    model: Any, inputs: dict[str, Any], checkpointing: bool = False
) -> tuple[float, torch.Tensor, dict[str, float]]:
    """The same through the published procedure (plus its ``delta_over_eps``)."""
    vectors = _leaf_for(model, inputs["vectors"])
    stats: dict[str, float] = {}
    loss = reference_micro_batch_loss(
        model,
        vectors,
        inputs["latents"],
        inputs["timestep"],
        inputs["noise"],
        inputs["drawn"],
        checkpointing=checkpointing,
        stats=stats,
    )
    loss.backward()
    return float(loss.detach()), vectors.grad[inputs["drawn"].to(vectors.device)].double().cpu(), stats


def path_errors(candidate: tuple[float, torch.Tensor], reference: tuple[float, torch.Tensor]) -> dict[str, float]:
    """Relative error of the loss and ``|g - g_ref| / |g_ref|`` of the direction gradients."""
    (loss, grad), (ref_loss, ref_grad) = candidate[:2], reference[:2]
    return {
        "loss": loss,
        "loss_reference": ref_loss,
        "loss_abs_error": abs(loss - ref_loss),
        "loss_rel_error": abs(loss - ref_loss) / max(abs(ref_loss), 1e-30),
        "grad_rel_error": float((grad - ref_grad).norm() / ref_grad.norm().clamp_min(1e-30)),
        "grad_cosine": float(torch.nn.functional.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0)),
        "grad_norm_reference": float(ref_grad.norm()),
    }


def compare_paths(
    fast_model: Any, reference_model: Any, inputs: dict[str, Any], checkpointing: bool = False
) -> dict[str, float]:
    """Fast path (single-anchor) on ``fast_model`` vs the published procedure on ``reference_model``, same inputs."""
    return path_errors(run_fast(fast_model, inputs), run_reference(reference_model, inputs, checkpointing))


# ============================================================================ editing
def edit_benchmark(model: Any, steps: int, repeats: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    """Encode, DDIM-invert, edit with 1 and 3 directions, decode: one image at the model's resolution."""
    from noiseclr.directions import Directions
    from noiseclr.discovery import initial_directions
    from noiseclr.editing import regenerate
    from noiseclr.terms import DirectionTerm
    from noiseclr.inversion import invert

    device = model.device
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, model.resolution, model.resolution, generator=generator) * 2 - 1
    directions = Directions.for_model(model, initial_directions(model, 3, seed))
    terms = [DirectionTerm(directions, index, scale=3.0) for index in range(3)]
    state: dict[str, Any] = {}

    def encode() -> None:
        state["latents"] = model.encode_images(pixels)

    def inversion() -> None:
        state["inversion"] = invert(model, state["latents"], "ddim", steps, progress=False)

    def edit_with(count: int) -> Callable[[], None]:
        def run() -> None:
            state[f"edited{count}"] = regenerate(model, state["inversion"], [terms[:count]], progress=False)

        return run

    def decode() -> None:
        model.decode_latents(state["edited1"][0])

    parts = {}
    for name, fn in (
        ("encode", encode),
        ("invert", inversion),
        ("edit_1_direction", edit_with(1)),
        ("edit_3_directions", edit_with(3)),
        ("decode", decode),
    ):
        cpu: list[float] = []
        parts[name] = summarize(time_call(fn, device, repeats, warmup, cpu), cpu)
    common = parts["encode"]["median_s"] + parts["invert"]["median_s"] + parts["decode"]["median_s"]
    return {
        "steps": steps,
        "resolution": model.resolution,
        "parts": parts,
        "total_1_direction_s": common + parts["edit_1_direction"]["median_s"],
        "total_3_directions_s": common + parts["edit_3_directions"]["median_s"],
        "load_average": load_average(),
    }


# ============================================================================ the run
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=ARCHS, default="base", help="architecture (random weights): sd15, base, tiny")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or meta (FLOP analysis only)")
    parser.add_argument("--dtype", default="auto", help="fast path dtype: auto = bf16 on the GPU, float32 on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1; 3 with --compile)")
    parser.add_argument("--batch", type=int, default=6, help="N images per micro-batch (paper: 6)")
    parser.add_argument("--directions", type=int, default=21, help="J drawn directions: anchor + negatives (paper: 21)")
    parser.add_argument(
        "--also-directions", type=int, nargs="*", default=[], help="extra fast-path timings with these J"
    )
    parser.add_argument("--variant", default="all-anchors", help="loss variant timed on the fast path")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (fast path and edits)")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="fast path with UNet gradient checkpointing"
    )
    parser.add_argument("--reference-checkpointing", choices=("on", "off"), default="on", help="published config: on")
    parser.add_argument("--edit-steps", type=int, default=50)
    parser.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak (8192 GPU, 2048 CPU)")
    parser.add_argument(
        "--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS, help="peak assumed by --device meta"
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=SECTIONS, help="leave out a section (repeatable)"
    )
    parser.add_argument("--saved-bytes", action="store_true", help="also measure activation bytes kept per image")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    return parser.parse_args(list(argv))


_STARTED = time.perf_counter()


def _log(message: str) -> None:
    print(f"[speed {time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    from noiseclr.model import resolve_device, resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("meta") if args.device == "meta" else resolve_device(args.device)
    results: dict[str, Any] = {"environment": environment(device, argv), "arch": args.arch}
    results["settings"] = {"batch": args.batch, "directions": args.directions, "variant": args.variant}
    _log(f"counting FLOPs of {args.arch} ({'meta device' if args.arch == 'sd15' else 'CPU twin'})")
    flops = flop_analysis(args.arch, args.batch, args.directions, args.variant, full=device.type == "meta")
    results["flops"] = flops
    if device.type == "meta":
        results["floor"] = flop_floor(flops, args.peak_tflops)
        results["environment"]["load_average_end"] = load_average()
        return results

    dtype = resolve_dtype(args.dtype, device)
    optimize = args.channels_last or args.compile or args.gradient_checkpointing
    warmup = args.warmup if args.warmup is not None else (3 if args.compile else 1)
    checkpointing = args.reference_checkpointing == "on"
    results["settings"].update(timed_settings(args, dtype, warmup, checkpointing))
    if "peak" not in args.skip:
        results["peak"] = peak_section(args, device)
    # The reference runs float32 without the fast path's flags: its own copy when anything differs.
    need_reference = "reference" not in args.skip or "check" not in args.skip
    separate_reference = need_reference and (dtype != torch.float32 or optimize)
    model, inputs, reference_pipe, built = build_section(args, device, dtype, separate_reference, optimize)
    results.update(built)
    if args.saved_bytes:
        _log("activation bytes per image")
        results["saved_bytes"] = guarded(device, lambda: saved_bytes_per_image(model))
    if "fast" not in args.skip:
        results.update(fast_section(model, inputs, args, warmup, device, flops, results.get("peak")))
    reference_model = None
    if need_reference:
        reference_model = wrap(reference_pipe, args.arch, device, torch.float32) if separate_reference else model
        reference_pipe = None
    if "reference" not in args.skip:
        fast_s = _fast_seconds(results, args)
        results["reference"] = reference_section(reference_model, inputs, args, checkpointing, device, flops, fast_s)
    if "check" not in args.skip:
        results["check"] = check_section(model, reference_model, inputs, dtype, checkpointing, args, device)
    if separate_reference and reference_model is not None:
        reference_model = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "edit" not in args.skip:
        results["edit"] = edit_section(model, args, warmup, device)
    if "projection" not in args.skip and _fast_seconds(results, args) is not None:
        results["projection"] = projection_section(results, args)
    results["environment"]["load_average_end"] = load_average()
    return results


def timed_settings(args: argparse.Namespace, dtype: torch.dtype, warmup: int, checkpointing: bool) -> dict[str, Any]:
    """The settings a timed run adds to ``--batch``, ``--directions`` and ``--variant``."""
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "channels_last": args.channels_last,
        "compile": args.compile,
        "gradient_checkpointing": args.gradient_checkpointing,
        "warmup": warmup,
        "repeats": args.repeats,
        "reference_checkpointing": checkpointing,
        "threads": torch.get_num_threads(),
    }


def _fast_seconds(results: dict[str, Any], args: argparse.Namespace) -> float | None:
    """The fast path's median at the main J, if it was timed."""
    return results.get("fast", {}).get(f"J={args.directions}", {}).get("median_s")


def peak_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The device's matmul peak: bf16 on the GPU, float32 on the CPU."""
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    _log(f"matmul peak ({peak_dtype}, {size}^3)")
    return matmul_peak(device, peak_dtype, size, max(3, args.repeats))


def build_section(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype, separate_reference: bool, optimize: bool
) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    """The model, its micro-batch inputs, the reference's own pipeline copy (or None) and what to report of them."""
    _log(f"building {args.arch} (random weights)")
    began = time.perf_counter()
    pipe = build_pipeline_for(args.arch, args.seed)
    reference_pipe = copy.deepcopy(pipe) if separate_reference else None
    model = wrap(pipe, args.arch, device, dtype)
    built: dict[str, Any] = {"build_s": time.perf_counter() - began, "model": model.describe()}
    built["architecture"] = {
        "unet_block_out_channels": list(model.unet.config.block_out_channels),
        "vae_block_out_channels": list(model.vae.config.block_out_channels),
        "text_layers": int(model.text_encoder.config.num_hidden_layers),
        "parameters_millions": {
            name: round(sum(p.numel() for p in getattr(model, name).parameters()) / 1e6, 2)
            for name in ("unet", "text_encoder", "vae")
        },
    }
    inputs = micro_batch_inputs(model, args.batch, args.directions, seed=args.seed)
    if optimize:
        model.optimize(
            channels_last=args.channels_last,
            gradient_checkpointing=args.gradient_checkpointing,
            compile_unet=args.compile,
        )
    return model, inputs, reference_pipe, built


def fast_section(
    model: Any,
    inputs: dict[str, Any],
    args: argparse.Namespace,
    warmup: int,
    device: torch.device,
    flops: dict[str, Any],
    peak: dict[str, Any] | None,
) -> dict[str, Any]:
    """The fast path at each J (``fast``) and one AdamW step over the direction table (``optimizer_step``)."""
    fast: dict[str, Any] = {}
    for count in [args.directions, *args.also_directions]:
        _log(f"fast path: N={args.batch}, J={count}")
        step_inputs = (
            inputs if count == args.directions else micro_batch_inputs(model, args.batch, count, seed=args.seed)
        )
        fast[f"J={count}"] = guarded(
            device, lambda: time_fast(model, step_inputs, args, warmup, device, count == args.directions)
        )
    main_entry = fast[f"J={args.directions}"]
    if "median_s" in main_entry:
        main_entry["model_tflop"] = flops["fast"]["total"] / 1e12
        main_entry["achieved_tflops"] = flops["fast"]["total"] / main_entry["median_s"] / 1e12
        if peak is not None:
            main_entry["share_of_peak"] = main_entry["achieved_tflops"] / peak["tflops_median"]
    # One AdamW step over the K x W table, as the trainer takes it every `micro_batches` micro-batches.
    vectors = fresh_leaf(inputs["vectors"])
    vectors.grad = torch.randn_like(vectors)
    optimizer = torch.optim.AdamW([vectors], lr=1e-3, weight_decay=1e-2)
    return {"fast": fast, "optimizer_step": summarize(time_call(optimizer.step, device, args.repeats, warmup=1))}


def reference_section(
    reference_model: Any,
    inputs: dict[str, Any],
    args: argparse.Namespace,
    checkpointing: bool,
    device: torch.device,
    flops: dict[str, Any],
    fast_s: float | None,
) -> dict[str, Any]:
    """The published procedure on the same micro-batch, and its speed-up over the fast path (``fast_s``)."""
    _log(
        f"reference path: {args.directions + 1} UNet calls of N={args.batch}, float32, checkpointing {args.reference_checkpointing}"
    )
    entry = guarded(device, lambda: time_reference(reference_model, inputs, args, checkpointing, device))
    entry["model_tflop"] = flops["reference"] / 1e12
    if fast_s and "median_s" in entry:
        entry["speedup"] = entry["median_s"] / fast_s
        entry["speedup_with_vae_encode"] = (entry["median_s"] + entry["vae_encode"]["median_s"]) / fast_s
    return entry


def check_section(
    model: Any,
    reference_model: Any,
    inputs: dict[str, Any],
    dtype: torch.dtype,
    checkpointing: bool,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Fast path against the published procedure on the same inputs (:func:`equivalence_check`)."""
    _log("equivalence check: fast vs reference (single-anchor, same inputs)")
    return guarded(device, lambda: equivalence_check(model, reference_model, inputs, dtype, checkpointing, args.arch))


def edit_section(model: Any, args: argparse.Namespace, warmup: int, device: torch.device) -> dict[str, Any]:
    """One image inverted and edited (:func:`edit_benchmark`)."""
    _log(f"edit: one {model.resolution} px image, {args.edit_steps}-step DDIM inversion + edit")
    return guarded(device, lambda: edit_benchmark(model, args.edit_steps, args.repeats, warmup, args.seed))


def projection_section(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The full default discovery from the measured micro-batch, optimizer step and encode."""
    fast_s = _fast_seconds(results, args)
    micro = PAPER_DEFAULTS["steps"] * PAPER_DEFAULTS["micro_batches"]
    encode_s = results.get("edit", {}).get("parts", {}).get("encode", {}).get("median_s")
    # Latents are encoded once: every image and its mirror image (hflip on).
    cache = 2 * PAPER_DEFAULTS["images"] * encode_s if encode_s is not None else 0.0
    # K=100 draws min(20, K-1) + 1 = 21 directions per micro-batch: the measured micro-batch.
    projection = {
        "micro_batches": micro,
        "fast_s": micro * fast_s + PAPER_DEFAULTS["steps"] * results["optimizer_step"]["median_s"] + cache,
        "latent_cache_s": cache,
    }
    ref = results.get("reference", {})
    if "median_s" in ref:
        projection["reference_s"] = micro * (ref["median_s"] + ref["vae_encode"]["median_s"])
    return projection


def guarded(device: torch.device, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a section; an out-of-memory error becomes ``{"error": ...}`` and the run goes on."""
    try:
        return fn()
    except torch.OutOfMemoryError as error:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        first = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        _log(f"out of memory: {first}")
        return {"error": f"out of memory ({first[:160]})"}


def time_fast(
    model: Any, inputs: dict[str, Any], args: argparse.Namespace, warmup: int, device: torch.device, with_memory: bool
) -> dict[str, Any]:
    vectors = fresh_leaf(inputs["vectors"])

    def step() -> None:
        fast_step(model, inputs, vectors, args.variant)

    cpu: list[float] = []
    entry = summarize(time_call(step, device, args.repeats, warmup, cpu), cpu)
    entry["load_average"] = load_average()
    if with_memory:
        entry["memory"] = measure_memory(step, device, model)
    return entry


def time_reference(
    model: Any, inputs: dict[str, Any], args: argparse.Namespace, checkpointing: bool, device: torch.device
) -> dict[str, Any]:
    vectors = fresh_leaf(inputs["vectors"])

    def step() -> None:
        reference_step(model, inputs, vectors, checkpointing)

    memory = measure_memory(step, device, model)
    cpu: list[float] = []
    entry = summarize(time_call(step, device, args.repeats, 0, cpu), cpu)  # the memory call was the warm-up
    entry.update(load_average=load_average(), checkpointing=checkpointing, memory=memory)
    generator = torch.Generator().manual_seed(args.seed)
    pixels = (torch.rand(args.batch, 3, model.resolution, model.resolution, generator=generator) * 2 - 1).to(device)

    def vae_encode() -> None:  # published: vae.encode(pixels).latent_dist.sample() every micro-batch
        with torch.no_grad():
            model.vae.encode(pixels).latent_dist.sample()

    cpu = []
    entry["vae_encode"] = summarize(time_call(vae_encode, device, args.repeats, 1, cpu), cpu)
    return entry


def equivalence_check(
    model: Any, reference_model: Any, inputs: dict[str, Any], dtype: torch.dtype, checkpointing: bool, arch: str
) -> dict[str, Any]:
    """Fast vs published procedure on identical inputs (single-anchor), all against the float32 reference.

    * ``fast``: the fast path as timed (model dtype, bf16 autocast on the GPU);
    * ``fast_float32`` (half-precision runs only): the fast path in float32 on the reference's
      weights -- the algorithm check at full scale, with the float32 threshold;
    * ``reference_half`` (half-precision runs only): the published procedure itself in the
      fast path's dtype -- the rounding floor any half-precision run has on these inputs.
    TF32 is off throughout, so float32 is float32.
    """
    with strict_float32():
        reference = run_reference(reference_model, inputs, checkpointing)
        fast = run_fast(model, inputs)
        loss_limit, grad_limit = CHECK_THRESHOLDS.get(dtype, (2e-2, 2e-2))
        name = str(dtype).replace("torch.", "")
        result: dict[str, Any] = {"delta_over_eps": reference[2].get("delta_over_eps"), "reference_dtype": "float32"}

        def verdict(errors: dict[str, float], dtype_name: str, limits: tuple[float, float]) -> dict[str, Any]:
            ok = errors["loss_rel_error"] <= limits[0] and errors["grad_rel_error"] <= limits[1]
            return {
                **errors,
                "dtype": dtype_name,
                "loss_threshold": limits[0],
                "grad_threshold": limits[1],
                "passed": bool(ok),
            }

        result["fast"] = verdict(path_errors(fast, reference), name, (loss_limit, grad_limit))
        if reference_model is not model and dtype != torch.float32:
            device = reference_model.device

            def fast_float32() -> dict[str, Any]:
                # Checkpointed like the reference, so 126 float32 rows fit where the reference fits.
                fast32 = run_fast(reference_model, inputs, checkpointing=checkpointing)
                return verdict(path_errors(fast32, reference), "float32", CHECK_THRESHOLDS[torch.float32])

            def reference_half() -> dict[str, Any]:
                half = wrap(copy.deepcopy(reference_model.to_pipeline()), arch, device, dtype)
                return {**path_errors(run_reference(half, inputs, checkpointing), reference), "dtype": name}

            result["fast_float32"] = guarded(device, fast_float32)
            result["reference_half"] = guarded(device, reference_half)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from noiseclr.errors import NoiseCLRError

    try:
        results = run(args, argv)
    except NoiseCLRError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
