"""The ground-truth benchmark: metric math, the selection rule, prompt terms, baselines, end to end.

End-to-end tests use a TEST DOUBLE of the factor reader (:class:`BandReader`, below): it reads
each factor from the mean colour of one horizontal band, so edits on a tiny random model change
its readings. The shipped readers are used only by the test that is skipped when their weights
are absent.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from noiseclr import measure
from noiseclr.bench import evaluate as bench_evaluate, run as bench_run
from noiseclr.bench import BenchSettings, pick_cross_directions, run_bench
from noiseclr.measure import DirectionRecord, annotate_directions, direction_records
from noiseclr.metrics import (
    EditConfig,
    alone_interference,
    any_changed_fraction,
    axis_changed,
    change_fractions,
    changed_mask,
    coverage,
    direction_metrics,
    discovered_factors,
    dominant_value,
    edit_grid,
    pair_interference,
    random_directions,
    select_edit,
    summarize_changes,
)
from noiseclr.cli import main
from noiseclr.directions import Directions
from noiseclr.editing import direction_conditionings, regenerate
from noiseclr.terms import DirectionTerm, PromptTerm
from noiseclr.errors import NoiseCLRError
from noiseclr.inversion import invert
from noiseclr.model import DiffusionModel
from noiseclr.world.factors import domain_factors, factor_names


class BandReader:
    """TEST DOUBLE of ``noiseclr.world.readers.FactorReader``: factor j is the quantised mean of one
    colour channel over the j-th horizontal band of the image (128x128 float input, like the real one)."""

    def __init__(self, domain: str):
        self.domain = domain
        self.factors = domain_factors(domain)
        self.calls = 0

    def predict_indices(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, 128, 128), images.shape
        self.calls += 1
        count = len(self.factors)
        columns = []
        for j, factor in enumerate(self.factors):
            band = images[:, j % 3, (j * 128) // count : ((j + 1) * 128) // count].float().mean(dim=(1, 2))
            values = len(factor.values)
            columns.append(((band + 1) * 0.5 * values * 7).floor().long() % values)
        return torch.stack(columns, dim=1)


def doubles(*domains: str) -> dict[str, BandReader]:
    return {domain: BandReader(domain) for domain in domains}


def tiny_settings(**overrides) -> BenchSettings:
    values = dict(
        methods=("noiseclr-single", "random"),
        num_directions=3,
        discovery_steps=2,
        discovery_images=6,
        discovery_batch=3,
        discovery_micro_batches=1,
        heldout=4,
        validation=3,
        steps=3,
        scales=(4.0,),
        windows=((0.0, 1.0), (0.3, 1.0)),
        strip_images=2,
        cross_images=3,
        cross_per_domain=2,
    )
    values.update(overrides)
    return BenchSettings(**values)


def unit_directions(model: DiffusionModel, count: int = 3, seed: int = 0, **metadata) -> Directions:
    vectors = torch.randn(count, model.token_width, generator=torch.Generator().manual_seed(seed))
    vectors = vectors / vectors.norm(dim=1, keepdim=True) * model.typical_token_norm()
    return Directions.for_model(model, vectors, **metadata)


# ------------------------------------------------------------------------------ metric math
def test_change_mask_and_fractions():
    reference = torch.tensor([[0, 1], [1, 1], [2, 0], [0, 0]])
    edited = torch.tensor([[[0, 1], [0, 1], [2, 1], [1, 1]]])  # image 1 factor 0, image 2/3 factor 1, image 3 factor 0
    changed = changed_mask(edited, reference)
    assert changed.tolist() == [[[False, False], [True, False], [False, True], [True, True]]]
    assert change_fractions(changed).tolist() == [[0.5, 0.5]]


def test_direction_metrics_by_hand():
    changes = torch.tensor([[0.8, 0.2, 0.0], [0.0, 0.0, 0.0], [0.3, 0.3, 0.4]])
    m = direction_metrics(changes)
    assert m.main.tolist() == [0, 0, 2]
    assert torch.allclose(m.main_change, torch.tensor([0.8, 0.0, 0.4], dtype=torch.float64))
    assert torch.allclose(m.purity, torch.tensor([0.8, 0.0, 0.4], dtype=torch.float64))
    # 1 - mean of the other two factors' changes
    assert torch.allclose(m.preservation, torch.tensor([0.9, 1.0, 0.7], dtype=torch.float64))


def test_discovered_coverage_and_thresholds_are_inclusive():
    changes = torch.tensor(
        [
            [0.5, 1 / 3, 0.0, 0.0],  # factor 0: strength 0.5, purity 0.6 -> exactly at both thresholds
            [0.9, 0.0, 0.0, 0.0],  # factor 0 again, better: it is the discovering direction
            [0.0, 0.49, 0.0, 0.0],  # factor 1: too weak
            [0.0, 0.0, 0.6, 0.5],  # factor 2: strength 0.6 but purity 0.545 -> not discovered
        ],
        dtype=torch.float64,
    )
    assert discovered_factors(changes) == {0: 1}
    assert coverage(changes) == 0.25
    assert discovered_factors(changes[:1]) == {0: 0}


def test_summary_averages_over_effective_directions():
    names = ["a", "b", "c"]
    changes = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.0, 0.0], [0.0, 0.3, 0.3]])
    summary = summarize_changes(changes, names)
    assert summary["count"] == 3 and summary["num_factors"] == 3
    assert summary["discovered"] == {"a": 0} and summary["coverage"] == pytest.approx(1 / 3)
    assert summary["effective_directions"] == 2  # strengths 0.8 and 0.3; 0.1 is below 0.25
    assert summary["mean_purity"] == pytest.approx((0.8 + 0.5) / 2)
    assert summary["preservation"] == pytest.approx(((1 - 0.1) + (1 - 0.15)) / 2)
    assert summary["preservation_all"] == pytest.approx(((1 - 0.1) + 1.0 + (1 - 0.15)) / 3)
    none = summarize_changes(torch.zeros(2, 3), names)
    assert none["mean_purity"] is None and none["preservation"] is None and none["coverage"] == 0


def _fake_method(changes: torch.Tensor, names: list[str]) -> dict:
    return {
        "directions": [{"index": k, "changes": dict(zip(names, map(float, row)))} for k, row in enumerate(changes)],
        "summary": {"duplicate_pairs": [[0, 1, 0.9]]},
    }


def test_bench_judges_every_method_against_its_random_method():
    """Effective = main change >= 0.25 and beats the run's random directions; random judged leave-one-out."""
    from noiseclr.bench.versus_random import apply_random_reference
    from noiseclr.chance import RandomReference, judge, margin_threshold

    names = ["skin", "hair", "mouth"]
    generator = torch.Generator().manual_seed(3)
    # 20 random directions that all "act" (skin 0.3-0.7 on every one): the old count calls all 20 effective
    random = torch.stack(
        [0.3 + 0.4 * torch.rand(20, generator=generator), 0.2 * torch.rand(20, generator=generator), torch.zeros(20)],
        dim=1,
    ).to(torch.float64)
    found = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.1, 0.0], [0.0, 0.0, 0.2]], dtype=torch.float64)
    results = {
        "factors": names,
        "baseline": {"heldout": {"images": 30}},
        "methods": {"noiseclr-all": _fake_method(found, names), "random": _fake_method(random, names)},
    }
    apply_random_reference(results)
    ours, chance = results["methods"]["noiseclr-all"], results["methods"]["random"]
    # ours: the hair direction beats random; the skin one sits inside random's spread; the mouth one does not act
    assert [d["effective"] for d in ours["directions"]] == [True, False, False]
    assert [d["random"]["beats_random"] for d in ours["directions"]][:2] == [True, False]
    assert ours["summary"]["effective_directions"] == 1 and ours["summary"]["acting_directions"] == 2
    assert ours["summary"]["mean_purity"] == pytest.approx(0.9) and ours["summary"]["duplicate_pairs"]
    # the plain reference: judge() against the whole random table
    reference = RandomReference(random, tuple(names), 0.0, 30)
    assert [r["beats_random"] for r in judge(found, reference)] == [
        d["random"]["beats_random"] for d in ours["directions"]
    ]
    # random itself, each row against the other 19: at most 1 in 20 passes (the test's false-positive rate)
    assert chance["summary"]["acting_directions"] == 20
    assert chance["summary"]["effective_directions"] <= 1
    tau = margin_threshold(random)
    for r, record in enumerate(chance["directions"]):
        others = RandomReference(torch.cat([random[:r], random[r + 1 :]]), tuple(names), 0.0, 30)
        margin = float((random[r] - others.percentiles()).max())
        assert record["random"]["margin"] == pytest.approx(margin, abs=1e-4)
        assert record["random"]["beats_random"] == (margin > tau + 1e-12)
    # idempotent (it runs at every save), and a run without a random method is left alone
    before = json.dumps(results, sort_keys=True)
    apply_random_reference(results)
    assert json.dumps(results, sort_keys=True) == before
    alone = {"factors": names, "methods": {"noiseclr-all": _fake_method(found, names)}}
    apply_random_reference(alone)
    assert "effective" not in alone["methods"]["noiseclr-all"]["directions"][0]


