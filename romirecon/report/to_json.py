"""sla_report.json: the report model as JSON (schema: romirecon/schemas/sla_report.schema.json)."""

from __future__ import annotations

import json
import math
from typing import Any

from romirecon.report.model import Report

SCHEMA_ID = "https://romirecon.dev/schemas/sla_report.schema.json"


def _clean(x: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def to_dict(report: Report) -> dict[str, Any]:
    return {"$schema": SCHEMA_ID, **_clean(report.to_dict())}


def render(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
