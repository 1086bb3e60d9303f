"""sla_report.html in a real headless Chromium: no console errors, charts in the DOM, and a
screenshot that is not blank and shows the chart colours."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import _sla_estate as E
import duckdb
import numpy as np
import pytest

from romirecon.report import to_html, write_all
from romirecon.stages.sla import evaluate

pytestmark = pytest.mark.browser

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary installed")


def chromium(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
        "--v=0", "--hide-scrollbars", *extra, url,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """Every page console message Chromium logged (errors, CSP violations, failed loads)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG decoder (8-bit RGB/RGBA, non-interlaced): height x width x channels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    ch = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * ch)
    out = np.zeros((height, width * ch), dtype=np.int32)
    prev = np.zeros(width * ch, dtype=np.int32)
    for y in range(height):
        ftype, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up
            cur = (line + prev) & 0xFF
        else:  # Sub, Average, Paeth: sequential along the row
            cur = line.copy()
            for x in range(width * ch):
                a = cur[x - ch] if x >= ch else 0
                b = prev[x]
                c = prev[x - ch] if x >= ch else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) >> 1
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (cur[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(height, width, ch)[:, :, :3]


def colour_pixels(img: np.ndarray, hex_colour: str, tol: int = 12) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=2) <= tol).sum())


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    con = duckdb.connect()
    E.build(con)
    # a few earlier runs so the trend charts have lines, not single dots
    for i, day in enumerate((27, 28, 29, 30)):
        from datetime import UTC, datetime

        evaluate(con, f"run-p{i}", {}, now=datetime(2026, 11, day, tzinfo=UTC))
    write_all(evaluate(con, E.RUN, {}, project="demo", now=E.NOW), out)
    return out


@needs_chromium
def test_detector_sees_console_errors(tmp_path: Path) -> None:
    """Negative control: a page with a script error is caught by the same detector."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    res = chromium(tmp_path, bad.as_uri(), "--dump-dom")
    assert any("Uncaught ReferenceError" in m for m in console_messages(res.stderr))


@needs_chromium
def test_report_loads_without_console_errors_and_charts_in_dom(
    report_dir: Path, tmp_path: Path
) -> None:
    res = chromium(tmp_path, (report_dir / "sla_report.html").as_uri(), "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    dom = res.stdout
    assert len(re.findall(r"<svg[^>]*class=\"linechart\"", dom)) >= 4
    assert len(re.findall(r"<polyline ", dom)) >= 4  # lines over 5 runs
    assert "<rect" in dom and "barchart" in dom
    # the contact named <script>alert(1)</script> is text in the DOM, never an element
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)" not in dom


@needs_chromium
def test_screenshot_is_not_blank_and_shows_charts(report_dir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    res = chromium(
        tmp_path, (report_dir / "sla_report.html").as_uri(),
        f"--screenshot={shot}", "--window-size=1000,1300",
    )  # fmt: skip
    assert shot.exists(), res.stderr[-2000:]
    img = decode_png(shot.read_bytes())
    assert img.shape[:2] == (1300, 1000)
    assert img.std() > 10  # not a blank page
    assert colour_pixels(img, to_html.LINE) > 500  # chart lines and points drawn
    assert colour_pixels(img, to_html.STATUS_COLORS["fail"]) > 50  # the FAIL badge / levels