def test_dominant_value_and_any_changed():
    edited = torch.tensor([[1, 0], [2, 0], [2, 1], [0, 1]])
    changed = torch.tensor([[True, False], [True, False], [True, True], [False, False]])
    assert dominant_value(edited, changed, 0) == (2, pytest.approx(2 / 3))
    assert dominant_value(edited, torch.zeros_like(changed), 0) == (None, 0.0)
    assert any_changed_fraction(changed, [1]).item() == 0.25
    assert any_changed_fraction(changed, [0, 1]).item() == 0.75


def test_records_annotated_before_the_rename_read_under_todays_keys():
    from noiseclr.measure import upgrade_record

    old = {"index": 0, "main_factor": "glasses", "strength": 0.6, "strength_ci": [0.4, 0.8], "edit_strength": 3.0}
    assert upgrade_record(old) == {
        "index": 0,
        "main_factor": "glasses",
        "main_change": 0.6,
        "main_change_ci": [0.4, 0.8],
        "edit_strength": 3.0,
    }


def test_interference_by_hand():
    face_names = ["skin", "glasses", "background"]
    cat_names = ["fur_color", "stripes", "background"]
    face = (
        face_names,
        torch.tensor([[False, True, True], [False, True, False], [True, False, False], [False, False, False]]),
    )
    cat = (
        cat_names,
        torch.tensor([[True, False, True], [False, False, False], [True, True, False], [False, True, False]]),
    )
    # Alone: the face direction (glasses) changed glasses in 2/4; the cat changed in images 0, 2, 3 (background ignored).
    assert alone_interference(face, cat, "glasses") == {"own_change": 0.5, "interference": 0.75}
    pair = pair_interference(face, cat, "glasses", "fur_color")
    assert pair["face_change"] == 0.5 and pair["cat_change"] == 0.5 and pair["both_changed"] == 0.25
    assert pair["interference_on_cat"] == 0.5  # stripes changed in images 2 and 3
    assert pair["interference_on_face"] == 0.25  # skin changed in image 2
    assert pair["interference"] == 0.5  # images 2 and 3
    assert pair["off_target"] == pair["interference"]  # without the alone edits: the old definition
    # Against each direction alone: only what the other direction added counts.
    cat_vs_alone = (
        cat_names,
        torch.tensor([[False, False, True], [False, False, False], [False, True, False]] + [[False] * 3]),
    )
    face_vs_alone = (face_names, torch.zeros(4, 3, dtype=torch.bool))
    crossed = pair_interference(face, cat, "glasses", "fur_color", face_vs_alone, cat_vs_alone)
    assert crossed["interference_on_cat"] == 0.25  # stripes differ from the cat alone in image 2 (background ignored)
    assert crossed["interference_on_face"] == 0.0 and crossed["interference"] == 0.25
    assert crossed["off_target"] == 0.5 and crossed["face_change"] == pair["face_change"]


