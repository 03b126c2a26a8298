"""Every CLI subcommand end to end on a tiny model, and the CLI's handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noiseclr.cli import main
from noiseclr.directions import Directions


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(6):
        # Smooth blobs rather than white noise: closer to what a VAE sees.
        base = rng.random((8, 8, 3))
        image = Image.fromarray((base * 255).astype(np.uint8)).resize((64, 64), Image.Resampling.BICUBIC)
        image.save(folder / f"img{index}.png")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir, image_dir) -> Path:
    run = tmp_path_factory.mktemp("run") / "faces"
    code = main(
        [
            "discover",
            "--model",
            str(tiny_model_dir),
            "--images",
            str(image_dir),
            "--out",
            str(run),
            "--num-directions",
            "4",
            "--steps",
            "3",
            "--batch",
            "3",
            "--micro-batches",
            "1",
            "--negatives",
            "2",
            "--device",
            "cpu",
            "--domain",
            "faces",
            "--checkpoint-every",
            "2",
        ]
    )
    assert code == 0
    return run


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("noiseclr: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_discover_writes_run_folder(run_dir):
    for name in ("directions.safetensors", "settings.json", "loss.csv", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "checkpoints").iterdir())
    directions = Directions.load(run_dir / "directions.safetensors")
    assert directions.count == 4 and directions.domain == "faces"
    assert json.loads((run_dir / "settings.json").read_text())


def test_discover_resume_extends(capsys, tiny_model_dir, image_dir, tmp_path):
    args = [
        "discover",
        "--model",
        tiny_model_dir,
        "--images",
        image_dir,
        "--out",
        tmp_path / "r",
        "--num-directions",
        "3",
        "--batch",
        "2",
        "--micro-batches",
        "1",
        "--device",
        "cpu",
    ]
    assert run_cli(capsys, *args, "--steps", "2")[0] == 0
    code, _, err = run_cli(capsys, *args, "--steps", "2")
    assert_one_line_error(code, err, "--resume")
    code, out, _ = run_cli(capsys, *args, "--steps", "4", "--resume")
    assert code == 0 and "4 steps" in out


def test_info_and_json(capsys, run_dir):
    code, out, _ = run_cli(capsys, "info", run_dir / "directions.safetensors")
    assert code == 0 and "count: 4" in out and "faces" in out
    code, out, _ = run_cli(capsys, "info", run_dir / "directions.safetensors", "--json")
    info = json.loads(out)
    assert info["count"] == 4 and info["token_width"] == 32


def test_export_textual_inversion_roundtrip(capsys, run_dir, tmp_path):
    code, out, _ = run_cli(
        capsys, "export", run_dir / "directions.safetensors", "--out", tmp_path / "ti"
    )  # the default format
    assert code == 0 and "one file per direction" in out
    original = Directions.load(run_dir / "directions.safetensors")
    files = sorted((tmp_path / "ti").glob("*.safetensors"))
    assert len(files) == 4 and not list((tmp_path / "ti").rglob("*.bin"))
    assert torch.equal(torch.cat([Directions.load(f).vectors for f in files]), original.vectors)
    # The published code's all-in-one file only under its own format; info accepts it too.
    code, out, _ = run_cli(
        capsys,
        "export",
        run_dir / "directions.safetensors",
        "--format",
        "noiseclr-published",
        "--out",
        tmp_path / "pub",
    )
    assert code == 0 and torch.equal(Directions.load(tmp_path / "pub" / "learned_embeds.bin").vectors, original.vectors)
    code, out, _ = run_cli(capsys, "info", tmp_path / "pub" / "learned_embeds.safetensors")
    assert code == 0 and "textual-inversion" in out


def test_edit_writes_images(capsys, tiny_model_dir, run_dir, image_dir, tmp_path):
    spec = f"{run_dir / 'directions.safetensors'}:1=3@0:0.5"
    code, out, _ = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--image",
        image_dir / "img0.png",
        image_dir / "img1.png",
        "--direction",
        spec,
        "--direction",
        f"{run_dir / 'directions.safetensors'}:2=-2",
        "--out",
        tmp_path / "edits",
        "--steps",
        "4",
        "--device",
        "cpu",
        "--inversion",
        "ddpm",
    )
    assert code == 0, out
    for name in ("img0-edited.png", "img0-reconstruction.png", "img1-edited.png", "comparison.png"):
        assert (tmp_path / "edits" / name).is_file()
    assert Image.open(tmp_path / "edits" / "img0-edited.png").size == (64, 64)


def test_generate(capsys, tiny_model_dir, run_dir, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "generate",
        "--model",
        tiny_model_dir,
        "--prompt",
        "a cat",
        "--prompt",
        "",
        "--direction",
        f"{run_dir / 'directions.safetensors'}:0=2",
        "--out",
        tmp_path / "gen",
        "--steps",
        "3",
        "--device",
        "cpu",
    )
    assert code == 0
    assert (tmp_path / "gen" / "000.png").is_file() and (tmp_path / "gen" / "001-plain.png").is_file()


def test_explore_gallery(capsys, tiny_model_dir, run_dir, image_dir, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "explore",
        "--model",
        tiny_model_dir,
        "--directions",
        run_dir / "directions.safetensors",
        "--images",
        image_dir,
        "--out",
        tmp_path / "gallery",
        "--scales",
        "-2",
        "0",
        "2",
        "--num-images",
        "2",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--directions-per-pass",
        "3",
    )
    assert code == 0
    strips = sorted((tmp_path / "gallery").glob("direction-*.png"))
    assert len(strips) == 4
    page = (tmp_path / "gallery" / "index.html").read_text()
    assert page.count("<figure") == 4 and "direction-003.png" in page


@pytest.fixture(scope="module")
def measured_file(run_dir, tmp_path_factory) -> Path:
    """The run's directions with edit defaults as the demo or the bench store them."""
    directions = Directions.load(run_dir / "directions.safetensors")
    directions.edit_defaults = [
        {"scale": 2.0 + k, "start": 0.0, "end": 1.0, "inversion": "ddpm", "steps": 3} for k in range(directions.count)
    ]
    directions.path = None
    return directions.save(tmp_path_factory.mktemp("measured") / "directions.safetensors")


