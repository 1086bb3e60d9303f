"""The command line: help on every command, exit codes per class of error, one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from click.testing import CliRunner

from romirecon.cli import main
from tests.conftest import run_cli, write_project


def all_commands() -> list[str]:
    return sorted(main.commands)


@pytest.mark.parametrize("command", all_commands())
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    doc = main.commands[command].help or ""
    assert len(doc.strip()) > 20, f"{command} has no real help text"
    first_words = " ".join(doc.split()[:6])
    assert first_words in " ".join(result.output.split())


def test_version() -> None:
    from romirecon import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_run_passes_with_exit_0(contact_project: Path) -> None:
    r = run_cli("run", "--project", str(contact_project), "--out", str(contact_project / "o"))
    assert r.returncode == 0, r.stderr
    assert (contact_project / "o" / "quarantine.parquet").exists()
    assert "sf_contacts" in r.stdout


def test_config_error_exits_2_and_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "romirecon.yaml").write_text(
        "reporting_curency: USD\n"  # misspelled
        "sources:\n"
        "  - name: a\n    system: crmm\n    entity: contact\n    mapping: m.yaml\n    path: x\n"
        "outputs: {dirr: out}\n"
    )
    r = run_cli("validate", "--project", str(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    err = r.stderr
    assert "did you mean 'reporting_currency'" in err
    assert "'crmm' is not one of" in err
    assert "did you mean 'dir'" in err
    assert "sources[0].system" in err


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    (tmp_path / "romirecon.yaml").write_text("reporting_currency: USD\nsources: [\n")
    r = run_cli("run", "--project", str(tmp_path))
    assert r.returncode == 2
    assert "romirecon.yaml:" in r.stderr and "invalid YAML" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_project_file_exits_2(tmp_path: Path) -> None:
    r = run_cli("run", "--project", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "no project file" in r.stderr


def test_unknown_option_exits_2(contact_project: Path) -> None:
    r = run_cli("run", "--project", str(contact_project), "--fail-on", "sometimes")
    assert r.returncode == 2


def test_missing_input_exits_4_naming_source_and_glob(contact_project: Path) -> None:
    (contact_project / "data" / "Contact.csv").unlink()
    r = run_cli("run", "--project", str(contact_project))
    assert r.returncode == 4
    assert "sf_contacts" in r.stderr and "data/Contact*.csv" in r.stderr
    assert r.stderr.count("\n") == 1  # one line
    junit = (contact_project / "out" / "junit.xml").read_text()
    assert "<error" in junit and "sf_contacts" in junit  # CI still sees why


def test_empty_file_exits_4(contact_project: Path) -> None:
    (contact_project / "data" / "Contact.csv").write_text("")
    r = run_cli("run", "--project", str(contact_project))
    assert r.returncode == 4
    assert "no data rows" in r.stderr


def test_header_only_exits_4(contact_project: Path) -> None:
    (contact_project / "data" / "Contact.csv").write_text(
        "Id,Email,LastName,CurrencyIsoCode,CreatedDate\n"
    )
    r = run_cli("run", "--project", str(contact_project))
    assert r.returncode == 4


def test_truncated_gzip_exits_3_naming_file(tmp_path: Path) -> None:
    from tests.conftest import CONTACT_MAPPING

    data = gzip.compress(b"Id,Email,LastName\n" + b"003A,a@x.com,Lee\n" * 5000)
    proj = write_project(
        tmp_path / "p",
        [{"name": "c", "system": "crm", "entity": "contact", "mapping": "mappings/c.yaml",
          "path": "data/*.csv.gz"}],
        {"c": {**CONTACT_MAPPING, "columns": {k: v for k, v in CONTACT_MAPPING["columns"].items()
                                              if k in ("source_id", "email", "last_name")}}},
        {"data/Contact.csv.gz": data[: len(data) // 2]},
    )  # fmt: skip
    r = run_cli("run", "--project", str(proj))
    assert r.returncode == 3, r.stderr
    assert "data/Contact.csv.gz" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_renamed_required_column_exits_3_with_hint(contact_project: Path) -> None:
    (contact_project / "data" / "Contact.csv").write_text(
        "Id,Email,Last_Name,CurrencyIsoCode,CreatedDate\n003A,a@x.com,Lee,USD,2024-01-01\n"
    )
    r = run_cli("run", "--project", str(contact_project))
    assert r.returncode == 3
    assert "'LastName'" in r.stderr and "did you mean 'Last_Name'" in r.stderr


def test_validate_reports_unknown_source_columns(contact_project: Path) -> None:
    (contact_project / "data" / "Contact.csv").write_text(
        "Id,E_mail,Last_Name,CurrencyIsoCode,CreatedDate\n003A,a@x.com,Lee,USD,2024-01-01\n"
    )
    r = run_cli("validate", "--project", str(contact_project))
    # a required column missing is an error (run would stop on it) ...
    assert r.returncode == 2
    assert "columns.last_name.from" in r.stderr and "did you mean 'Last_Name'" in r.stderr
    # ... an optional one is a warning (run leaves it empty)
    assert "columns.email.from" not in r.stderr
    (contact_project / "data" / "Contact.csv").write_text(
        "Id,E_mail,LastName,CurrencyIsoCode,CreatedDate\n003A,a@x.com,Lee,USD,2024-01-01\n"
    )
    r = run_cli("validate", "--project", str(contact_project))
    assert r.returncode == 0
    assert "warning:" in r.stdout and "did you mean 'E_mail'" in r.stdout


def test_validate_the_demo_estate() -> None:
    # every export of the demo (the wide ECB file through its unpivot included) fits its mapping
    from tests.conftest import ROOT

    r = run_cli("validate", "--project", str(ROOT / "fixtures" / "demo"))
    assert r.returncode == 0, r.stderr
    assert "valid (" in r.stdout


def test_validate_ok(contact_project: Path) -> None:
    r = run_cli("validate", "--project", str(contact_project))
    assert r.returncode == 0, r.stderr
    assert "valid (1 sources)" in r.stdout


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = run_cli("--debug", "run", "--project", str(tmp_path / "nope"))
    assert r.returncode != 0
    assert "Traceback" in r.stderr


def test_init_scaffolds_a_valid_commented_project(tmp_path: Path) -> None:
    r = run_cli("init", str(tmp_path / "new"))
    assert r.returncode == 0
    text = (tmp_path / "new" / "romirecon.yaml").read_text()
    assert text.count("#") > 10
    import yaml

    from romirecon.config import schema_problems

    assert schema_problems(yaml.safe_load(text), "project", "x") == []
    again = run_cli("init", str(tmp_path / "new"))
    assert again.returncode == 2 and "already exists" in again.stderr