def test_cross_domain_picks_best_per_factor_without_background():
    records = [
        {"index": 0, "main_factor": "glasses", "main_change": 0.6, "purity": 0.5},
        {"index": 1, "main_factor": "glasses", "main_change": 0.9, "purity": 0.9},
        {"index": 2, "main_factor": "background", "main_change": 1.0, "purity": 1.0},
        {"index": 3, "main_factor": "skin", "main_change": 0.5, "purity": 0.8},
        {"index": 4, "main_factor": "mouth", "main_change": 0.1, "purity": 1.0},
    ]
    assert pick_cross_directions(records, 5) == [1, 3]  # mouth is not effective; background is shared
    assert pick_cross_directions(records, 1) == [1]
    weak = [{"index": 0, "main_factor": "mouth", "main_change": 0.1, "purity": 1.0}]
    assert pick_cross_directions(weak, 2) == [0]  # nothing effective: the best anyway


# ---------------------------------------------------------------------------- selection rule
def test_grid_is_magnitudes_times_windows():
    grid = edit_grid([6, -3, 3], [(0.0, 1.0), (0.3, 1.0)])
    assert [(c.scale, c.start) for c in grid] == [(3.0, 0.0), (3.0, 0.3), (6.0, 0.0), (6.0, 0.3)]
    assert grid[0].describe() == "±3 @0:1"


def test_axis_change_counts_either_sign():
    # A perfect binary toggle: + adds glasses to the two images without, - removes them from the two with.
    reference = torch.tensor([[0, 1], [0, 0], [1, 0], [1, 1]])  # factors: glasses, mustache
    plus = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]])
    minus = torch.tensor([[0, 1], [0, 0], [0, 0], [0, 1]])
    by_sign = changed_mask(torch.stack([plus, minus]), reference)
    assert change_fractions(by_sign).tolist() == [[0.5, 0.0], [0.5, 0.0]]  # one sign alone caps at 0.5
    assert change_fractions(axis_changed(by_sign)).tolist() == [1.0, 0.0]


def test_direction_records_name_both_signs():
    reference = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    plus = torch.tensor([[1, 0], [1, 1], [1, 0], [1, 1]])
    minus = torch.tensor([[0, 0], [0, 1], [0, 0], [0, 1]])
    edited = torch.stack([plus, minus]).unsqueeze(0)  # [K=1, 2, B, F]
    changed = changed_mask(edited, reference)
    changes = change_fractions(axis_changed(changed))
    record = direction_records(changes, edited, changed, ["glasses", "mustache"], [("no", "yes"), ("no", "yes")])[0]
    assert record.main_factor == "glasses" and record.main_change == 1.0 and record.purity == 1.0
    assert record.target_value == "yes" and record.minus_value == "no"
    assert record.name == "glasses (+yes -no)"
    assert record.plus_change == 0.5 and record.minus_change == 0.5


