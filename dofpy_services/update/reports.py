"""Campaign reports: :func:`build_report` computes a :class:`CampaignReport`
from tracking records (:mod:`dofpy_services.update.tracking`), and the
renderers print it as a table, JSON, CSV, or one self-contained HTML file
whose progress over time is an inline SVG chart (no script, no external
resource).

What is counted: *scheduled* (every record), *started* (the device was
notified or went further, whatever became of it after), *succeeded* (the
Version service saw it boot and accept the version: the ``succeeded``
state, never a written image),
*failed* (failed, rolled back or timed out); time to update is from a
device's first transition (scheduled) to its success; *image bytes
delivered* (``bytes_served``) is what the devices reported fetching over the
network in their signed install reports (the largest each reported; 0 for a
device that has not reported, or reports from before the count existed).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dofpy_services.update.tracking import (
    STARTED_STATES,
    DeviceState,
    TrackingRecord,
)

__all__ = [
    "CHART_BACKGROUND",
    "FORMATS",
    "CampaignReport",
    "ProgressPoint",
    "WaveCounts",
    "build_report",
    "render_csv",
    "render_html",
    "render_json",
    "render_report",
    "render_table",
]

FORMATS = ("table", "json", "csv", "html")
FAILED_STATES = frozenset({DeviceState.FAILED, DeviceState.ROLLED_BACK, DeviceState.TIMED_OUT})
PERCENTILES = (50, 90, 99)
CHART_WIDTH = 640
CHART_HEIGHT = 240
CHART_MARGIN = 40
CHART_ID = "progress-chart"
CHART_BACKGROUND = "#fdf6e3"
"""The chart's own background, unlike the page's (white): where the chart is."""
BYTES_LABEL = "image bytes delivered (reported by devices)"
_SERIES = (("started", "#1f77b4"), ("succeeded", "#2ca02c"), ("failed", "#d62728"))


@dataclass(frozen=True, slots=True)
class WaveCounts:
    wave: int
    scheduled: int
    started: int
    succeeded: int
    failed: int
    bytes_served: int = 0
    """Image bytes delivered to the wave's devices (reported by them)."""


@dataclass(frozen=True, slots=True)
class ProgressPoint:
    """Cumulative counts at ``time``: devices started, succeeded, failed."""

    time: float
    started: int
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class CampaignReport:
    campaign: str
    scheduled: int
    started: int
    succeeded: int
    failed: int
    states: dict[str, int]
    waves: tuple[WaveCounts, ...]
    failure_reasons: dict[str, dict[str, int]]
    """Stage -> reason -> devices: a failed device's stage; ``rolled-back``;
    a timed-out device's ``timed out in STATE`` (the state it went silent
    in, its reason how long: ``silent for 30 s``)."""
    time_to_update: dict[str, float | None]
    """``p50``, ``p90``, ``p99`` seconds (``None`` with no success)."""
    bytes_served: int
    """Image bytes delivered, as the devices reported them (see the module)."""
    progress: tuple[ProgressPoint, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "scheduled": self.scheduled,
            "started": self.started,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "states": self.states,
            "waves": [
                {
                    "wave": w.wave,
                    "scheduled": w.scheduled,
                    "started": w.started,
                    "succeeded": w.succeeded,
                    "failed": w.failed,
                    "bytes_served": w.bytes_served,
                }
                for w in self.waves
            ],
            "failure_reasons": self.failure_reasons,
            "time_to_update": self.time_to_update,
            "bytes_served": self.bytes_served,
            "progress": [
                {"time": p.time, "started": p.started, "succeeded": p.succeeded, "failed": p.failed}
                for p in self.progress
            ],
        }


def _percentile(sorted_values: Sequence[float], percent: int) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


TIMED_OUT = "timed out"
"""The start of a timed-out device's key in ``failure_reasons``."""