def test_edit_applies_a_direction_as_it_was_measured(capsys, tiny_model_dir, measured_file, image_dir, tmp_path):
    # The demo measured with DDPM inversion at few steps; an edit with the CLI's defaults (DDIM, 50)
    # did something else. Without --inversion/--steps, the stored ones apply.
    base = ["edit", "--model", tiny_model_dir, "--image", image_dir / "img0.png", "--device", "cpu"]
    code, out, err = run_cli(capsys, *base, "--direction", f"{measured_file}:1", "--out", tmp_path / "stored")
    assert code == 0, err
    assert "DDPM inversion, 3 steps" in out and "x3" in out
    code, _, err = run_cli(
        capsys,
        *base,
        "--direction",
        f"{measured_file}:1=3",
        "--inversion",
        "ddpm",
        "--steps",
        "3",
        "--out",
        tmp_path / "explicit",
    )
    assert code == 0, err
    stored = np.asarray(Image.open(tmp_path / "stored" / "img0-edited.png"))
    explicit = np.asarray(Image.open(tmp_path / "explicit" / "img0-edited.png"))
    assert np.array_equal(stored, explicit)
    code, out, _ = run_cli(
        capsys, *base, "--direction", f"{measured_file}:1", "--inversion", "ddim", "--out", tmp_path / "ddim"
    )
    assert code == 0 and "DDIM inversion, 3 steps" in out  # a flag still wins