def test_direction_name_when_both_signs_reach_one_value():
    # eye colour blue/green/brown: + moves brown eyes to green, - moves blue eyes to green
    assert measure.direction_name("eye_color", "green", "green", 1.0) == "eye_color ±green"
    assert measure.direction_name("eye_color", "green", "blue", 1.0) == "eye_color (+green -blue)"
    assert measure.direction_name("eye_color", None, None, 0.5) == "eye_color (mixed)"
    assert measure.direction_name("eye_color", "green", "green", 0.0) == "no visible effect"


def test_select_edit_maximises_strength_times_purity_under_preservation():
    grid = [EditConfig(3.0), EditConfig(-3.0), EditConfig(6.0), EditConfig(-6.0)]
    changes = torch.tensor(
        [
            [0.4, 0.0, 0.0],  # score 0.4
            [0.6, 0.1, 0.0],  # score 0.6 * 0.857 = 0.514, preservation 0.95
            [1.0, 0.6, 0.6],  # score 0.45 but preservation 0.4: excluded
            [0.6, 0.1, 0.0],  # ties with row 1 -> the same |scale| is not smaller; row 1 wins by grid order
        ]
    )
    pick = select_edit(changes, grid, min_preservation=0.8)
    assert pick.index == 1 and pick.config.scale == -3.0 and pick.constraint_met
    assert pick.main_change == pytest.approx(0.6) and pick.purity == pytest.approx(0.6 / 0.7)
    # Ties go to the smaller |scale|.
    tie = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.5, 0.0, 0.0]])
    tie[0] = tie[2]
    assert select_edit(tie, grid, 0.8).index == 0
    # Nothing meets the constraint: strength * purity * preservation over all, flagged.
    bad = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.5, 0.5], [0.9, 0.9, 0.0], [0.2, 0.2, 0.2]])
    fallback = select_edit(bad, grid, 0.9)
    assert not fallback.constraint_met and fallback.index == 1


def test_selection_uses_only_validation_images(tiny_model, tmp_path, monkeypatch):
    """By construction: the rule sees only the validation change table, and the held-out images are
    regenerated with edits only after every direction's setting is chosen."""
    events: list[tuple[str, int]] = []
    real_render, real_select = bench_evaluate.render_and_read, bench_evaluate.select_edit

    def spy_render(model, inversion, reader, edits, settings, **kwargs):
        events.append(("render", inversion.source_latents.clone(), len(edits)))
        return real_render(model, inversion, reader, edits, settings, **kwargs)

    def spy_select(validation_changes, grid, min_preservation):
        events.append(("select", tuple(validation_changes.shape)))
        return real_select(validation_changes, grid, min_preservation)

    splits = {}
    real_prepare = bench_run.prepare_split

    def spy_prepare(model, reader, domain, role, count, settings, **kwargs):
        split = real_prepare(model, reader, domain, role, count, settings, **kwargs)
        splits[role] = split.inversion.source_latents.clone()
        return split

    def role_of(latents):
        # The bench renders slices of a split (Inversion.select): recognise them by their images.
        roles = {r for r, whole in splits.items() if all(any(torch.equal(row, w) for w in whole) for row in latents)}
        assert len(roles) == 1, roles
        return roles.pop()

    monkeypatch.setattr(bench_evaluate, "render_and_read", spy_render)
    monkeypatch.setattr(bench_evaluate, "select_edit", spy_select)
    monkeypatch.setattr(bench_run, "prepare_split", spy_prepare)
    settings = tiny_settings(methods=("random",))
    result = run_bench(tiny_model, "faces", tmp_path / "b", settings, readers=doubles("faces"), progress=False)
    edit_events = [e for e in events if e[0] == "select" or e[2] > 1]  # reconstructions are single [] edits
    selects = [i for i, e in enumerate(edit_events) if e[0] == "select"]
    assert selects == list(range(selects[0], selects[0] + 3))  # one per direction, all at once
    assert all(edit_events[i][1] == (2, len(factor_names("faces"))) for i in selects)  # (1 magnitude x 2 windows) x F
    assert selects[0] > 0 and selects[-1] < len(edit_events) - 1
    assert all(role_of(e[1]) == "validation" for e in edit_events[: selects[0]])
    assert all(role_of(e[1]) == "heldout" for e in edit_events[selects[-1] + 1 :])
    method = result.results["methods"]["random"]
    held, val = method["heldout_seeds"], method["validation_seeds"]
    assert held[1] < val[0] or val[1] < held[0]  # disjoint seed ranges
    # The stored validation table is exactly what the picks came from.
    table = torch.tensor(method["validation_changes"], dtype=torch.float64)
    for k, record in enumerate(method["directions"]):
        kept = method["validation_survivors"][k]
        pick = select_edit(table[k, kept], [settings.grid()[g] for g in kept], settings.min_preservation)
        assert (pick.config.scale, pick.config.start, pick.config.end) == (
            record["scale"],
            record["start"],
            record["end"],
        )


