"""The table benchmarks/speed.py prints: its results dictionary as aligned text."""

from __future__ import annotations

from typing import Any

from measuring import GIB


# ============================================================================ report
def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def _fmt_flop(flop: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flop >= scale:
            return f"{flop / scale:.3f} {unit}"
    return f"{flop:.0f} FLOP"


def _memory_notes(memory: dict[str, Any]) -> list[str]:
    if "peak_gib" in memory:
        return [f"peak {memory['peak_gib']:.2f} GiB ({memory['resident_gib']:.2f} resident before the step)"]
    if "saved_gib" in memory:
        return [f"activations kept {memory['saved_gib']:.2f} GiB + weights {memory['weights_gib']:.2f} GiB"]
    return []


def _cost_rows(results: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, str, str]]:
    """FLOPs, the floor, the matmul peak and the activations kept."""
    rows: list[tuple[str, str, str]] = []
    flops = results["flops"]
    rows.append(
        (
            "UNet forward, 1 image",
            _fmt_flop(flops["unet_forward_per_image"]),
            f"text encoder per direction {_fmt_flop(flops['text_encoder_per_direction'])}",
        )
    )
    rows.append(
        (
            f"fast micro-batch FLOPs (N={settings['batch']}, J={settings['directions']})",
            _fmt_flop(flops["fast"]["total"]),
            f"backward/forward of the grad rows {flops['fast_backward_over_forward']:.2f}"
            + (
                f"; with checkpointing recompute {_fmt_flop(flops['fast_with_checkpointing'])}"
                if "fast_with_checkpointing" in flops
                else ""
            ),
        )
    )
    recompute = flops.get("reference_with_checkpointing")
    rows.append(
        (
            "reference micro-batch FLOPs",
            _fmt_flop(flops["reference"]),
            f"with checkpointing recompute {_fmt_flop(recompute)}" if recompute else "",
        )
    )
    if "floor" in results:
        floor = results["floor"]
        rows.append(
            (
                f"floor at {floor['peak_tflops']:.0f} TFLOP/s",
                _fmt_s(floor["fast_s"]),
                f"with checkpointing {_fmt_s(floor['fast_with_checkpointing_s'])}",
            )
        )
    if "peak" in results:
        peak = results["peak"]
        rows.append(
            (
                f"matmul peak ({peak['dtype']} {peak['size']}^3)",
                f"{peak['tflops_median']:.3f} TFLOP/s",
                f"load {peak['load_average']}",
            )
        )
    if "gib_per_image" in results.get("saved_bytes", {}):
        kept = results["saved_bytes"]["bytes_per_image"]
        rows.append(
            (
                "activations kept per image (grad call)",
                f"{kept / 2**20:.1f} MiB",
                f"{results['saved_bytes']['dtype']}; x {settings['batch'] * settings['directions']} rows = "
                f"{kept * settings['batch'] * settings['directions'] / GIB:.1f} GiB without checkpointing",
            )
        )
    return rows


