"""Project and mapping files: load, validate against the shipped JSON Schemas, resolve paths.

Every problem is collected before anything is raised, so `romirecon validate` lists them all at
once, each as `file: path.inside.file: message` with a "did you mean" where a near name exists.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from romirecon.exitcodes import ConfigError
from romirecon.model import ENTITIES, SYSTEMS

PROJECT_FILE = "romirecon.yaml"


@cache
def schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped inside the package (`romirecon/schemas/<name>.schema.json`)."""
    text = resources.files("romirecon.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (schema(n)["$id"], Resource.from_contents(schema(n))) for n in ("project", "mapping")
    )
    return Draft202012Validator(schema(name), registry=registry)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A hint naming the closest option: a case-insensitive match first, then difflib's."""
    opts = sorted(set(options))
    folded = [o for o in opts if o.lower() == word.lower() and o != word]
    close = folded or difflib.get_close_matches(word, opts, n=1, cutoff=0.6)
    if not close:
        lower = {o.lower(): o for o in opts}
        close = [
            lower[c] for c in difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
        ]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fmt_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top)"


def schema_problems(doc: Any, name: str, filename: str) -> list[str]:
    """Every schema violation of `doc`, worded for a person, sorted by location."""
    problems: list[tuple[str, str]] = []
    for err in _validator(name).iter_errors(doc):
        loc = _fmt_path(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = set(err.schema.get("properties", {}))
            extra = set(err.instance) - allowed
            for key in sorted(extra):
                hint = did_you_mean(key, allowed)
                where = _fmt_path([*err.absolute_path, key])
                problems.append((where, f"unknown key '{key}'{hint}"))
            continue
        if err.validator == "required":
            problems.append((loc, err.message.replace("is a required property", "is required")))
            continue
        if err.validator == "enum":
            opts = ", ".join(map(str, err.validator_value))
            problems.append((loc, f"{err.instance!r} is not one of: {opts}"))
            continue
        if err.validator == "oneOf" and isinstance(err.instance, dict):
            keys = [k for k in ("from", "expr", "const") if k in err.instance]
            if len(keys) != 1:
                problems.append((loc, "give exactly one of 'from', 'expr' or 'const'"))
                continue
            # the branch matched otherwise: report the real sub-errors
            for sub in sorted(err.context, key=lambda e: list(e.absolute_path)):
                if sub.validator not in ("required", "not"):
                    problems.append((_fmt_path(sub.absolute_path), sub.message))
            continue
        problems.append((loc, err.message))
    return [f"{filename}: {loc}: {msg}" for loc, msg in sorted(set(problems))]


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None


@dataclass
class ColumnSpec:
    name: str
    type: str
    source: list[str] = field(default_factory=list)  # 'from' (alternatives)
    expr: str | None = None
    const: Any = None
    required: bool = False
    enum: list[Any] | None = None
    pattern: str | None = None
    min: Any = None
    max: Any = None
    formats: list[str] | None = None
    timezone: str | None = None
    unit: str = "major"
    currency: str = "currency"
    true_values: list[str] | None = None
    false_values: list[str] | None = None
    separator: str = ";"
    lower: bool = False
    trim: bool = True
    map: dict[str, Any] | None = None


@dataclass
class Mapping:
    path: Path
    entity: str
    vendor: str
    object: str
    columns: dict[str, ColumnSpec]
    format: dict[str, Any]
    timezone: str | None
    currency: str | None
    exponents: dict[str, int]
    unpivot: dict[str, Any] | None
    filter: str | None
    unique: list[list[str]]
    match_keys: list[list[str]]


@dataclass
class Source:
    name: str
    system: str
    entity: str
    mapping_path: Path
    patterns: list[str]
    format: dict[str, Any]
    required: bool
    max_age_hours: float | None
    priority: int
    mapping: Mapping


@dataclass
class Project:
    root: Path
    file: Path
    raw: dict[str, Any]
    reporting_currency: str
    timezone: str
    sources: list[Source]
    output_dir: Path
    output_formats: list[str]
    state_dir: Path
    memory_limit: str | None
    threads: int | None
    temp_dir: Path | None
    hash_pii: bool
    keep_tables: tuple[str, ...] = ()

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.raw.get(name) or {})