# ------------------------------------------------------------------------------ prompt terms
def conditioning_stub(model: DiffusionModel):
    """eps(x, t, c): a function of t and c only, so each step's combined eps can be read back exactly."""
    pattern = torch.randn(
        model.latent_channels, model.latent_size, model.latent_size, generator=torch.Generator().manual_seed(5)
    )

    def predict_eps(latents, timesteps, conditioning):
        t = torch.as_tensor(timesteps).to(latents.dtype).reshape(-1, 1, 1, 1).expand(latents.shape[0], 1, 1, 1)
        c = conditioning.to(latents.dtype)
        return torch.cos(pattern.to(latents) + t / 300) * c.mean(dim=(1, 2)).view(-1, 1, 1, 1) + c.std(dim=(1, 2)).view(
            -1, 1, 1, 1
        )

    return predict_eps


@pytest.mark.float64
def test_prompt_term_is_eps_prompt_minus_eps_null(tiny_model_dir, monkeypatch):
    model = DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float64")
    stub = conditioning_stub(model)
    monkeypatch.setattr(model, "predict_eps", stub)
    directions = unit_directions(model, 2)
    steps = 6
    inversion = invert(model, torch.randn(1, 4, 8, 8, dtype=torch.float64), "ddim", steps, progress=False)
    prompt = "a cartoon face with glasses"
    edits = [[PromptTerm(prompt, 2.5, 0.5, 1.0)], [PromptTerm(prompt, -1.0), DirectionTerm(directions, 1, 0.5)], []]
    states = [inversion.start_latents.repeat(len(edits), 1, 1, 1)]
    regenerate(model, inversion, edits, progress=False, callback=lambda step, latents: states.append(latents.clone()))
    c_null, c_prompt = model.null_conditioning(), model.encode_prompts([prompt])
    c_dir = model.encode_directions(directions.vectors[1:2])
    schedule = inversion.schedule
    for step in range(steps):
        t = int(schedule.timesteps[step])
        e_null, e_prompt, e_dir = stub(states[step][:1].repeat(3, 1, 1, 1), t, torch.cat([c_null, c_prompt, c_dir]))
        level_from, level_to = schedule.levels(step)
        ratio = math.sqrt(level_to / level_from)
        used = (states[step + 1] - ratio * states[step]) / (math.sqrt(1 - level_to) - ratio * math.sqrt(1 - level_from))
        late = step >= steps // 2
        expected = [
            e_null + (2.5 * (e_prompt - e_null) if late else 0),
            e_null - 1.0 * (e_prompt - e_null) + 0.5 * (e_dir - e_null),
            e_null,
        ]
        for m in range(3):
            assert torch.allclose(used[m], expected[m], atol=1e-8, rtol=0), (step, m)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_zero_scale_prompt_term_is_the_reconstruction(tiny_model, method):
    inversion = invert(tiny_model, torch.randn(2, 4, 8, 8), method, 4, progress=False)
    latents = regenerate(tiny_model, inversion, [[PromptTerm("a cartoon cat", 0.0)], []], progress=False)
    assert torch.equal(latents[0], latents[1])
    moved = regenerate(tiny_model, inversion, [[PromptTerm("a cartoon cat", 3.0)], []], progress=False)
    assert not torch.allclose(moved[0], moved[1])


def test_prompt_terms_share_rows_and_validate(tiny_model):
    directions = unit_directions(tiny_model, 2)
    edits = [[PromptTerm("a face", 1.0), DirectionTerm(directions, 0, 1.0)], [PromptTerm("a face", -2.0, 0.2, 0.8)]]
    tensors, rows = direction_conditionings(tiny_model, edits)
    assert sum(t.shape[0] for t in tensors) == 2
    assert rows[("prompt", "a face")] == 1 and rows[(id(directions), 0)] == 0
    assert "x-2" in PromptTerm("a face", -2.0, 0.2, 0.8).describe()
    with pytest.raises(NoiseCLRError, match="window"):
        PromptTerm("a face", 1.0, 0.7, 0.2)
    with pytest.raises(NoiseCLRError, match="finite"):
        PromptTerm("a face", float("nan"))


# ------------------------------------------------------------------------------- baselines
def test_random_directions_match_count_and_row_norms():
    reference = torch.randn(5, 32) * torch.arange(1, 6).float().unsqueeze(1)
    rows = random_directions(reference, seed=3)
    assert rows.shape == reference.shape
    assert torch.allclose(rows.norm(dim=1), reference.norm(dim=1), rtol=1e-5)
    assert torch.equal(rows, random_directions(reference, seed=3))
    assert not torch.allclose(rows, random_directions(reference, seed=4))
    cosine = torch.nn.functional.cosine_similarity(rows, reference, dim=1)
    assert cosine.abs().max() < 0.9


def test_render_and_read_chunks_without_changing_results(tiny_model):
    directions = unit_directions(tiny_model, 3)
    inversion = invert(
        tiny_model, torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)), "ddpm", 3, progress=False
    )
    edits = [[DirectionTerm(directions, k, 4.0)] for k in range(3)] + [[PromptTerm("a cat", -3.0, 0.3, 1.0)], []]
    reader = BandReader("faces")
    whole, kept = measure.render_and_read(
        tiny_model, inversion, reader, edits, tiny_settings().protocol().passes, keep_images=2, progress=False
    )
    small = tiny_settings(trajectories_per_pass=2).protocol().passes  # 2 images per pass, one edit at a time
    parts, kept_parts = measure.render_and_read(
        tiny_model, inversion, reader, edits, small, keep_images=2, progress=False
    )
    assert whole.shape == (5, 3, 9) and kept.shape == (5, 2, 3, 64, 64)
    assert torch.equal(whole, parts)
    assert torch.allclose(kept, kept_parts, atol=1e-4)  # float32 rounding depends on the batch size