def test_explore_defaults_to_the_stored_scales_and_its_commands_run_from_the_gallery(
    capsys, tiny_model_dir, measured_file, image_dir, tmp_path, monkeypatch
):
    import shlex

    gallery = tmp_path / "gallery"
    code, _, err = run_cli(
        capsys,
        "explore",
        "--model",
        tiny_model_dir,
        "--directions",
        measured_file,
        "--images",
        image_dir,
        "--out",
        gallery,
        "--num-images",
        "1",
        "--indices",
        "1",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert Image.open(gallery / "direction-001.png").width > 5 * 64  # input + 5 columns: 0, +-3, +-6
    page = (gallery / "index.html").read_text()
    assert "DDPM inversion" in page and "3 steps" in page
    command = html_unescape(page.split("<figure")[1].split("<code>")[1].split("</code>")[0])
    assert command.startswith("noiseclr edit") and "--inversion ddpm --steps 3" in command
    monkeypatch.chdir(gallery)
    code, _, err = run_cli(capsys, *shlex.split(command)[1:], "--device", "cpu")
    assert code == 0, err
    assert (gallery / "edited" / "img0-edited.png").is_file()


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_help_through_python_m():
    result = subprocess.run([sys.executable, "-m", "noiseclr", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "discover" in result.stdout


# ------------------------------------------------------------------ bad input
def test_bad_direction_spec(capsys, tiny_model_dir, image_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--image",
        image_dir / "img0.png",
        "--direction",
        "nofile",
        "--out",
        tmp_path,
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--direction nofile")


def test_direction_index_out_of_range(capsys, tiny_model_dir, run_dir, image_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--image",
        image_dir / "img0.png",
        "--direction",
        f"{run_dir / 'directions.safetensors'}:9=1",
        "--out",
        tmp_path,
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "9", "0..3")


def test_directions_from_another_model(capsys, tiny_v_model_dir, run_dir, image_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_v_model_dir,
        "--image",
        image_dir / "img0.png",
        "--direction",
        f"{run_dir / 'directions.safetensors'}:0=1",
        "--out",
        tmp_path,
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "another model")


def test_missing_image_folder(capsys, tiny_model_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "discover",
        "--model",
        tiny_model_dir,
        "--images",
        tmp_path / "nope",
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--images", "no such folder")


def test_missing_model_folder(capsys, image_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "discover",
        "--model",
        "./no/such/model",
        "--images",
        image_dir,
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--model ./no/such/model")


def test_unreadable_directions_file(capsys, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    code, _, err = run_cli(capsys, "info", bad)
    assert_one_line_error(code, err, "bad.safetensors")


def test_unwritable_out_folder(capsys, tiny_model_dir, run_dir, image_dir, tmp_path):
    # A folder below a regular file cannot be created, even by root.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--image",
        image_dir / "img0.png",
        "--direction",
        f"{run_dir / 'directions.safetensors'}:0=1",
        "--out",
        blocker / "x",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--out", "cannot write")


def test_out_is_a_file(capsys, run_dir, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, _, err = run_cli(capsys, "export", run_dir / "directions.safetensors", "--out", target)
    assert_one_line_error(code, err, "--out", "not a folder")


def test_bad_dtype(capsys, image_dir, tmp_path, tiny_model_dir):
    code, _, err = run_cli(
        capsys,
        "discover",
        "--model",
        tiny_model_dir,
        "--images",
        image_dir,
        "--out",
        tmp_path / "run",
        "--dtype",
        "float8",
    )
    assert_one_line_error(code, err, "--dtype float8")


def test_sigterm_is_handled_like_ctrl_c(tmp_path, tiny_model_dir, image_dir):
    # Slurm, Kubernetes and `timeout` stop jobs with SIGTERM: the run must checkpoint and resume.
    import os
    import signal
    import time

    run = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "noiseclr.cli",
        "discover",
        "--model",
        str(tiny_model_dir),
        "--images",
        str(image_dir),
        "--out",
        str(run),
        "--num-directions",
        "4",
        "--steps",
        "100000",
        "--batch",
        "3",
        "--micro-batches",
        "1",
        "--negatives",
        "2",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--checkpoint-every",
        "100000",
    ]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
    )
    deadline = time.monotonic() + 120
    while not (run / "loss.csv").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)  # loss.csv appears after 10 steps
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "terminated (SIGTERM)" in err and "--resume" in err and "Traceback" not in err
    checkpoints = sorted((run / "checkpoints").glob("step-*.safetensors"))
    assert len(checkpoints) == 1
    done = int(checkpoints[0].stem.split("-")[1])
    assert done >= 10
    code = main(
        [
            "discover",
            "--model",
            str(tiny_model_dir),
            "--images",
            str(image_dir),
            "--out",
            str(run),
            "--num-directions",
            "4",
            "--steps",
            str(done + 2),
            "--batch",
            "3",
            "--micro-batches",
            "1",
            "--negatives",
            "2",
            "--device",
            "cpu",
            "--checkpoint-every",
            "100000",
            "--resume",
        ]
    )
    assert code == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == done + 2


def test_held_interrupts_arrive_after_the_block():
    import os
    import signal

    from noiseclr.interrupts import Terminated, hold_interrupts, terminate_as_interrupt

    finished = []
    with pytest.raises(Terminated):
        with terminate_as_interrupt(), hold_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            finished.append("step applied")
    assert finished == ["step applied"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


# ------------------------------------------------------------------ first run: order of checks, messages
def test_version(capsys):
    from noiseclr.version import __version__

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"noiseclr {__version__}"


def test_version_and_import_do_not_load_torch():
    # Lazy imports (noiseclr/__init__.py): a fresh interpreter answers --version without torch.
    code = (
        "import sys\nfrom noiseclr.cli import main\nimport noiseclr\n"
        "try:\n    main(['--version'])\nexcept SystemExit as stop:\n    assert stop.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "noiseclr.Directions  # a public name still resolves on first use\n"
        "assert 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("noiseclr ")


def test_failed_commands_leave_no_output_folder(capsys, tiny_model_dir, run_dir, image_dir, tmp_path):
    out = tmp_path / "out"
    spec = f"{run_dir / 'directions.safetensors'}:0=1"
    cases = [
        (["edit", "--model", tiny_model_dir, "--image", tmp_path / "missing.png", "--direction", spec], "--image"),
        (["edit", "--model", "./no/such/model", "--image", image_dir / "img0.png", "--direction", spec], "--model"),
        (["generate", "--model", "./no/such/model", "--prompt", "x", "--direction", spec], "--model"),
        (["discover", "--model", tiny_model_dir, "--images", tmp_path / "nowhere"], "--images"),
        (["discover", "--model", "./no/such/model", "--images", image_dir], "--model"),
        (["discover", "--model", tiny_model_dir, "--images", image_dir, "--batch", "7"], "--images"),
    ]
    for argv, needle in cases:
        code, _, err = run_cli(capsys, *argv, "--out", out, "--device", "cpu")
        assert_one_line_error(code, err, needle)
        assert not out.exists(), argv


def test_images_are_checked_before_the_model(capsys, tiny_model_dir, run_dir, image_dir, tmp_path, monkeypatch):
    # A hub id that cannot load (offline here) must not hide a wrong --images / --image.
    code, _, err = run_cli(
        capsys,
        "discover",
        "--model",
        "someorg/not-a-model",
        "--images",
        tmp_path / "nowhere",
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--images", "no such folder")
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        "someorg/not-a-model",
        "--image",
        tmp_path / "nope.png",
        "--direction",
        f"{run_dir / 'directions.safetensors'}:0=1",
        "--out",
        tmp_path / "e",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--image", "no such file")
    code, _, err = run_cli(
        capsys,
        "explore",
        "--model",
        "someorg/not-a-model",
        "--directions",
        run_dir / "directions.safetensors",
        "--images",
        tmp_path / "nowhere",
        "--out",
        tmp_path / "g",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--images", "no such folder")


def test_hub_id_load_error_is_self_contained(capsys, image_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "discover",
        "--model",
        "someorg/not-a-model",
        "--images",
        image_dir,
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, "--model someorg/not-a-model", "HF_HUB_OFFLINE", "local folder")
    line = err.strip().splitlines()[-1].lower()
    assert "stacktrace" not in line and "stack trace" not in line and "above" not in line


def test_load_failure_messages_say_what_happened_and_what_to_do():
    from noiseclr.model import load_failure

    def chained(*names_and_texts):
        exc = None
        for name, text in reversed(names_and_texts):
            new = type(name, (Exception,), {})(text)
            new.__cause__ = exc
            exc = new
        return exc

    outer = (
        "OSError",
        "Cannot load model org/x: the model is not fully cached locally. Please check out the root cause in the stacktrace above.",
    )
    network = load_failure(chained(outer, ("ConnectError", "[Errno -2] Name or service not known")), "org/x")
    assert "could not reach the Hugging Face hub" in network and "not in the local cache" in network
    missing = load_failure(chained(outer, ("RepositoryNotFoundError", "404 Client Error")), "org/x")
    assert "no model by that id" in missing and "check the id" in missing
    other = load_failure(chained(outer, ("ValueError", "something odd")), "org/x")
    for message in (network, missing, other):
        assert message.startswith("--model org/x: ") and "stacktrace" not in message.lower()
        assert "--model embedded" in message
    local = load_failure(ValueError("no file named unet/diffusion_pytorch_model.safetensors"), "./m", hub=False)
    assert "no file named" in local and "save_pretrained" in local and "hub" not in local


def test_edit_image_folder_is_named_as_a_folder(capsys, tiny_model_dir, run_dir, image_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "edit",
        "--model",
        tiny_model_dir,
        "--image",
        image_dir,
        "--direction",
        f"{run_dir / 'directions.safetensors'}:0=1",
        "--out",
        tmp_path / "e",
        "--device",
        "cpu",
    )
    assert_one_line_error(code, err, f"--image {image_dir}", "is a folder", "image files")
    assert "no such file" not in err


def test_ctrl_c_in_discover_prints_one_line(capsys, tiny_model_dir, image_dir, tmp_path, monkeypatch):
    from noiseclr import discovery

    real, calls = discovery.micro_batch_loss, {"n": 0}

    def interrupt_in_step_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(discovery, "micro_batch_loss", interrupt_in_step_two)
    code, _, err = run_cli(
        capsys,
        "discover",
        "--model",
        tiny_model_dir,
        "--images",
        image_dir,
        "--out",
        tmp_path / "r",
        "--num-directions",
        "3",
        "--batch",
        "2",
        "--micro-batches",
        "1",
        "--steps",
        "4",
        "--device",
        "cpu",
    )
    assert code == 130
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    assert "step-000001" in lines[0] and "--resume" in lines[0]


def test_ctrl_c_in_a_discovery_inside_another_command_prints_one_line(capsys, monkeypatch, run_dir):
    # demo and bench run discovery inside them: its warning is the one line, main adds none.
    import logging

    from noiseclr import cli
    from noiseclr.discovery import DiscoveryInterrupted

    def interrupted(args):
        message = (
            "interrupted after step 3; checkpoint RUN/checkpoints/step-000003.safetensors; continue with --resume."
        )
        logging.getLogger("noiseclr").warning(message)
        raise DiscoveryInterrupted(message, Path("RUN/checkpoints/step-000003.safetensors"), 3)

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    code, _, err = run_cli(capsys, "info", run_dir / "directions.safetensors")
    assert code == 130
    assert len([line for line in err.splitlines() if "interrupted" in line]) == 1, err


def test_float64_is_refused_where_transformers_cannot_run_it(capsys, tiny_model_dir, image_dir, tmp_path, monkeypatch):
    # transformers 4 (CI's oldest-dependencies run) cannot run CLIP in float64: one line, not a traceback.
    from noiseclr import loading as model_module

    monkeypatch.setattr(model_module, "float64_text_encoder_supported", lambda: False)
    code, _, err = run_cli(
        capsys,
        "discover",
        "--model",
        tiny_model_dir,
        "--images",
        image_dir,
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
        "--dtype",
        "float64",
    )
    assert_one_line_error(code, err, "--dtype float64", "--dtype float32")
    assert not (tmp_path / "run").exists()


def test_old_flag_spellings_still_work_with_a_note(capsys):
    from noiseclr.cli import build_parser

    args = build_parser().parse_args(["discover", "--images", "x", "--out", "y", "--directions", "7"])
    assert args.num_directions == 7 and "--directions is now --num-directions" in capsys.readouterr().err
    args = build_parser().parse_args(["demo", "--directions", "5"])
    assert args.directions == 5 and "--directions is now --num-directions" in capsys.readouterr().err
    args = build_parser().parse_args(["demo", "--num-directions", "5"])
    assert args.directions == 5 and "is now" not in capsys.readouterr().err
