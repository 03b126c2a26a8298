"""Ground-truth benchmark: what each direction changes, read from the images by the factor readers.

Edit renders of the procedural world, read their factors back with the shipped readers, count what
changed. The protocol, the metrics, the selection rule, the methods and the output folder are
specified in ``docs/benchmark.md``.

Modules: :mod:`.settings` (:class:`BenchSettings`, the methods), :mod:`.methods` (each method's
directions, inputs), :mod:`.evaluate` (one method: selection, measurement, OUT/<method>/),
:mod:`.cross_domain` (OUT/cross-domain/), :mod:`.run` (:func:`run_bench`) and :mod:`.report`
(the table and report.html).
"""

from __future__ import annotations

from .cross_domain import pick_cross_directions, run_cross_domain
from .evaluate import evaluate_method
from .methods import MethodDirections, calibrate_method, check_bench_inputs, parse_directions_args, prompt_captions
from .report import format_table, render_report, write_report
from .run import BenchResult, run_bench
from .settings import (
    BENCH_DISCOVERY_DEFAULTS,
    BENCH_DOMAINS,
    BENCH_NEGATIVES,
    DEFAULT_METHODS,
    DISCOVERY_METHODS,
    METHODS,
    REGION_MODES,
    BenchSettings,
)

__all__ = [
    "BENCH_DISCOVERY_DEFAULTS",
    "BENCH_DOMAINS",
    "BENCH_NEGATIVES",
    "DEFAULT_METHODS",
    "DISCOVERY_METHODS",
    "METHODS",
    "REGION_MODES",
    "BenchResult",
    "BenchSettings",
    "MethodDirections",
    "calibrate_method",
    "check_bench_inputs",
    "evaluate_method",
    "format_table",
    "parse_directions_args",
    "pick_cross_directions",
    "prompt_captions",
    "render_report",
    "run_bench",
    "run_cross_domain",
    "write_report",
]