def test_seed_ranges_match_the_readers():
    readers = pytest.importorskip("noiseclr.world.readers")
    assert measure.EVAL_SEED_BASE == readers.EVAL_SEED_BASE
    last = measure.seeds_for("scenes", 999_999, 4)[-1]
    assert last < readers.BASE_MODEL_SEED_BASE


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def faces_run(tiny_model_dir, tmp_path_factory):
    model = DiffusionModel.load(tiny_model_dir, device="cpu", dtype="float32")
    out = tmp_path_factory.mktemp("bench") / "faces"
    finished = []
    result = run_bench(
        model,
        "faces",
        out,
        tiny_settings(methods=("noiseclr-single", "random", "prompt")),
        readers=doubles("faces"),
        progress=False,
        on_method=lambda name, res: finished.append(name),
    )
    return model, out, result, finished


def test_bench_writes_table_json_html_and_annotated_directions(faces_run):
    model, out, result, finished = faces_run
    assert finished == ["noiseclr-single", "random", "prompt"]
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == finished and results["factors"] == factor_names("faces")
    for name in finished:
        method = results["methods"][name]
        summary = method["summary"]
        assert 0.0 <= summary["coverage"] <= 1.0 and summary["num_factors"] == 9
        assert (out / name / "result.json").is_file()
        for record in method["directions"]:
            assert set(record["changes"]) == set(factor_names("faces"))
            assert record["scale"] in (4.0, -4.0) and (record["start"], record["end"]) in ((0.0, 1.0), (0.3, 1.0))
            assert (out / record["strip"]).is_file()
    assert results["methods"]["prompt"]["summary"]["count"] == sum(len(f.values) for f in domain_factors("faces"))
    assert "intended_hit_rate" in results["methods"]["prompt"]["summary"]
    # Random: the count and row norms of the NoiseCLR set measured in the same run.
    noiseclr = Directions.load(out / "noiseclr-single" / "directions.safetensors")
    random = Directions.load(out / "random" / "directions.safetensors")
    assert random.count == noiseclr.count == 3
    assert torch.allclose(random.vectors.norm(dim=1), noiseclr.vectors.norm(dim=1), rtol=1e-5)
    # The annotated copy carries names and the validation picks as edit defaults.
    records = results["methods"]["noiseclr-single"]["directions"]
    assert noiseclr.names == [r["name"] for r in records]
    # ... and how they were measured (inversion, steps), which edit and explore then use.
    assert noiseclr.edit_defaults == [
        {
            "scale": r["scale"],
            "start": r["start"],
            "end": r["end"],
            "inversion": "ddpm",
            "steps": results["settings"]["steps"],
        }
        for r in records
    ]
    noiseclr.check_compatible(model)
    report = (out / "report.html").read_text()
    for needle in ("noiseclr-single", "random", "prompt", "strips/direction-000.png", "coverage", 'style="width:'):
        assert needle in report
    assert "noiseclr-single" in result.table and "coverage" in result.table
    assert results["baseline"]["heldout"]["images"] == 4
    # Every method judged against the run's 3 random directions (versus_random), in the table too.
    for name in finished:
        summary = results["methods"][name]["summary"]
        assert summary["random_reference"]["count"] == 3 and summary["beats_random"] >= 0
        assert summary["effective_directions"] <= summary["acting_directions"]
        assert all("beats_random" in record["random"] for record in results["methods"][name]["directions"])
    assert "beats the run's random directions" in result.table and "acting" in report


