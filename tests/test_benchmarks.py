"""benchmarks/speed.py: the fast discovery path equals the published procedure, and the script runs.

The reference path mirrors gemlab-vt/NoiseCLR (one text-encoder + UNet call per direction,
null pass in the graph, ``-log(mean_pos / mean_neg)`` for one anchor); the fast path is
:func:`noiseclr.discovery.micro_batch_loss`. On the tiny pipeline both must give the same loss
and the same direction gradients: to 1e-8 in float64 and 1e-4 in float32.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
PUBLISHED = SCRIPT.with_name("published.py")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speed():
    return _load(SCRIPT, "noiseclr_benchmarks_speed")


@pytest.fixture(scope="module")
def published():
    return _load(PUBLISHED, "noiseclr_benchmarks_published")


@pytest.fixture(scope="module")
def tiny_pipe(speed):
    return speed.build_pipeline_for("tiny", seed=0)


def _model(speed, tiny_pipe, dtype):
    import copy

    return speed.wrap(copy.deepcopy(tiny_pipe), "tiny", "cpu", dtype)


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [(torch.float64, 1e-8), (torch.float32, 1e-4)],
    ids=["float64", "float32"],
)
def test_fast_path_equals_published_procedure(speed, tiny_pipe, dtype, tolerance):
    model = _model(speed, tiny_pipe, dtype)
    inputs = speed.micro_batch_inputs(model, batch=4, count=6, total=10, seed=3)
    errors = speed.compare_paths(model, model, inputs)
    assert errors["loss_rel_error"] <= tolerance, errors
    assert errors["grad_rel_error"] <= tolerance, errors
    assert errors["grad_norm_reference"] > 0  # a real gradient, not two zeros


def test_published_procedure_with_checkpointing_matches(speed, tiny_pipe):
    # The published config checkpoints the UNet and the text encoder; the numbers must not move.
    model = _model(speed, tiny_pipe, torch.float64)
    inputs = speed.micro_batch_inputs(model, batch=3, count=4, total=8, seed=1)
    plain = speed.run_reference(model, inputs, checkpointing=False)
    checkpointed = speed.run_reference(model, inputs, checkpointing=True)
    errors = speed.path_errors(checkpointed, plain)
    assert errors["loss_rel_error"] <= 1e-10 and errors["grad_rel_error"] <= 1e-10, errors
    assert not model.unet.training and not model.unet.is_gradient_checkpointing  # restored afterwards


def test_reference_loss_is_the_objectives_single_anchor_loss(published):
    # -log(mean_pos / mean_neg) with upper-triangle positives is the mean-normalised L_0.
    from noiseclr.objective import reference_loss

    generator = torch.Generator().manual_seed(0)
    deltas = torch.randn(5, 4, 3, 2, 2, generator=generator, dtype=torch.float64)
    positive = published._published_positive_mean(deltas[0], 0.5)
    negative = sum(published._published_negative_sum(deltas[0], deltas[j], 0.5) for j in range(1, 5)) / (4 * 4)
    published = -torch.log(positive / negative)
    assert torch.allclose(published, reference_loss(deltas, 0.5, "single-anchor"), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def tiny_run(speed, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    argv = [
        "--arch",
        "tiny",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--peak-size",
        "256",
        "--edit-steps",
        "4",
        "--also-directions",
        "3",
        "--json",
        str(out),
    ]
    results = speed.main(argv)
    return results, out


def test_script_runs_end_to_end_on_tiny(tiny_run):
    results, out = tiny_run
    assert json.loads(out.read_text())["arch"] == "tiny"
    assert results["environment"]["command"].startswith("python benchmarks/speed.py --arch tiny")
    fast = results["fast"]["J=21"]
    assert fast["median_s"] > 0 and fast["achieved_tflops"] > 0 and 0 < fast["share_of_peak"]
    assert results["fast"]["J=3"]["median_s"] > 0
    assert results["reference"]["speedup"] > 0
    assert results["check"]["fast"]["passed"], results["check"]
    edit = results["edit"]
    assert edit["total_3_directions_s"] >= edit["parts"]["edit_3_directions"]["median_s"] > 0
    assert results["projection"]["fast_s"] > 4000 * fast["median_s"] * 0.99


def test_flop_count_is_forward_plus_input_gradient_backward(speed, tiny_run):
    """Frozen weights: the backward only computes input gradients, about one forward's worth.

    The check: (counted total - counted forward of every UNet row and text-encoder call) over the
    forward of the grad rows lies in [0.8, 1.6] -- so forward + backward of the grad rows is
    ~2x their forward (it would be ~3x if the weights were trained too).
    """
    results, _ = tiny_run
    flops = results["flops"]
    assert flops["unet_forward_per_image"] > 0 and flops["fast"]["total"] > 0
    assert 0.8 <= flops["fast_backward_over_forward"] <= 1.6, flops
    forward_rows = (6 + 21 * 6) * flops["unet_forward_per_image"]
    assert 1.8 * forward_rows <= flops["fast"]["total"] <= 2.7 * forward_rows
    # The reference does the same model FLOPs plus the null pass's backward (published: in the graph).
    assert flops["fast"]["total"] < flops["reference"] < 1.2 * flops["fast"]["total"]


def test_meta_count_equals_a_real_count(speed, tiny_pipe):
    # FLOPs counted by shapes on the meta device (how SD-1.5 is counted) match a real CPU run.
    model = _model(speed, tiny_pipe, torch.float32)
    inputs = speed.micro_batch_inputs(model, batch=2, count=3)
    real = speed.count_flops(lambda: speed.fast_step(model, inputs, speed.fresh_leaf(inputs["vectors"]), "all-anchors"))
    twin = speed.meta_twin("tiny")
    shapes = speed.micro_batch_inputs(twin, batch=2, count=3)
    meta = speed.count_flops(
        lambda: speed.fast_step(twin, shapes, torch.nn.Parameter(shapes["vectors"]), "all-anchors")
    )
    assert real["total"] == meta["total"] > 0


def test_unknown_device_is_a_one_line_error(speed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["--arch", "tiny", "--device", "nonsense"])
    assert exit_info.value.code == 2
    assert "--device nonsense" in capsys.readouterr().err