def _timing_rows(results: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Measured micro-batch times (fast variants, the optimizer step, the published procedure)."""
    rows: list[tuple[str, str, str]] = []
    for name, entry in results.get("fast", {}).items():
        if "error" in entry:
            rows.append((f"fast micro-batch N={settings['batch']}, {name}", "ERROR", entry["error"]))
            continue
        notes = [f"load {entry['load_average']}"]
        if "cpu_s_median" in entry:
            notes.append(f"CPU {entry['cpu_s_median']:.2f} s on {entry['threads']} threads")
        notes.extend(_memory_notes(entry.get("memory", {})))
        if settings.get("gradient_checkpointing") and "saved_gib" in entry.get("memory", {}):
            notes.append("checkpointed: block inputs only")
        if "achieved_tflops" in entry:
            share = f" = {entry['share_of_peak'] * 100:.1f}% of peak" if "share_of_peak" in entry else ""
            notes.append(f"{entry['achieved_tflops']:.3f} TFLOP/s{share}")
        rows.append((f"fast micro-batch N={settings['batch']}, {name}", _fmt_s(entry["median_s"]), "; ".join(notes)))
    if "optimizer_step" in results:
        rows.append(("AdamW step (K=100)", _fmt_s(results["optimizer_step"]["median_s"]), ""))
    if "error" in results.get("reference", {}):
        rows.append(("reference micro-batch (published procedure)", "ERROR", results["reference"]["error"]))
    elif "reference" in results:
        ref = results["reference"]
        notes = [
            f"load {ref['load_average']}",
            f"checkpointing {'on (kept: block inputs only)' if ref['checkpointing'] else 'off'}",
        ]
        if "cpu_s_median" in ref:
            notes.append(f"CPU {ref['cpu_s_median']:.2f} s")
        notes.extend(_memory_notes(ref.get("memory", {})))
        rows.append(("reference micro-batch (published procedure)", _fmt_s(ref["median_s"]), "; ".join(notes)))
        rows.append(("  + its per-micro-batch VAE encode", _fmt_s(ref["vae_encode"]["median_s"]), ""))
        if "speedup" in ref:
            rows.append(
                (
                    "speed-up fast vs reference",
                    f"{ref['speedup']:.1f}x",
                    f"{ref['speedup_with_vae_encode']:.1f}x incl. VAE encode",
                )
            )
    return rows


def _check_rows(results: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The fast paths checked against the float32 reference."""
    rows: list[tuple[str, str, str]] = []
    if "check" in results:
        check = results["check"]
        if "error" in check:
            rows.append(("check fast vs reference", "ERROR", check["error"]))
        for key in ("fast", "fast_float32"):
            if "error" in check.get(key, {}):
                rows.append((f"check {key.replace('_', ' ')}", "ERROR", check[key]["error"]))
            elif key in check:
                item = check[key]
                rows.append(
                    (
                        f"check {key.replace('_', ' ')} ({item['dtype']}) vs float32 reference",
                        "PASS" if item["passed"] else "FAIL",
                        f"loss rel {item['loss_rel_error']:.2e} (<= {item['loss_threshold']:g}), grad rel "
                        f"{item['grad_rel_error']:.2e} (<= {item['grad_threshold']:g}), grad cos {item['grad_cosine']:.5f}",
                    )
                )
        if "loss_rel_error" in check.get("reference_half", {}):
            item = check["reference_half"]
            rows.append(
                (
                    f"  floor: published procedure in {item['dtype']}",
                    "",
                    f"loss rel {item['loss_rel_error']:.2e}, grad rel {item['grad_rel_error']:.2e}; "
                    f"|delta|/|eps| = {check['delta_over_eps']:.3f}",
                )
            )
    return rows


def _edit_rows(results: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Editing one image and the projected full discovery."""
    rows: list[tuple[str, str, str]] = []
    if "error" in results.get("edit", {}):
        rows.append(("edit 1 image", "ERROR", results["edit"]["error"]))
    elif "edit" in results:
        edit = results["edit"]
        parts = edit["parts"]
        detail = ", ".join(f"{k} {_fmt_s(v['median_s'])}" for k, v in parts.items())
        rows.append((f"edit 1 image {edit['resolution']} px, 1 direction", _fmt_s(edit["total_1_direction_s"]), detail))
        rows.append(
            (
                f"edit 1 image {edit['resolution']} px, 3 directions",
                _fmt_s(edit["total_3_directions_s"]),
                f"load {edit['load_average']}",
            )
        )
    if "projection" in results:
        projection = results["projection"]
        rows.append(("full default discovery (K=100, 1000x4)", _fmt_s(projection["fast_s"]), "projected, fast path"))
        if "reference_s" in projection:
            rows.append(("  the same, reference procedure", _fmt_s(projection["reference_s"]), "projected"))
    return rows


def table(results: dict[str, Any]) -> str:
    env = results["environment"]
    settings = results["settings"]
    rows = [row for part in (_cost_rows, _timing_rows, _check_rows, _edit_rows) for row in part(results, settings)]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [
        f"{env['command']}",
        f"{env['date']}  {env['device']}  torch {env['torch']}  diffusers {env['diffusers']}  "
        f"load {env['load_average_start']} -> {env.get('load_average_end', '?')}",
    ]
    lines += [f"{name:<{width}}  {value:>{value_width}}  {notes}".rstrip() for name, value, notes in rows]
    return "\n".join(lines)
