"""Campaign reports from a synthetic campaign history: the counts, the four
renderings, the CLI on a tracking export, and the HTML report's chart as
headless Chromium draws it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from dofpy_services.cli import main
from dofpy_services.update.reports import (
    CHART_BACKGROUND,
    CHART_HEIGHT,
    CHART_WIDTH,
    build_report,
    render_csv,
    render_html,
    render_json,
    render_table,
)
from dofpy_services.update.tracking import (
    DeviceState,
    Stage,
    TrackingRecord,
    Transition,
    load_tracking_export,
    write_tracking_export,
)

T0 = 1_800_000_000.0
S = DeviceState
PATH_TO_SUCCESS = (
    S.NOTIFIED, S.AUTHORISED, S.REPROGRAM_MODE, S.TRANSFERRING,
    S.VERIFYING, S.INSTALLING, S.NORMAL_MODE, S.SUCCEEDED,
)  # fmt: skip


def history() -> list[TrackingRecord]:
    """40 devices in three waves: 30 succeed (device n takes 100 + n seconds
    from scheduled to succeeded), 4 fail in transfer, 2 in verify, 1 rolls
    back, 1 times out, 1 defers, 1 is still scheduled."""
    records: list[TrackingRecord] = []
    for n in range(40):
        wave = 0 if n < 2 else 1 if n < 10 else 2
        start = T0 + wave * 1000 + n
        record = TrackingRecord(f"dev-{n:02d}", wave, "2.0", "1.0")
        record = record.with_transition(Transition(start, S.SCHEDULED))
        if n < 30:
            steps = len(PATH_TO_SUCCESS)
            for i, state in enumerate(PATH_TO_SUCCESS):
                record = record.with_transition(
                    Transition(start + (100 + n) * (i + 1) / steps, state)
                )
            record = TrackingRecord(
                record.device, wave, "2.0", "2.0", record.transitions, 1, 1_000_000
            )
        elif n < 34:
            record = record.with_transition(Transition(start + 10, S.TRANSFERRING))
            reason = "block timeout" if n < 33 else "disk full"
            record = record.with_transition(
                Transition(start + 50, S.FAILED, Stage.TRANSFER, reason)
            )
        elif n < 36:
            record = record.with_transition(Transition(start + 10, S.VERIFYING))
            record = record.with_transition(
                Transition(start + 20, S.FAILED, Stage.VERIFY, "bad signature")
            )
        elif n == 36:
            record = record.with_transition(Transition(start + 10, S.INSTALLING))
            record = record.with_transition(
                Transition(start + 90, S.ROLLED_BACK, reason="reverted")
            )
        elif n == 37:
            record = record.with_transition(Transition(start + 10, S.NOTIFIED))
            record = record.with_transition(Transition(start + 5000, S.TIMED_OUT))
        elif n == 38:
            record = record.with_transition(Transition(start + 10, S.DEFERRED, reason="user"))
        records.append(record)
    return records


def test_counts() -> None:
    report = build_report("spring", history())
    assert (report.scheduled, report.started, report.succeeded, report.failed) == (40, 38, 30, 8)
    assert [(w.wave, w.scheduled, w.succeeded) for w in report.waves] == [
        (0, 2, 2), (1, 8, 8), (2, 30, 20),
    ]  # fmt: skip
    assert report.failure_reasons == {
        "transfer": {"block timeout": 3, "disk full": 1},
        "verify": {"bad signature": 2},
        "rolled-back": {"reverted": 1},
        "timed out in notified": {"silent": 1},  # an export's record: no stage, no reason
    }
    # Device n succeeds 100 + n s after it was scheduled: 100..129 s.
    assert report.time_to_update == {"p50": 114.0, "p90": 126.0, "p99": 129.0}
    assert report.bytes_served == 30_000_000
    assert [w.bytes_served for w in report.waves] == [2_000_000, 8_000_000, 20_000_000]
    final = report.progress[-1]
    assert (final.started, final.succeeded, final.failed) == (38, 30, 8)
    assert all(a.time < b.time for a, b in zip(report.progress, report.progress[1:], strict=False))


def test_a_timeout_names_the_state_the_device_went_silent_in() -> None:
    """Not "failed at timed-out": the state it was in and how long it was
    silent (the engine records the stage and the silence), for each state."""
    base = TrackingRecord("a", 0, "2.0", "1.0", (Transition(T0, S.SCHEDULED),))
    records = []
    for n, (state, stage) in enumerate(
        [(S.TRANSFERRING, Stage.TRANSFER), (S.TRANSFERRING, Stage.TRANSFER),
         (S.INSTALLING, Stage.INSTALL)]
    ):  # fmt: skip
        record = base.with_transition(Transition(T0 + 1, S.NOTIFIED))
        record = record.with_transition(Transition(T0 + 2, state))
        timed_out = Transition(T0 + 40, S.TIMED_OUT, stage, "silent for 30 s")
        records.append(replace(record.with_transition(timed_out), device=f"d{n}"))
    # A timeout with no state before it in the log: the stage it names.
    records.append(replace(base, device="d3", transitions=(
        Transition(T0 + 40, S.TIMED_OUT, Stage.VERIFY, "silent for 30 s"),
    )))  # fmt: skip
    report = build_report("x", records)
    assert report.failure_reasons == {
        "timed out in transferring": {"silent for 30 s": 2},
        "timed out in installing": {"silent for 30 s": 1},
        "timed out in verify": {"silent for 30 s": 1},
    }
    table = render_table(report)
    assert re.search(r"^timed out in transferring +silent for 30 s +2$", table, re.M)
    assert "failed at timed" not in table


def test_cancelled_or_deferred_before_notification_never_started() -> None:
    waiting = TrackingRecord("a", 0, "2.0", "1.0", (Transition(T0, S.SCHEDULED),))
    cancelled = waiting.with_transition(Transition(T0 + 1, S.CANCELLED))
    deferred = waiting.with_transition(Transition(T0 + 1, S.DEFERRED))
    late = (
        waiting.with_transition(Transition(T0 + 1, S.NOTIFIED))
        .with_transition(Transition(T0 + 2, S.DEFERRED))
        .with_transition(Transition(T0 + 3, S.CANCELLED))
    )
    report = build_report("x", [cancelled, deferred, late])
    assert (report.scheduled, report.started, report.succeeded, report.failed) == (3, 1, 0, 0)
    assert report.states == {"cancelled": 2, "deferred": 1}


def test_intended_and_actual_versions_are_kept_apart() -> None:
    records = history()
    failed = records[31]
    assert (failed.intended_version, failed.actual_version) == ("2.0", "1.0")
    assert records[0].actual_version == "2.0"


def test_a_failure_names_its_stage() -> None:
    with pytest.raises(ValueError, match="stage"):
        Transition(T0, S.FAILED)


def test_four_renderings() -> None:
    report = build_report("spring", history())
    table = render_table(report)
    assert re.search(r"^failed at transfer +block timeout +3$", table, re.M)
    delivered = r"image bytes delivered \(reported by devices\)"
    assert re.search(rf"^total +{delivered} +30000000$", table, re.M)
    assert re.search(rf"^wave 1 +{delivered} +8000000$", table, re.M)
    assert json.loads(render_json(report)) == report.to_json()
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert rows[0] == ["section", "what", "value"]
    assert ["total", "succeeded", "30"] in rows
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page and "polyline" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained


def test_cli_reads_a_tracking_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "spring.json"
    write_tracking_export(export, "spring", history())
    name, records = load_tracking_export(export)
    assert name == "spring" and records == history()
    for fmt in ("table", "json", "csv"):
        assert main(["update", "report", str(export), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "campaign spring" in out and '"succeeded": 30' in out and "total,failed,8" in out
    target = tmp_path / "spring.html"
    assert main(["update", "report", str(export), "--format", "html", "--out", str(target)]) == 0
    assert "<svg" in target.read_text()


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    position = 0
    for _ in range(height):
        kind, line = raw[position], bytearray(raw[position + 1 : position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(b for j in range(width) for b in line[j * channels : j * channels + 3]))
        previous = line
    return width, height, rows


def test_html_chart_drawn_in_headless_chromium(tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (CI installs it: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report("spring", history())))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
            "--window-size=800,600", page.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    width, _, rows = _png_pixels(shot.read_bytes())
    # The chart's area: where its own background is (the page's is white).
    background = bytes.fromhex(CHART_BACKGROUND.removeprefix("#"))
    where = [
        (x, y) for y, row in enumerate(rows) for x in range(width)
        if row[3 * x : 3 * x + 3] == background
    ]  # fmt: skip
    assert where, "the chart is not on the page"
    left, right = min(x for x, _ in where), max(x for x, _ in where)
    top, bottom = min(y for _, y in where), max(y for _, y in where)
    assert (right - left + 1, bottom - top + 1) == (CHART_WIDTH, CHART_HEIGHT)
    green = bytes((0x2C, 0xA0, 0x2C))
    drawn = coloured = 0
    for y in range(top, bottom + 1):
        for x in range(left, right + 1):
            pixel = rows[y][3 * x : 3 * x + 3]
            if pixel != background:
                drawn += 1
            if all(abs(a - b) < 40 for a, b in zip(pixel, green, strict=True)):
                coloured += 1
    # An empty chart (axes and labels only) has some 1,600 such pixels; this one's three
    # series some 8,000.
    assert drawn > 3000, f"only {drawn} non-background pixels in the chart area"
    assert coloured > 300, f"the succeeded series is not drawn ({coloured} green pixels)"