def test_bench_resume_reuses_finished_methods(faces_run, monkeypatch):
    model, out, result, _ = faces_run
    with pytest.raises(NoiseCLRError, match="--resume"):
        run_bench(model, "faces", out, tiny_settings(methods=("random",)), readers=doubles("faces"), progress=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished method was measured again")

    monkeypatch.setattr(bench_run, "evaluate_method", must_not_run)
    again = run_bench(
        model,
        "faces",
        out,
        tiny_settings(methods=("noiseclr-single", "random", "prompt")),
        readers=doubles("faces"),
        progress=False,
        resume=True,
    )
    assert again.results["methods"]["random"]["fingerprint"] == result.results["methods"]["random"]["fingerprint"]


def test_the_prompt_reference_is_measured_once_per_model_and_settings(faces_run, tmp_path, monkeypatch):
    # It depends on no directions file: a new run (another folder) on the same model reuses it.
    model, out, result, _ = faces_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the prompt reference was measured again")

    monkeypatch.setattr(bench_run, "evaluate_method", must_not_run)
    again = run_bench(
        model, "faces", tmp_path / "other", tiny_settings(methods=("prompt",)), readers=doubles("faces"), progress=False
    )
    # the measurement as the first run wrote it (its results.json also judged it against that run's random method)
    assert again.results["methods"]["prompt"] == json.loads((out / "prompt" / "result.json").read_text())
    strips = sorted(p.name for p in (out / "prompt").rglob("*.png"))
    assert strips and sorted(p.name for p in (tmp_path / "other" / "prompt").rglob("*.png")) == strips
    # Another setting (here the held-out count) is another reference.
    monkeypatch.undo()
    calls = []
    original = bench_run.evaluate_method
    monkeypatch.setattr(bench_run, "evaluate_method", lambda *a, **k: calls.append(1) or original(*a, **k))
    run_bench(
        model,
        "faces",
        tmp_path / "third",
        tiny_settings(methods=("prompt",), heldout=3),
        readers=doubles("faces"),
        progress=False,
    )
    assert calls == [1]


def test_bench_evaluates_given_files_including_textual_inversion(faces_run, tmp_path):
    model, out, _, _ = faces_run
    exported = Directions.load(out / "noiseclr-single" / "directions.safetensors").export_published(tmp_path / "ti")
    learned = next(p for p in exported if p.name == "learned_embeds.bin")
    result = run_bench(
        model,
        "faces",
        tmp_path / "files",
        tiny_settings(methods=()),
        directions_files={"file:learned_embeds": learned},
        readers=doubles("faces"),
        progress=False,
    )
    assert list(result.results["methods"]) == ["file:learned_embeds"]
    assert (tmp_path / "files" / "file-learned_embeds" / "directions.safetensors").is_file()


def test_cross_domain_on_scenes(tiny_model, tmp_path):
    files = []
    for domain, factors in (
        ("faces", ["glasses", "skin", "background"]),
        ("cats", ["stripes", "fur_color", "background"]),
    ):
        directions = unit_directions(tiny_model, 3, seed=len(files), domain=domain)
        records = [
            DirectionRecord(
                index=k, name=f"{f} -> x", main_factor=f, main_change=0.6, purity=0.7, scale=4.0, start=0.0, end=1.0
            )
            for k, f in enumerate(factors)
        ]
        annotated = annotate_directions(tiny_model, directions, records, domain=domain, source="test")
        files.append(annotated.save(tmp_path / f"{domain}.safetensors"))
    result = run_bench(
        tiny_model,
        "scenes",
        tmp_path / "scenes",
        tiny_settings(),
        cross_domain=(files[0], files[1]),
        readers=doubles("scenes"),
        progress=False,
    )
    cross = json.loads((tmp_path / "scenes" / "results.json").read_text())["cross_domain"]
    assert cross["images"] == 3 and cross["summary"]["pairs"] == 2
    assert [row["main_factor"] for row in cross["alone"]] == ["glasses", "skin", "stripes", "fur_color"]
    for row in cross["pairs"]:
        assert 0.0 <= row["interference"] <= 1.0 and (tmp_path / "scenes" / row["strip"]).is_file()
    assert "interference" in result.table and "Cross-domain" in (tmp_path / "scenes" / "report.html").read_text()
    # The four region modes side by side; a box keeps the edit off the rest of the scene.
    modes = cross["modes"]
    assert list(modes) == ["global", "auto", "box", "auto-in-box"]
    for mode in ("auto", "box", "auto-in-box"):
        summary = modes[mode]["summary"]
        assert summary["pairs"] == 2 and 0.0 < summary["region_fraction"] < 1.0 and summary["psnr_outside"] > 0
        assert len(modes[mode]["pairs"]) == 2 and len(modes[mode]["alone"]) == 4
    assert "region modes" in result.table and "auto-in-box" in (tmp_path / "scenes" / "report.html").read_text()


def test_bench_with_shipped_reader(tiny_model, tmp_path):
    readers = pytest.importorskip("noiseclr.world.readers")
    if not readers.default_reader_path("faces").is_file():
        pytest.skip("the faces reader weights are not built yet")
    result = run_bench(
        tiny_model,
        "faces",
        tmp_path / "real",
        tiny_settings(methods=("random",), heldout=2, validation=2),
        progress=False,
    )
    assert result.results["methods"]["random"]["summary"]["count"] == 3


# ------------------------------------------------------------------------------ bad input
def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("noiseclr: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--domain", "dogs"], ["--domain dogs", "faces or cats"]),
        (["--domain", "faces", "--methods", "noiseclr,random"], ["--methods noiseclr", "unknown method"]),
        (["--domain", "scenes"], ["--domain scenes", "--cross-domain"]),
        (["--domain", "faces", "--inversion", "ddx"], ["--inversion ddx"]),
        (["--domain", "faces", "--directions", "missing.safetensors"], ["missing.safetensors", "no such"]),
        (["--domain", "faces", "--methods", "none"], ["--methods", "nothing to run"]),
        (["--domain", "faces", "--min-preservation", "2"], ["--min-preservation 2"]),
        (["--domain", "faces", "--seed", "7"], ["--seed 7"]),
        (["--domain", "faces", "--scales", "0"], ["--scales"]),
    ],
)
def test_bench_bad_inputs_are_one_line_errors(capsys, tiny_model_dir, tmp_path, extra, needles):
    code, _, err = run_cli(
        capsys, "bench", "--model", tiny_model_dir, "--device", "cpu", "--out", tmp_path / "o", *extra
    )
    one_line_error(code, err, *needles)


