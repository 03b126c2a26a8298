"""Measuring instruments of benchmarks/speed.py: the machine, timers, memory and FLOP counters.

Pure measurement, nothing about NoiseCLR: what the script reports is built from these in speed.py.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

GIB = 2**30


# ============================================================================ environment
def load_average() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "cpu"


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / GIB:.0f} GiB)"
    if device.type == "meta":
        return "meta (shapes only)"
    return f"{os.cpu_count()}-core CPU, {torch.get_num_threads()} threads ({cpu_name()})"


def environment(device: torch.device, argv: Sequence[str]) -> dict[str, Any]:
    import diffusers
    import transformers

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/speed.py " + shlex.join(argv),
        "device": device_description(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average_start": load_average(),
        "env": {
            k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ
        },
    }


# ============================================================================ building


# ============================================================================ timing, memory, FLOPs
@contextlib.contextmanager
def strict_float32():
    """No TF32 in matmuls or cuDNN convolutions (float32 means float32 for the equivalence checks)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


# ============================================================================ measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1, cpu_times: list[float] | None = None
) -> list[float]:
    """Seconds per call: ``warmup`` untimed calls, then ``repeats`` timed ones (CUDA events on the GPU).

    On the CPU, ``cpu_times`` (if given) receives the process CPU seconds of each timed call: on a
    shared machine, CPU seconds / threads is what the call would take on idle cores.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            began, began_cpu = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - began)
            if cpu_times is not None:
                cpu_times.append(time.process_time() - began_cpu)
    return times


def summarize(times: list[float], cpu_times: list[float] | None = None) -> dict[str, Any]:
    summary = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs_s": times}
    if cpu_times:
        summary["cpu_s_median"] = statistics.median(cpu_times)
        summary["threads"] = torch.get_num_threads()
    return summary


def saved_for_backward(fn: Callable[[], Any], exclude: set[int]) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward while ``fn`` runs (storages in ``exclude`` not counted).

    Tensors saved inside non-reentrant checkpointed regions are not seen (they are recomputed).
    """
    sizes: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            sizes[storage.data_ptr()] = max(sizes.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(sizes.values())


def model_storages(model: Any) -> set[int]:
    return {
        t.untyped_storage().data_ptr()
        for module in (model.unet, model.text_encoder, model.vae)
        for t in module.state_dict().values()
    }


def model_bytes(model: Any) -> int:
    return sum(
        t.numel() * t.element_size()
        for module in (model.unet, model.text_encoder, model.vae)
        for t in module.state_dict().values()
    )


def measure_memory(fn: Callable[[], Any], device: torch.device, model: Any) -> dict[str, Any]:
    """Memory of one call: the CUDA allocator's peak on the GPU; on the CPU the activations kept
    for the backward (saved-tensor hooks; RSS says little once the allocator has cached memory)."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "kind": "cuda max_memory_allocated",
            "peak_gib": peak / GIB,
            "resident_gib": resident / GIB,
            "step_gib": (peak - resident) / GIB,
        }
    saved = saved_for_backward(fn, model_storages(model))
    return {"kind": "saved for backward", "saved_gib": saved / GIB, "weights_gib": model_bytes(model) / GIB}


def count_flops(fn: Callable[[], Any]) -> dict[str, Any]:
    """FLOPs of ``fn`` by ``FlopCounterMode``, attention through the math kernel (counted as matmuls)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    by_op = {str(op): int(value) for op, value in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int, calls: int = 10) -> dict[str, Any]:
    """Dense matmul rate of the device (median over ``repeats`` timings of ``calls`` back-to-back matmuls)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(calls):
            torch.mm(a, b, out=out)

    times = time_call(run, device, repeats, warmup=1)
    rates = [2 * size**3 * calls / t / 1e12 for t in times]
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "size": size,
        "tflops_median": statistics.median(rates),
        "tflops_max": max(rates),
        "load_average": load_average(),
    }
