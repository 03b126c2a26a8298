"""Presenting benchmark results: the terminal table and the static HTML report.

Both read only the ``results`` dict that :func:`noiseclr.bench.run_bench` writes to
``results.json``, so a report can be rebuilt from that file alone.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..chance import describe
from ..fileio import atomic_write_text


def _amount(record: Mapping[str, Any]) -> str:
    """The edit setting a record was measured at: a calibrated strength or a raw scale."""
    if record.get("edit_strength") is not None:
        return f"strength ±{abs(record['edit_strength']):g}%"
    return f"scale {record['scale']:+g}"


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def format_table(results: Mapping[str, Any]) -> str:
    """Plain-text summary: one row per method (and the cross-domain numbers, if any)."""
    lines: list[str] = []
    methods: Mapping[str, Any] = results.get("methods") or {}
    settings = results.get("settings", {})
    if methods:
        heldout = (results.get("baseline") or {}).get("heldout", {}).get("images", settings.get("heldout"))
        lines.append(
            f"{results.get('domain')} benchmark: model {results.get('model', {}).get('name')}, {heldout} held-out images, "
            f"{settings.get('steps')} {settings.get('inversion')} steps; changes vs. the reconstruction"
        )
        header = (
            f"{'method':<18} {'K':>3} {'coverage':>8} {'purity':>7} {'preserv.':>8} {'effective':>9} {'acting':>6}"
            "  discovered factors"
        )
        lines += [header, "-" * len(header)]
        for name, result in methods.items():
            summary = result["summary"]
            found = ", ".join(summary.get("discovered", {})) or "none"
            covered = f"{len(summary.get('discovered', {}))}/{summary['num_factors']}"
            lines.append(
                f"{name:<18} {summary['count']:>3} {covered:>8} {_num(summary.get('mean_purity')):>7} "
                f"{_num(summary.get('preservation')):>8} {summary.get('effective_directions', 0):>9} "
                f"{summary.get('acting_directions', summary.get('effective_directions', 0)):>6}  {found}"
            )
        judged = any(result["summary"].get("random_reference") for result in methods.values())
        lines.append(
            "coverage: factors some direction moves with main change >= 0.5 and purity >= 0.6; acting: main change "
            ">= 0.25; effective: acting "
            + (
                "and beats the run's random directions (random judged leave-one-out: about 1 in 20 passes by chance)"
                if judged
                else "(no random method in this run, so not judged against chance)"
            )
            + "; purity and preservation: mean over effective directions"
        )
        localized = [(name, result["localized"]) for name, result in methods.items() if result.get("localized")]
        if localized:
            lines.append(
                f"global -> localized ({localized[0][1]['region']} regions), same picks, effective directions:"
            )
            for name, block in localized:
                lines.append(f"  {name:<16} {_comparison(block['comparison'])}")
    cross = results.get("cross_domain")
    if cross:
        summary = cross["summary"]
        lines.append(
            f"cross-domain on {cross['images']} scenes, {summary['pairs']} face+cat pairs: face change "
            f"{_num(summary['mean_face_change'])}, cat change {_num(summary['mean_cat_change'])}, both "
            f"{_num(summary['mean_both_changed'])}, interference {_num(summary['interference'])} "
            f"(alone: {_num(summary['interference_alone'])})"
        )
        if cross.get("localized"):
            local = cross["localized"]["summary"]
            lines.append(
                f"  localized: face change {_num(local['mean_face_change'])}, cat change {_num(local['mean_cat_change'])}, "
                f"both {_num(local['mean_both_changed'])}, interference {_num(local['interference'])} "
                f"(alone: {_num(local['interference_alone'])}); pairs' PSNR outside the regions "
                f"{_num(local.get('psnr_outside_global'), 1)} -> {_num(local.get('psnr_outside_local'), 1)} dB, "
                f"region {_percent(local.get('region_fraction'))}"
            )
        lines += _modes_lines(cross)
    return "\n".join(lines)


MODE_COLUMNS = ("mode", "face change", "cat change", "interference", "alone", "off-target", "region", "PSNR outside")


def _mode_cells(mode: str, summary: Mapping[str, Any]) -> list[str]:
    return [
        mode,
        _num(summary["mean_face_change"]),
        _num(summary["mean_cat_change"]),
        _num(summary["interference"]),
        _num(summary["interference_alone"]),
        _num(summary.get("off_target")),
        _percent(summary.get("region_fraction")) if mode != "global" else "100%",
        _num(summary.get("psnr_outside"), 1) if mode != "global" else "-",
    ]


def _modes_lines(cross: Mapping[str, Any]) -> list[str]:
    """The region modes side by side (pairs' means; PSNR outside each pair's union of regions)."""
    modes = cross.get("modes")
    if not modes:
        return []
    rows = [list(MODE_COLUMNS)] + [_mode_cells(mode, block["summary"]) for mode, block in modes.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(MODE_COLUMNS))]
    return ["  region modes (box: the box around each term's object):"] + [
        "    " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows
    ]


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.0f}%"


def _comparison(comparison: Mapping[str, Any]) -> str:
    """One line: target main change, preservation and PSNR outside the region, global -> localized."""
    return (
        f"target main change {_num(comparison.get('target_change_global'))} -> {_num(comparison.get('target_change_local'))}, "
        f"preservation {_num(comparison.get('preservation_global'))} -> {_num(comparison.get('preservation_local'))}, "
        f"PSNR outside region {_num(comparison.get('psnr_outside_global'), 1)} -> {_num(comparison.get('psnr_outside_local'), 1)} dB, "
        f"region {_percent(comparison.get('region_fraction'))} ({comparison.get('directions', 0)} directions)"
    )


def _bars(changes: Mapping[str, float], main: str | None) -> str:
    rows = []
    for name, value in changes.items():
        width = max(0.0, min(1.0, float(value))) * 100
        cls = "bar main" if name == main else "bar"
        rows.append(
            f'<div class="row"><span class="name">{html.escape(name)}</span>'
            f'<span class="{cls}"><span style="width:{width:.1f}%"></span></span>'
            f'<span class="val">{float(value):.2f}</span></div>'
        )
    return '<div class="bars">' + "".join(rows) + "</div>"


def _direction_card(record: Mapping[str, Any]) -> str:
    validation = record.get("validation", {})
    flags = []
    if record.get("discovers"):
        flags.append('<b class="ok">discovers</b>')
    if not validation.get("constraint_met", True):
        flags.append('<span class="warn">no setting met the preservation constraint</span>')
    verdict = record.get("random")
    if isinstance(verdict, Mapping) and "beats_random" in verdict:
        flags.append(
            f'<span class="{"ok" if verdict["beats_random"] else "muted"}">{html.escape(describe(verdict))}</span>'
        )
    prompt = (
        f'<div class="muted">prompt: &ldquo;{html.escape(record["prompt"])}&rdquo;</div>'
        if record.get("prompt")
        else ""
    )
    strip = (
        f'<a href="{html.escape(record["strip"])}"><img src="{html.escape(record["strip"])}" loading="lazy" alt=""></a>'
        if record.get("strip")
        else ""
    )
    return (
        f'<div class="card"><div class="title">{html.escape(str(record.get("label", record["index"])))}: '
        f"<b>{html.escape(str(record['name']))}</b> {' '.join(flags)}</div>{prompt}"
        f'<div class="muted">{_amount(record)}, window {record["start"]:g}:{record["end"]:g} '
        f"(validation score {_num(validation.get('score'))}); main change {_num(record['main_change'])}, purity "
        f"{_num(record['purity'])}, preservation {_num(record['preservation'])}</div>"
        f'<div class="body">{strip}{_bars(record["changes"], record["main_factor"])}</div></div>'
    )


def _coverage_matrix(results: Mapping[str, Any]) -> str:
    methods: Mapping[str, Any] = results.get("methods") or {}
    factors: Sequence[str] = results.get("factors") or []
    if not methods or not factors:
        return ""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in methods)
    rows = []
    for factor in factors:
        cells = []
        for result in methods.values():
            # The best direction with this main factor, discovered or not.
            best = None
            for record in result["directions"]:
                if record["main_factor"] == factor and (
                    best is None or record["main_change"] * record["purity"] > best["main_change"] * best["purity"]
                ):
                    best = record
            if best is None:
                cells.append('<td class="muted">-</td>')
                continue
            found = factor in result["summary"].get("discovered", {})
            mark = "&#10003; " if found else ""
            cells.append(
                f'<td class="{"ok" if found else ""}">{mark}#{best["index"]}: {_num(best["main_change"])} / {_num(best["purity"])}</td>'
            )
        rows.append(f"<tr><th>{html.escape(factor)}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Factors</h2><p>Per factor and method: the best direction whose main factor it is, "
        "as main change / purity on held-out images (&#10003; = discovered).</p>"
        f"<table><tr><th>factor</th>{head}</tr>{''.join(rows)}</table>"
    )


def _baseline(results: Mapping[str, Any]) -> str:
    baseline = (results.get("baseline") or {}).get("heldout")
    if not baseline:
        return ""
    factors = list(baseline["reader_accuracy_input"])
    head = "".join(f"<th>{html.escape(f)}</th>" for f in factors)
    accuracy = "".join(f"<td>{_num(baseline['reader_accuracy_input'][f])}</td>" for f in factors)
    agreement = "".join(f"<td>{_num(baseline['recon_agreement'][f])}</td>" for f in factors)
    return (
        "<h2>Reader and reconstruction</h2><p>Held-out images. Reader accuracy: the reader's reading of the input "
        "against the true label. Reconstruction agreement: the reading of the unedited reconstruction equals the "
        "reading of the input (changes are always counted against the reconstruction).</p>"
        f"<table><tr><th></th>{head}</tr><tr><th>reader accuracy</th>{accuracy}</tr>"
        f"<tr><th>recon agreement</th>{agreement}</tr></table>"
    )


def _summary_table(results: Mapping[str, Any]) -> str:
    methods: Mapping[str, Any] = results.get("methods") or {}
    if not methods:
        return ""
    rows = []
    for name, result in methods.items():
        summary = result["summary"]
        rows.append(
            f"<tr><th>{html.escape(name)}</th><td>{summary['count']}</td>"
            f"<td>{summary['coverage']:.2f} ({len(summary['discovered'])}/{summary['num_factors']})</td>"
            f"<td>{_num(summary.get('mean_purity'))}</td><td>{_num(summary.get('preservation'))}</td>"
            f"<td>{_num(summary.get('preservation_all'))}</td><td>{summary['effective_directions']}</td>"
            f"<td>{summary.get('acting_directions', summary['effective_directions'])}</td>"
            f'<td class="muted">{html.escape(result.get("source", ""))}</td></tr>'
        )
    return (
        "<h2>Summary</h2><table><tr><th>method</th><th>K</th><th>coverage</th><th>mean purity</th>"
        "<th>preservation</th><th>preservation (all)</th><th>effective</th><th>acting</th><th>source</th></tr>"
        + "".join(rows)
        + '</table><p class="muted">acting: main change &ge; 0.25. effective: acting and beats the run\'s random '
        "directions (above their 95th percentile on some factor by more than their own leave-one-out margins; "
        "random itself judged leave-one-out, so about 1 in 20 passes by chance); without a random method in the run, "
        "effective = acting. Purity and preservation: means over effective directions.</p>"
    )


def _localized(results: Mapping[str, Any]) -> str:
    methods = [
        (name, result["localized"])
        for name, result in (results.get("methods") or {}).items()
        if result.get("localized")
    ]
    if not methods:
        return ""
    rows = []
    for name, block in methods:
        c = block["comparison"]
        rows.append(
            f"<tr><th>{html.escape(name)}</th><td>{c.get('directions', 0)}</td>"
            f"<td>{_num(c.get('target_change_global'))} &rarr; {_num(c.get('target_change_local'))}</td>"
            f"<td>{_num(c.get('preservation_global'))} &rarr; {_num(c.get('preservation_local'))}</td>"
            f"<td>{_num(c.get('psnr_outside_global'), 1)} &rarr; {_num(c.get('psnr_outside_local'), 1)}</td>"
            f"<td>{_num(c.get('psnr_global'), 1)} &rarr; {_num(c.get('psnr_local'), 1)}</td>"
            f"<td>{_percent(c.get('region_fraction'))}</td></tr>"
        )
    settings = methods[0][1].get("auto_region", {})
    return (
        f"<h2>Global vs localized</h2><p>The same picks (direction, scale, window) on the same held-out images, "
        f"without and with {html.escape(str(methods[0][1]['region']))} regions (top {settings.get('top')}, smoothing "
        f"{settings.get('smoothing')}); means over effective directions (global main change &ge; 0.25). Target: the global "
        "edit's main factor. PSNR (dB, against the reconstruction) outside the localized edit's region, for both edits on "
        "the same pixels, and over the whole image. The strips show the localized edits and the region below the global ones.</p>"
        "<table><tr><th>method</th><th>directions</th><th>target main change</th><th>preservation</th>"
        "<th>PSNR outside region</th><th>PSNR whole image</th><th>region</th></tr>" + "".join(rows) + "</table>"
    )


def _cross(results: Mapping[str, Any]) -> str:
    cross = results.get("cross_domain")
    if not cross:
        return ""
    summary = cross["summary"]
    cards = []
    for row in cross["pairs"]:
        strip = f'<img src="{html.escape(row["strip"])}" loading="lazy" alt="">' if row.get("strip") else ""
        cards.append(
            f'<div class="card"><div class="title">face #{row["face"]["index"]} <b>{html.escape(str(row["face"]["name"]))}</b> + '
            f"cat #{row['cat']['index']} <b>{html.escape(str(row['cat']['name']))}</b></div>"
            f'<div class="body">{strip}'
            + _bars(
                {
                    f"face {row['face']['main_factor']}": row["face_change"],
                    f"cat {row['cat']['main_factor']}": row["cat_change"],
                    "both": row["both_changed"],
                    "interference on cat": row["interference_on_cat"],
                    "interference on face": row["interference_on_face"],
                    "off-target": row.get("off_target", 0.0),
                },
                None,
            )
            + "</div></div>"
        )
    alone = "".join(
        f"<tr><td>{html.escape(r['part'])} #{r['index']}</td><td>{html.escape(str(r['name']))}</td>"
        f"<td>{_num(r['own_change'])}</td><td>{_num(r['interference'])}</td></tr>"
        for r in cross["alone"]
    )
    localized = ""
    if cross.get("localized"):
        local = cross["localized"]["summary"]
        localized = (
            f"<p>Localized ({html.escape(str(cross['localized']['region']))} regions, each direction its own): face change "
            f"{_num(local['mean_face_change'])}, cat change {_num(local['mean_cat_change'])}, both "
            f"{_num(local['mean_both_changed'])}, interference <b>{_num(local['interference'])}</b> (alone: "
            f"{_num(local['interference_alone'])}); PSNR outside the pairs' regions {_num(local.get('psnr_outside_global'), 1)} "
            f"(global) &rarr; {_num(local.get('psnr_outside_local'), 1)} dB (localized), region {_percent(local.get('region_fraction'))}.</p>"
        )
    return (
        f"<h2>Cross-domain: faces + cats on {cross['images']} scenes</h2>"
        f"<p>Files: <code>{html.escape(cross['faces_file'])}</code>, <code>{html.escape(cross['cats_file'])}</code>. "
        "Each direction's own change is its main factor on its own object; interference is the fraction of scenes "
        "where the OTHER object changed (shared background excluded; in a pair, each object against its own "
        "direction's edit alone: what the other direction did to it); off-target counts, against the reconstruction, "
        f"any change beyond each direction's main factor, its own side effects included. Mean over pairs: face change {_num(summary['mean_face_change'])}, cat change "
        f"{_num(summary['mean_cat_change'])}, both {_num(summary['mean_both_changed'])}, interference "
        f"<b>{_num(summary['interference'])}</b> (directions alone: {_num(summary['interference_alone'])}).</p>"
        + localized
        + _modes_table(cross)
        + f"<table><tr><th>direction alone</th><th>name</th><th>own change</th><th>interference</th></tr>{alone}</table>"
        + "".join(cards)
    )


def _modes_table(cross: Mapping[str, Any]) -> str:
    modes = cross.get("modes")
    if not modes:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in MODE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _mode_cells(mode, block["summary"])) + "</tr>"
        for mode, block in modes.items()
    )
    return (
        "<p>Region modes side by side (each term localized on its own object: <code>box</code> is the box a user "
        "would draw around it, <code>auto-in-box</code> an auto region kept inside that box):</p>"
        f"<table><tr>{head}</tr>{body}</table>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; font-size: .9rem; }
td, th { border: 1px solid #ddd; padding: .2rem .5rem; text-align: left; }
td.ok, b.ok { color: #186a2e; } .warn { color: #a33; } .muted { color: #777; font-size: .85rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem; margin: .6rem 0; }
.card .body { display: flex; gap: 1rem; align-items: flex-start; flex-wrap: wrap; margin-top: .4rem; }
.card img { max-width: 560px; image-rendering: pixelated; }
.bars { min-width: 320px; font-size: .8rem; }
.row { display: flex; align-items: center; gap: .4rem; margin: 1px 0; }
.row .name { width: 150px; text-align: right; }
.bar { display: inline-block; width: 160px; height: 10px; background: #eee; }
.bar > span { display: block; height: 100%; background: #8aa4c8; }
.bar.main > span { background: #2f6fb7; }
.row .val { width: 3em; }
code { background: #f3f3f3; padding: 0 .3em; }
"""