def resolve_inside(root: Path, value: str, what: str, problems: list[str], where: str) -> Path:
    """A path from the project file: relative ones resolve against the project folder and may not
    escape it (`../../etc`); absolute paths are taken as given."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    full = (root / p).resolve()
    try:
        full.relative_to(root.resolve())
    except ValueError:
        problems.append(
            f"{where}: {what} '{value}' escapes the project folder (use an absolute path)"
        )
    return full


def _load_mapping(path: Path, display: str, problems: list[str]) -> Mapping | None:
    try:
        doc = load_yaml(path)
    except ConfigError as e:
        problems.append(e.message)
        return None
    if not isinstance(doc, dict):
        problems.append(f"{display}: (top): a mapping file must be a YAML mapping")
        return None
    found = schema_problems(doc, "mapping", display)
    problems.extend(found)
    if found:
        return None
    entity = doc["entity"]
    if entity not in ENTITIES:
        problems.append(
            f"{display}: entity: unknown entity '{entity}'{did_you_mean(entity, ENTITIES)}"
        )
        return None
    canon = ENTITIES[entity]
    cols: dict[str, ColumnSpec] = {}
    for name, spec in doc["columns"].items():
        if name not in canon:
            problems.append(
                f"{display}: columns.{name}: '{name}' is not a column of entity '{entity}'"
                f"{did_you_mean(name, canon)}"
            )
            continue
        ctype = spec.get("type", canon[name].type)
        if ctype != canon[name].type and not (canon[name].type == "money" and ctype == "integer"):
            problems.append(
                f"{display}: columns.{name}.type: '{ctype}' but {entity}.{name} is '{canon[name].type}'"
            )
        src = spec.get("from")
        cols[name] = ColumnSpec(
            name=name,
            type=canon[name].type,
            source=[src] if isinstance(src, str) else list(src or []),
            expr=spec.get("expr"),
            const=spec.get("const"),
            required=bool(spec.get("required", False)),
            enum=spec.get("enum"),
            pattern=spec.get("pattern"),
            min=spec.get("min"),
            max=spec.get("max"),
            formats=spec.get("formats"),
            timezone=spec.get("timezone"),
            unit=spec.get("unit", "major"),
            currency=spec.get("currency", "currency"),
            true_values=spec.get("true_values"),
            false_values=spec.get("false_values"),
            separator=spec.get("separator", ";"),
            lower=bool(spec.get("lower", False)),
            trim=bool(spec.get("trim", True)),
            map=spec.get("map"),
        )
    for name, c in cols.items():
        if c.type == "money" and c.currency not in cols and not doc.get("currency"):
            problems.append(
                f"{display}: columns.{name}: money needs a currency: map the '{c.currency}' column "
                "or set a top-level 'currency'"
            )
    for key in ("unique", "match_keys"):
        for i, k in enumerate(doc.get(key, [])):
            for col in k:
                if col not in cols:
                    problems.append(
                        f"{display}: {key}[{i}]: '{col}' is not a mapped column{did_you_mean(col, cols)}"
                    )
    return Mapping(
        path=path,
        entity=entity,
        vendor=str(doc.get("vendor", "")),
        object=str(doc.get("object", "")),
        columns=cols,
        format=dict(doc.get("format") or {}),
        timezone=doc.get("timezone"),
        currency=doc.get("currency"),
        exponents=dict(doc.get("exponents") or {}),
        unpivot=doc.get("unpivot"),
        filter=doc.get("filter"),
        unique=[list(k) for k in doc.get("unique", [])],
        match_keys=[list(k) for k in doc.get("match_keys", [])],
    )


def find_project_file(project: str | Path | None) -> Path:
    base = Path(project) if project else Path.cwd()
    if base.is_file():
        return base
    candidate = base / PROJECT_FILE
    if not candidate.exists():
        raise ConfigError(f"{candidate}: no project file (create one with `romirecon init {base}`)")
    return candidate


def load_project(project: str | Path | None = None, out_dir: str | Path | None = None) -> Project:
    """Load and validate the project file and every mapping it names; raise ConfigError listing
    every problem found."""
    file = find_project_file(project)
    root = file.parent.resolve()
    doc = load_yaml(file)
    display = str(file)
    if not isinstance(doc, dict):
        raise ConfigError(f"{display}: the project file must be a YAML mapping")
    problems = schema_problems(doc, "project", display)
    sources: list[Source] = []
    names: set[str] = set()
    for i, s in enumerate(doc.get("sources") or []):
        if not isinstance(s, dict) or not {"name", "system", "entity", "mapping", "path"} <= set(s):
            continue  # schema already reported it
        where = f"{display}: sources[{i}]"
        if s["name"] in names:
            problems.append(f"{where}.name: duplicate source name '{s['name']}'")
        names.add(s["name"])
        if s["system"] not in SYSTEMS:
            continue
        mpath = resolve_inside(root, s["mapping"], "mapping", problems, f"{where}.mapping")
        mapping = _load_mapping(mpath, str(mpath), problems) if mpath.exists() else None
        if not mpath.exists():
            problems.append(f"{where}.mapping: file not found: {s['mapping']}")
        if mapping and mapping.entity != s["entity"]:
            problems.append(
                f"{where}.entity: '{s['entity']}' but mapping {s['mapping']} maps entity '{mapping.entity}'"
            )
        patterns = [s["path"]] if isinstance(s["path"], str) else list(s["path"])
        for p in patterns:
            resolve_inside(root, p, "path", problems, f"{where}.path")
        if mapping:
            sources.append(
                Source(
                    name=s["name"],
                    system=s["system"],
                    entity=s["entity"],
                    mapping_path=mpath,
                    patterns=patterns,
                    format={**mapping.format, **(s.get("format") or {})},
                    required=bool(s.get("required", True)),
                    max_age_hours=s.get("max_age_hours"),
                    priority=int(s.get("priority", 100 + i)),
                    mapping=mapping,
                )
            )
    outputs = doc.get("outputs") or {}
    state = doc.get("state") or {}
    out = (
        Path(out_dir).resolve()
        if out_dir
        else resolve_inside(root, str(outputs.get("dir", "out")), "outputs.dir", problems, display)
    )
    state_dir = resolve_inside(
        root, str(state.get("dir", ".romirecon")), "state.dir", problems, display
    )
    temp_dir = (
        resolve_inside(root, str(state["temp_dir"]), "state.temp_dir", problems, display)
        if state.get("temp_dir")
        else None
    )
    if problems:
        raise ConfigError(
            f"{display}: {len(problems)} problem{'s' if len(problems) != 1 else ''} found",
            details=problems,
        )
    return Project(
        root=root,
        file=file,
        raw=doc,
        reporting_currency=doc["reporting_currency"],
        timezone=doc.get("timezone", "UTC"),
        sources=sources,
        output_dir=out,
        output_formats=list(outputs.get("formats", ["parquet", "csv"])),
        state_dir=state_dir,
        memory_limit=state.get("memory_limit"),
        threads=state.get("threads"),
        temp_dir=temp_dir,
        hash_pii=bool(outputs.get("hash_pii", False)),
        keep_tables=tuple(state.get("keep_tables") or ()),
    )
