"""``noiseclr demo`` end to end at tiny size, with a TEST DOUBLE of the factor reader."""

from __future__ import annotations

import html
import json

import torch

from noiseclr import demo as demo_module
from noiseclr import reuse as reuse_module
from noiseclr.cli import main
from noiseclr.demo import DemoSettings, summary_table
from noiseclr.directions import Directions
from noiseclr.errors import NoiseCLRError
from noiseclr.measure import DirectionRecord
from noiseclr.world.factors import domain_factors, factor_names


class BandReader:
    """TEST DOUBLE of ``noiseclr.world.readers.FactorReader``: factor j is the quantised mean of one
    colour channel over the j-th horizontal band of the 128x128 image."""

    def __init__(self, domain: str):
        self.factors = domain_factors(domain)

    def predict_indices(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, 128, 128)
        count = len(self.factors)
        columns = []
        for j, factor in enumerate(self.factors):
            band = images[:, j % 3, (j * 128) // count : ((j + 1) * 128) // count].float().mean(dim=(1, 2))
            columns.append(((band + 1) * 0.5 * len(factor.values) * 7).floor().long() % len(factor.values))
        return torch.stack(columns, dim=1)


TINY = [
    "--num-directions",
    "3",
    "--steps",
    "2",
    "--images",
    "6",
    "--naming-images",
    "3",
    "--gallery-images",
    "2",
    "--edit-steps",
    "3",
    "--batch",
    "3",
]


def run_demo_cli(capsys, model_dir, out, *extra):
    code = main(["demo", "--model", str(model_dir), "--device", "cpu", "--out", str(out), *TINY, *map(str, extra)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_info(capsys, path):
    code = main(["info", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_demo_end_to_end(capsys, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_module, "load_reader", lambda domain, *a, **k: BandReader(domain))
    out = tmp_path / "demo"
    code, printed, err = run_demo_cli(capsys, tiny_model_dir, out)
    assert code == 0, err
    for name in (
        "directions.safetensors",
        "summary.md",
        "summary.json",
        "gallery/index.html",
        "gallery/direction-000.png",
        "test-images/face-000.png",
        "train-images/face-005.png",
        "run/loss.csv",
    ):
        assert (out / name).is_file(), name
    # Progress and the newcomer's explanation.
    for needle in (
        "[1/4]",
        "[2/4]",
        "[3/4]",
        "[4/4]",
        "What you are looking at",
        "WITHOUT any text",
        "Columns:",
        "gallery/index.html",
        "noiseclr edit",
        "Try next",
        "name (what it changes)",
    ):
        assert needle in printed, needle
    summary = json.loads((out / "summary.json").read_text())
    assert summary["named"] and len(summary["directions"]) == 3
    directions = Directions.load(out / "directions.safetensors")
    assert directions.names == [row["name"] for row in summary["directions"]]
    for row, defaults in zip(summary["directions"], directions.edit_defaults):
        assert row["main_factor"] in factor_names("faces")
        # One shared calibrated strength, and how it was measured.
        assert defaults["strength"] == DemoSettings().strength == row["edit_strength"] and "scale" not in defaults
        assert defaults["inversion"] == "ddpm" and defaults["steps"] == int(TINY[TINY.index("--edit-steps") + 1])
        assert row["name"] in printed and row["strip"] in printed
        assert {"target_value", "minus_value", "plus_change", "minus_change"} <= set(row)
    assert directions.settings["factor_annotations"]["domain"] == "faces"
    assert html.escape(directions.names[0]) in (out / "gallery" / "index.html").read_text()
    assert "| # |" in (out / "summary.md").read_text()
    code, info, _ = run_info(capsys, out / "directions.safetensors")
    assert code == 0 and "factor_annotations=(noiseclr demo, 3 directions" in info and directions.names[0] in info
    assert max(len(line) for line in info.splitlines()) < 1500
    # A first run says nothing about --resume; the explanation is in terminal-width lines.
    assert "--resume" not in err
    explanation = printed[printed.index("Columns:") : printed.index("#  name")]
    assert max(len(line) for line in explanation.splitlines()) <= 100
    # The VAE round trip is reported, and the first suggested edit was run and measured.
    assert 5 < summary["vae_round_trip_psnr_db"] < 80 and "latents\nexactly" in printed.replace(" ", "\n")
    tried = summary["try_edit"]
    if tried is not None:
        assert 0 < tried["visible"] <= 1 and tried["factor"] in factor_names("faces")
        sign = "-" if tried["sign"] < 0 else ""
        assert f"directions.safetensors:{tried['index']}={sign}{DemoSettings().strength:g}%" in printed
        assert tried["image"].endswith(".png") and "measured:" in printed
    # Gallery captions give both signs of each direction.
    page = (out / "gallery" / "index.html").read_text()
    assert page.count("noiseclr edit") == 2 * 3 and "=-" in page
    # Every direction is judged against 20 calibrated random directions on the same test images.
    reference = summary["random_reference"]
    assert (
        reference["count"] == 20
        and reference["images"] == 3
        and set(reference["random_p95"]) == set(factor_names("faces"))
    )
    wins = [row["random"]["beats_random"] for row in summary["directions"]]
    assert reference["beats_random"] == sum(wins) and f"{sum(wins)} of 3 directions beat random" in printed
    assert all(row["random"]["factor"] in factor_names("faces") for row in summary["directions"])
    assert "vs random" in printed and "repeats" in printed and summary["clean_factors"] is not None
    assert "compared with 20 random directions" in printed and "(from the cache)" not in printed
    # The gallery groups the directions by the factor they move and says which beat random.
    groups = {row["main_factor"] for row in summary["directions"]}
    assert page.count("<h2>") == len(groups) and all(f"<h2>{factor}:" in page for factor in groups)
    assert page.count("beats random") + page.count("within chance") == 3

    # Running it again reuses the finished discovery.
    def no_discovery(*args, **kwargs):
        raise AssertionError("discovery ran again")

    monkeypatch.setattr(reuse_module, "discover", no_discovery)
    code, printed, err = run_demo_cli(capsys, tiny_model_dir, out)
    assert code == 0, err
    assert "(from the cache)" in printed  # the random reference is not measured twice
    # ... but not one made with other discovery settings: that is a different experiment.
    code, printed, err = run_demo_cli(capsys, tiny_model_dir, out, "--magnitude-floor", "0.05")
    assert code == 2 and "other settings (magnitude_floor)" in err and err.count("noiseclr: error:") == 1


def test_demo_without_reader_still_shows_directions(capsys, tiny_model_dir, tmp_path, monkeypatch):
    def missing(domain, *args, **kwargs):
        raise NoiseCLRError(f"reader for {domain}: no weights; run scripts/train_readers.py --domain {domain}.")

    monkeypatch.setattr(demo_module, "load_reader", missing)
    code, printed, err = run_demo_cli(capsys, tiny_model_dir, tmp_path / "d")
    assert code == 0, err
    assert "unnamed" in printed and "naming skipped" in printed
    assert (tmp_path / "d" / "gallery" / "index.html").is_file()
    assert (
        Directions.load(tmp_path / "d" / "directions.safetensors").edit_defaults[0]["strength"]
        == DemoSettings().strength
    )


def test_demo_bad_sizes_are_one_line_errors(capsys, tiny_model_dir, tmp_path):
    code, _, err = run_demo_cli(capsys, tiny_model_dir, tmp_path / "e", "--images", "2")
    assert code == 2 and err.count("noiseclr: error:") == 1 and "--images 2" in err
    code, _, err = run_demo_cli(capsys, tiny_model_dir, tmp_path / "e", "--scale", "-1")
    assert code == 2 and "--scale" in err
    for flag in ("--lr", "--strength"):
        code, _, err = run_demo_cli(capsys, tiny_model_dir, tmp_path / "e", flag, "0")
        assert code == 2 and err.count("noiseclr: error:") == 1 and flag in err
    for flag, value in (("--random-reference", "1"), ("--diversity-weight", "-1"), ("--reseed-duplicates", "2")):
        code, _, err = run_demo_cli(capsys, tiny_model_dir, tmp_path / "e", flag, value)
        assert code == 2 and err.count("noiseclr: error:") == 1 and f"{flag} " in err, (flag, err)


def test_summary_table_formats():
    rows = [
        DirectionRecord(
            index=0,
            name="glasses (+yes -no)",
            edit_strength=15.0,
            main_change=0.5,
            purity=1.0,
            main_factor="glasses",
            changes={"glasses": 0.5, "mouth": 0.0},
            strip="gallery/direction-000.png",
        ),
        DirectionRecord(index=1, name="mouth +smile", scale=4.0, main_change=0.25, purity=0.5, main_factor="mouth"),
    ]
    text = summary_table(rows)
    assert "glasses (+yes -no)" in text and "±15%" in text and "0.50" in text and "±4" in text
    assert summary_table(rows, markdown=True).startswith("| # |")


def test_duplicate_axes_are_named():
    from noiseclr.demo import duplicate_note

    directions = Directions(
        vectors=torch.randn(4, 8), calibration={"response": [0.1] * 4, "duplicates": [[2, 3, -0.94]]}
    )
    note = duplicate_note(directions)
    assert "2 and 3 (cos -0.94)" in note and "one axis twice" in note.lower()
    assert duplicate_note(Directions(vectors=torch.randn(4, 8))) == ""