def _timed_out_in(record: TrackingRecord) -> str:
    """Where a timed-out device went silent: the state it was in (the
    transition before the timeout), else the stage the timeout names."""
    *before, last = record.transitions
    if before and before[-1].state in STARTED_STATES:
        return f"{TIMED_OUT} in {before[-1].state.value}"
    if last.stage is not None:
        return f"{TIMED_OUT} in {last.stage.value}"
    return TIMED_OUT


def _failure_key(record: TrackingRecord) -> tuple[str, str] | None:
    state = record.state
    last = record.transitions[-1] if record.transitions else None
    if last is None or state not in FAILED_STATES:
        return None
    if state is DeviceState.FAILED:
        assert last.stage is not None
        return last.stage.value, last.reason or "unknown"
    if state is DeviceState.TIMED_OUT:
        return _timed_out_in(record), last.reason or "silent"
    return state.value, last.reason or state.value


def _failure_section(key: str) -> str:
    """The table's section for a ``failure_reasons`` key: a timeout names
    itself (it did not fail *at* a stage: it went silent in one)."""
    return key if key.startswith(TIMED_OUT) else f"failed at {key}"


def build_report(campaign: str, records: Sequence[TrackingRecord]) -> CampaignReport:
    """The report of ``records`` (one per device)."""
    states = Counter(r.state.value for r in records)
    started = [r for r in records if r.started]
    succeeded = [r for r in records if r.state is DeviceState.SUCCEEDED]
    failed = [r for r in records if r.state in FAILED_STATES]
    waves: list[WaveCounts] = []
    for wave in sorted({r.wave for r in records}):
        members = [r for r in records if r.wave == wave]
        waves.append(
            WaveCounts(
                wave,
                len(members),
                sum(r.started for r in members),
                sum(r.state is DeviceState.SUCCEEDED for r in members),
                sum(r.state in FAILED_STATES for r in members),
                sum(r.bytes_served for r in members),
            )
        )
    reasons: dict[str, dict[str, int]] = {}
    for record in failed:
        key = _failure_key(record)
        assert key is not None
        stage, reason = key
        reasons.setdefault(stage, {})
        reasons[stage][reason] = reasons[stage].get(reason, 0) + 1
    durations: list[float] = []
    for record in succeeded:
        done = record.first([DeviceState.SUCCEEDED])
        begun = record.scheduled_at
        if done is not None and begun is not None:
            durations.append(done.time - begun)
    durations.sort()
    events: list[tuple[float, str]] = []
    for record in records:
        begin = record.first(STARTED_STATES)
        if begin is not None:
            events.append((begin.time, "started"))
        last = record.transitions[-1] if record.transitions else None
        if last is not None and record.state is DeviceState.SUCCEEDED:
            events.append((last.time, "succeeded"))
        elif last is not None and record.state in FAILED_STATES:
            events.append((last.time, "failed"))
    events.sort()
    progress: list[ProgressPoint] = []
    totals = {"started": 0, "succeeded": 0, "failed": 0}
    for when, kind in events:
        totals[kind] += 1
        point = ProgressPoint(when, totals["started"], totals["succeeded"], totals["failed"])
        if progress and progress[-1].time == when:
            progress[-1] = point
        else:
            progress.append(point)
    return CampaignReport(
        campaign=campaign,
        scheduled=len(records),
        started=len(started),
        succeeded=len(succeeded),
        failed=len(failed),
        states=dict(sorted(states.items())),
        waves=tuple(waves),
        failure_reasons={k: dict(sorted(v.items())) for k, v in sorted(reasons.items())},
        time_to_update={f"p{p}": _percentile(durations, p) for p in PERCENTILES},
        bytes_served=sum(r.bytes_served for r in records),
        progress=tuple(progress),
    )


