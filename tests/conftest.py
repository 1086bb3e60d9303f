from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_project(
    root: Path,
    sources: list[dict[str, Any]],
    mappings: dict[str, dict[str, Any]],
    files: dict[str, str | bytes],
    **extra: Any,
) -> Path:
    """A project folder: romirecon.yaml, mappings/<name>.yaml and data files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mappings").mkdir(exist_ok=True)
    for name, doc in mappings.items():
        (root / "mappings" / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    doc = {"version": 1, "reporting_currency": "USD", "sources": sources, **extra}
    (root / "romirecon.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


CONTACT_MAPPING = {
    "vendor": "salesforce",
    "object": "Contact",
    "entity": "contact",
    "columns": {
        "source_id": {"from": "Id", "required": True},
        "email": {"from": "Email", "lower": True},
        "last_name": {"from": "LastName", "required": True},
        "currency": {"from": "CurrencyIsoCode"},
        "created_at": {"from": "CreatedDate"},
    },
}


@pytest.fixture
def contact_project(tmp_path: Path) -> Path:
    csv = (
        "Id,Email,LastName,CurrencyIsoCode,CreatedDate\n"
        "003A,A@x.com,Lee,USD,2024-01-15T10:20:30.000Z\n"
        "003B,b@x.com,,EUR,2024-01-16T10:20:30.000Z\n"
    )
    return write_project(
        tmp_path / "proj",
        [
            {
                "name": "sf_contacts",
                "system": "crm",
                "entity": "contact",
                "mapping": "mappings/contact.yaml",
                "path": "data/Contact*.csv",
            }
        ],
        {"contact": CONTACT_MAPPING},
        {"data/Contact.csv": csv},
    )


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script the way cron does (a real process, real exit code)."""
    exe = Path(sys.executable).parent / "romirecon"
    env = {k: v for k, v in os.environ.items() if k != "TRACEPARENT"}
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


# the staged tables the billing stage reads
BILLING_TABLES = (
    "invoice", "invoice_line", "credit_note", "refund", "subscription", "billing_event", "fx_rate",
)  # fmt: skip


def insert_staged(con: Any, entity: str, rows: list[dict[str, Any]], **provenance: Any) -> None:
    """Test data into `stg_<entity>`: one INSERT per hand-written row, numbered `source_row`
    1, 2, ...; `provenance` fills the provenance columns, a row's own values win."""
    for i, row in enumerate(rows, start=1):
        full = {**provenance, "source_row": i, **row}
        cols = ", ".join(f'"{c}"' for c in full)
        marks = ", ".join("?" for _ in full)
        con.execute(f"INSERT INTO stg_{entity} ({cols}) VALUES ({marks})", list(full.values()))