def render_report(results: Mapping[str, Any]) -> str:
    """The whole HTML page for a results dict."""
    settings = results.get("settings", {})
    domain = str(results.get("domain"))
    title = f"NoiseCLR benchmark: {domain}"
    definitions = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (results.get("definitions") or {}).items()
    )
    sections = []
    for name, result in (results.get("methods") or {}).items():
        cards = "".join(_direction_card(record) for record in result["directions"])
        file_note = (
            f" Annotated directions: <code>{html.escape(result['directions_file'])}</code> "
            "(names and chosen edit defaults; use <code>noiseclr edit --direction FILE:INDEX</code>)."
            if result.get("directions_file")
            else ""
        )
        sections.append(
            f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2><p class="muted">{html.escape(result.get("source", ""))}. '
            f"Each strip: held-out images (columns); rows: input, unedited reconstruction, edit at the scale and window "
            f"picked on validation images. Bars: fraction of held-out images whose factor changed (main factor dark).{file_note}</p>"
            + cards
        )
    # A strength grid stores scales None: the report names whichever grid was run.
    if settings.get("scales"):
        amounts = "scales " + ", ".join(f"&plusmn;{s:g}" for s in settings["scales"])
    else:
        amounts = "strengths " + ", ".join(f"&plusmn;{s:g}%" for s in settings.get("strengths") or [])
    windows = ", ".join(f"{a:g}:{b:g}" for a, b in settings.get("windows", []))
    intro = (
        f"<p>Model <code>{html.escape(str(results.get('model', {}).get('name')))}</code>; {settings.get('steps')} "
        f"{html.escape(str(settings.get('inversion')))} steps; edit grid: {amounts} &times; windows {windows}; "
        f"selection on {settings.get('validation')} validation images, all numbers on {settings.get('heldout')} held-out "
        f"images. Every change is counted against the unedited reconstruction of the same inversion.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{intro}
<pre>{html.escape(format_table(results))}</pre>
{_summary_table(results)}
{_localized(results)}
{_coverage_matrix(results)}
{_baseline(results)}
<details><summary>Definitions</summary><ul>{definitions}</ul></details>
{"".join(sections)}
{_cross(results)}
</body></html>
"""


def write_report(path: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``report.html`` into the results folder (image links are relative to it)."""
    return atomic_write_text(path, render_report(results))