def _summary_rows(report: CampaignReport) -> list[tuple[str, str, str]]:
    """(section, key, value) rows: the table's and the CSV's content."""
    rows: list[tuple[str, str, str]] = [
        ("total", "scheduled", str(report.scheduled)),
        ("total", "started", str(report.started)),
        ("total", "succeeded", str(report.succeeded)),
        ("total", "failed", str(report.failed)),
        ("total", BYTES_LABEL, str(report.bytes_served)),
    ]
    rows += [("state", state, str(n)) for state, n in report.states.items()]
    for wave in report.waves:
        rows.append(
            (
                f"wave {wave.wave}",
                "scheduled/started/succeeded/failed",
                f"{wave.scheduled}/{wave.started}/{wave.succeeded}/{wave.failed}",
            )
        )
        rows.append((f"wave {wave.wave}", BYTES_LABEL, str(wave.bytes_served)))
    for stage, reasons in report.failure_reasons.items():
        section = _failure_section(stage)
        rows += [(section, reason, str(n)) for reason, n in reasons.items()]
    for name, value in report.time_to_update.items():
        rows.append(("time to update", name, "-" if value is None else f"{value:.1f} s"))
    return rows


def render_table(report: CampaignReport) -> str:
    rows = [("section", "what", "value"), *_summary_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"campaign {report.campaign}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def render_json(report: CampaignReport) -> str:
    return json.dumps(report.to_json(), indent=2) + "\n"


def render_csv(report: CampaignReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("section", "what", "value"))
    writer.writerows(_summary_rows(report))
    return out.getvalue()


def progress_svg(report: CampaignReport) -> str:
    """The progress over time as an inline SVG: cumulative started,
    succeeded and failed devices against time since the first event."""
    width, height, margin = CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN
    parts = [
        f'<svg id="{CHART_ID}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="devices started, succeeded and failed over time">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="{CHART_BACKGROUND}"/>',
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - 10}" y2="{height - margin}" '
        'stroke="#333333" stroke-width="1"/>',
        f'<line x1="{margin}" y1="10" x2="{margin}" y2="{height - margin}" '
        'stroke="#333333" stroke-width="1"/>',
    ]
    points = report.progress
    if points:
        begin = points[0].time
        span = max(points[-1].time - begin, 1e-9)
        top = max(report.scheduled, 1)
        plot_w = width - margin - 10
        plot_h = height - margin - 10

        def xy(when: float, count: int) -> str:
            x = margin + (when - begin) / span * plot_w
            y = height - margin - count / top * plot_h
            return f"{x:.1f},{y:.1f}"

        for name, colour in _SERIES:
            # Counts change at events and hold between them: a step line.
            steps = [xy(begin, 0)]
            for before, point in zip((None, *points), points, strict=False):
                if before is not None:
                    steps.append(xy(point.time, getattr(before, name)))
                steps.append(xy(point.time, getattr(point, name)))
            path = " ".join(steps)
            parts.append(
                f'<polyline class="series-{name}" fill="none" stroke="{colour}" '
                f'stroke-width="3" points="{path}"/>'
            )
        parts.append(
            f'<text x="{margin}" y="{height - 12}" font-size="11">0 s</text>'
            f'<text x="{width - 60}" y="{height - 12}" font-size="11">{span:.0f} s</text>'
            f'<text x="4" y="18" font-size="11">{top}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: CampaignReport) -> str:
    """One self-contained HTML file: the summary tables and the SVG chart."""
    title = html.escape(f"Campaign {report.campaign}")
    rows = "".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
        for a, b, c in _summary_rows(report)
    )
    legend = " ".join(
        f'<span style="color:{colour}">&#9632; {name}</span>' for name, colour in _SERIES
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:16px;background:#ffffff}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
        f"</head><body><h1>{title}</h1>"
        f"<h2>Progress over time</h2><div>{legend}</div>{progress_svg(report)}"
        "<h2>Summary</h2><table><tr><th>section</th><th>what</th><th>value</th></tr>"
        f"{rows}</table></body></html>\n"
    )


def render_report(report: CampaignReport, fmt: str) -> str:
    renderers = {
        "table": render_table,
        "json": render_json,
        "csv": render_csv,
        "html": render_html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")
    return renderers[fmt](report)