def test_bench_refuses_directions_of_another_model(capsys, tiny_model_dir, tiny_v_model, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "load_reader", lambda domain, *a, **k: BandReader(domain))
    path = unit_directions(tiny_v_model, 2).save(tmp_path / "v.safetensors")
    code, _, err = run_cli(
        capsys,
        "bench",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--domain",
        "faces",
        "--out",
        tmp_path / "o",
        "--directions",
        path,
    )
    one_line_error(code, err, "v.safetensors", "another model")
    # Cross-domain files need the bench's annotations.
    plain = unit_directions(DiffusionModel.load(tiny_model_dir, device="cpu"), 2).save(tmp_path / "plain.safetensors")
    code, _, err = run_cli(
        capsys,
        "bench",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--domain",
        "scenes",
        "--out",
        tmp_path / "o2",
        "--cross-domain",
        plain,
        plain,
    )
    one_line_error(code, err, "plain.safetensors", "annotations")


def test_bench_cli_end_to_end(capsys, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "load_reader", lambda domain, *a, **k: BandReader(domain))
    code, out, err = run_cli(
        capsys,
        "bench",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--domain",
        "cats",
        "--out",
        tmp_path / "c",
        "--methods",
        "random",
        "--num-directions",
        "2",
        "--heldout",
        "3",
        "--validation",
        "2",
        "--steps",
        "2",
        "--scales",
        "3",
        "--windows",
        "0:1",
        "--strip-images",
        "1",
    )
    assert code == 0, err
    assert "cats benchmark" in out and "random" in out and "report.html" in out
    assert json.loads((tmp_path / "c" / "results.json").read_text())["methods"]["random"]["summary"]["num_factors"] == 5


# ------------------------------------------------------------------- fewer rows, same power
def test_wilson_interval_and_early_stop_rule():
    from noiseclr.metrics import clearly_ineffective, wilson_interval

    low, high = wilson_interval(100, 200)
    assert low < 0.5 < high and high - low == pytest.approx(2 * 0.0689, abs=2e-3)  # +-7 points at n = 200
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(0, 50)[1] == pytest.approx(0.0714, abs=1e-3)
    # 1 of 50 changed: cannot reach 0.25; 6 of 50 (upper bound 0.24) neither; 8 of 50 might.
    changes = torch.tensor([[0.02, 0.0], [0.12, 0.1], [0.16, 0.0]], dtype=torch.float64)
    assert clearly_ineffective(changes, 50).tolist() == [True, True, False]


def test_screening_keeps_the_best_settings_per_direction():
    from noiseclr.metrics import screen_settings

    # 1 direction, 4 settings, 2 factors: setting 2 is best, 0 second, 3 violates preservation.
    table = torch.tensor([[[[0.5, 0.0], [0.1, 0.0], [0.9, 0.1], [1.0, 0.9]]]], dtype=torch.float64)[0]
    assert screen_settings(table, 2, 0.8) == [[0, 2]]
    assert screen_settings(table, 1, 0.8) == [[2]]


def test_bench_screens_validation_and_stops_hopeless_directions_early(tiny_model, tmp_path):
    settings = tiny_settings(methods=("random",), validation=8, heldout=24, screen_fraction=0.5, keep_settings=1)
    result = run_bench(tiny_model, "faces", tmp_path / "s", settings, readers=doubles("faces"), progress=False)
    method = result.results["methods"]["random"]
    assert method["screening"]["validation_images"] == 4 and method["screening"]["heldout_head"] == 20
    assert all(len(kept) == 1 for kept in method["validation_survivors"])
    for k, record in enumerate(method["directions"]):
        assert record["images"] == (20 if k in method["screening"]["stopped_early"] else 24)
        low, high = record["main_change_ci"]
        assert low <= record["main_change"] <= high


def test_remedy_methods_discover_with_their_settings():
    settings = BenchSettings()
    assert settings.discovery("noiseclr-all", "faces").magnitude_floor == 0.0  # the paper's objective
    floor = settings.discovery("noiseclr-floor", "faces")
    assert floor.magnitude_floor == 0.01 and floor.loss_variant == "all-anchors" and floor.init == "random"
    assert settings.discovery("noiseclr-tokens", "faces").init == "tokens"
    assert settings.methods == ("noiseclr-all", "noiseclr-single", "random", "prompt")


def test_bad_cross_region_modes_are_one_line_errors():
    with pytest.raises(NoiseCLRError, match=r"--cross-regions boxes: unknown region mode") as caught:
        tiny_settings(cross_regions=("boxes",)).validate()
    assert "\n" not in str(caught.value)
    assert tiny_settings(cross_regions=("none",)).validate().cross_regions == ()
