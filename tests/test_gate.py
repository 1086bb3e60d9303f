"""The CI gate end to end: generated estates through `romirecon run`, judged by the exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

CUSTOMERS = "200"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gate") / "clean"
    r = run_cli(
        "generate", "--out", str(d), "--customers", CUSTOMERS, "--seed", "3", "--dup-rate", "0"
    )
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gate") / "dirty"
    r = run_cli(
        "generate", "--out", str(d), "--customers", CUSTOMERS, "--seed", "3", "--dup-rate", "0.05"
    )
    assert r.returncode == 0, r.stderr
    return d


def test_clean_estate_passes_with_default_thresholds(clean: Path) -> None:
    r = run_cli("run", "--project", str(clean), "--out", str(clean / "out"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    junit = (clean / "out" / "junit.xml").read_text()
    assert "<failure" not in junit and "<error" not in junit


def test_injected_duplicates_breach_the_sla(dirty: Path) -> None:
    r = run_cli("run", "--project", str(dirty), "--out", str(dirty / "out"))
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr
    junit = (dirty / "out" / "junit.xml").read_text()
    assert "<failure" in junit and "duplicate_rate" in junit
    # --fail-on never reports the breach but does not gate
    r = run_cli("run", "--project", str(dirty), "--out", str(dirty / "out2"), "--fail-on", "never")
    assert r.returncode == 0


def test_fail_on_warn_turns_a_warning_into_exit_1(clean: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load((clean / "romirecon.yaml").read_text())
    # a rule that can only warn: more than one row read in any source
    doc["sla"] = {"checks": [{"metric": "rows_read", "warn": 1}]}
    (clean / "romirecon.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        assert run_cli("run", "--project", str(clean), "--out", str(tmp_path / "a")).returncode == 0
        r = run_cli(
            "run", "--project", str(clean), "--out", str(tmp_path / "b"), "--fail-on", "warn"
        )
        assert r.returncode == 1
    finally:
        doc.pop("sla")
        (clean / "romirecon.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
