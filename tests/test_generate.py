"""The synthetic estate generator: truth consistency, determinism, duplication vectors, formats."""

from __future__ import annotations

import glob
import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from romirecon.cli import main
from romirecon.generate import SOURCES, generate_estate
from romirecon.generate.truth import round_half_even, spread_by_month
from romirecon.generate.util import day_number, salesforce_ids

VECTORS = {"sync_race", "mapping_error", "manual_entry", "api_retry", "batch_overlap", "merged"}


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("estate")
    generate_estate(out, customers=400, seed=11, dup_rate=0.2)
    return out


def _file_rows(path: Path) -> int:
    """Records in an export, counted by reading the file back (not from the generator)."""
    if path.suffix == ".json":
        doc = json.loads(path.read_text())
        (records,) = [
            v for k, v in doc.items() if k in ("data", "items", "results", "elements", "list")
        ]
        return len(records)
    frame = pl.read_csv(path, infer_schema=False)
    if path.name == "eurofxref-hist.csv":  # wide: one staged rate per published cell
        cells = frame.drop("Date", "").unpivot()
        return cells.filter(pl.col("value") != "N/A").height
    return frame.height


def test_every_record_has_an_entity_and_rows_match_the_files(estate: Path) -> None:
    rec = pl.read_parquet(estate / "truth/records.parquet")
    assert rec["entity_id"].null_count() == 0
    assert (rec["entity_id"].str.len_chars() > 0).all()
    assert rec.select("source_file", "source_row").is_duplicated().sum() == 0
    per_file = dict(rec.group_by("source_file").len().iter_rows())
    for rel, n in per_file.items():
        assert _file_rows(estate / rel) == n, rel
        # rows are numbered 1..n in file order
        rows = rec.filter(pl.col("source_file") == rel)["source_row"].sort().to_list()
        assert rows == list(range(1, n + 1))


def test_clusters_partition_the_duplicated_records(estate: Path) -> None:
    rec = pl.read_parquet(estate / "truth/records.parquet")
    members = pl.read_parquet(estate / "truth/clusters.parquet")
    key = ["source", "source_file", "source_row"]
    # every member once, so each record is in at most one cluster
    assert members.select(key).is_duplicated().sum() == 0
    # the clusters cover exactly the records whose entity has more than one record
    multi = rec.filter(pl.col("entity_id").is_duplicated())
    assert members.select(key).sort(key).equals(multi.select(key).sort(key))
    # each member sits in the cluster of its own entity, and no cluster is a singleton
    joined = members.join(rec.select(*key, record_entity="entity_id"), on=key)
    assert joined.height == members.height
    assert (joined["cluster_id"] == joined["record_entity"]).all()
    assert members.group_by("cluster_id").len()["len"].min() >= 2


def test_every_duplication_vector_is_injected_and_labelled(estate: Path) -> None:
    rec = pl.read_parquet(estate / "truth/records.parquet")
    assert set(rec["vector"].unique()) == VECTORS | {"original"}
    # mapping errors of every kind occur
    kinds = set(rec.filter(pl.col("vector") == "mapping_error")["detail"].unique())
    assert {"case", "whitespace", "swap_names", "phone_format", "legal_suffix", "typo"} <= kinds
    # within a source every entity has exactly one original; the rest are labelled copies
    originals = rec.filter(pl.col("vector") == "original").group_by("source", "entity_id").len()
    assert originals["len"].max() == 1
    assert originals.height == rec.select("source", "entity_id").n_unique()
    # a duplicate always shares its entity with an original record of the same entity
    dup_entities = set(rec.filter(pl.col("vector") != "original")["entity_id"])
    orig_entities = set(rec.filter(pl.col("vector") == "original")["entity_id"])
    assert dup_entities <= orig_entities


def test_merged_leads_point_at_their_survivor(estate: Path) -> None:
    rec = pl.read_parquet(estate / "truth/records.parquet").filter(
        pl.col("source") == "salesforce_lead"
    )
    leads = pl.concat(
        [
            pl.read_csv(f, infer_schema=False)
            for f in sorted(glob.glob(str(estate / "exports/crm/salesforce/Lead_*.csv")))
        ]
    ).unique("Id")
    # Data Loader quotes every value: an empty field is "" (read back as an empty string)
    merged = leads.filter(pl.col("MasterRecordId").fill_null("") != "")
    assert merged.height > 0
    assert (merged["IsDeleted"] == "true").all()
    ent = dict(rec.select("source_id", "entity_id").unique().iter_rows())
    for loser, master in merged.select("Id", "MasterRecordId").iter_rows():
        assert ent[loser] == ent[master]


def test_dup_rate_zero_injects_no_duplicates(tmp_path: Path) -> None:
    generate_estate(tmp_path, customers=300, seed=5, dup_rate=0.0)
    rec = pl.read_parquet(tmp_path / "truth/records.parquet")
    assert set(rec["vector"].unique()) == {"original"}
    # within one source every entity has exactly one record
    assert rec.select("source", "entity_id").is_duplicated().sum() == 0


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_estate(a, customers=150, seed=3, dup_rate=0.1)
    generate_estate(b, customers=150, seed=3, dup_rate=0.1)
    generate_estate(c, customers=150, seed=4, dup_rate=0.1)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert len(files_a) > 30
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    differing = [
        r for r in files_a if (c / r).exists() and (a / r).read_bytes() != (c / r).read_bytes()
    ]
    assert Path("truth/records.parquet") in differing


def test_regenerating_into_the_same_folder_replaces_it(tmp_path: Path) -> None:
    generate_estate(tmp_path, customers=100, seed=1, dup_rate=0.1)
    first = (tmp_path / "truth/records.parquet").read_bytes()
    generate_estate(tmp_path, customers=100, seed=1, dup_rate=0.1)
    assert (tmp_path / "truth/records.parquet").read_bytes() == first


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["generate", "--out", str(tmp_path), "--customers", "10"])
    assert result.exit_code == 2
    assert "not empty" in result.output


def test_cli_writes_a_project(tmp_path: Path) -> None:
    out = tmp_path / "e"
    result = CliRunner().invoke(
        main,
        [
            "generate",
            "--out",
            str(out),
            "--customers",
            "50",
            "--seed",
            "2",
            "--as-of",
            "2026-06-30",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "truth/manifest.json").read_text())
    assert manifest["as_of"] == "2026-06-30"
    assert manifest["window_start"] == "2025-07-01"
    assert (out / "romirecon.yaml").is_file()
    bad = CliRunner().invoke(
        main, ["generate", "--out", str(out), "--customers", "5", "--dup-rate", "2"]
    )
    assert bad.exit_code == 2


# ------------------------------------------------------------------ the truth's arithmetic


def test_spread_by_month_largest_remainder_by_hand() -> None:
    jan30 = day_number(date(2026, 1, 30))
    feb2 = day_number(date(2026, 2, 2))  # 3 days: Jan 30, Jan 31, Feb 1
    factors = {"USD": np.full(400, 2.0)}
    out = spread_by_month(
        np.array([1000, -1000, 3]), np.array([jan30] * 3), np.array([feb2] * 3),
        np.array(["USD"] * 3), factors, jan30 - 10, np.array([2, 2, 2]),
    )  # fmt: skip
    got = {(r["row"], r["month"]): r["amount_minor"] for r in out.to_dicts()}
    jan, feb = day_number(date(2026, 1, 1)), day_number(date(2026, 2, 1))
    # 1000 / 3 days = 333 rem 1: the earliest day takes the extra unit -> Jan 334 + 333, Feb 333
    assert got[(0, jan)] == 667 and got[(0, feb)] == 333
    # negative amounts split like their absolute value
    assert got[(1, jan)] == -667 and got[(1, feb)] == -333
    # 3 / 3 = 1 a day
    assert got[(2, jan)] == 2 and got[(2, feb)] == 1
    rep = {(r["row"], r["month"]): r["amount_reporting"] for r in out.to_dicts()}
    assert rep[(0, jan)] == pytest.approx(6.67 * 2.0)  # 667 cents at 2.0 per unit


def test_round_half_even() -> None:
    s = pl.Series([0.125, 0.135, 0.145, -0.125, 1.005, 2.675])
    got = pl.select(round_half_even(pl.lit(s))).to_series().to_list()
    # exact decimal halves go to the even cent; 1.005 and 2.675 are halves in decimal too
    assert got == [0.12, 0.14, 0.14, -0.12, 1.0, 2.68]


def test_revenue_truth_conserves_the_exported_amounts(estate: Path) -> None:
    """Sum of the true monthly revenue per customer = counted line nets - refunds - credit notes,
    computed here from the exported Stripe files."""
    d = estate / "exports/billing/stripe"

    def load(name: str) -> pl.DataFrame:
        return pl.DataFrame(json.loads((d / name).read_text())["data"], infer_schema_length=None)

    inv = load("invoices.json").select("id", "customer", "status")
    lines = load("invoice_line_items.json")
    disc = (
        lines["discount_amounts"]
        .list.eval(pl.element().struct.field("amount"))
        .list.sum()
        .fill_null(0)
    )
    lines = lines.with_columns(net=pl.col("amount") - disc).join(
        inv, left_on="invoice", right_on="id"
    )
    counted = lines.filter(pl.col("status").is_in(["paid", "open"]))
    net = counted.group_by("customer").agg(pl.col("net").sum())
    cn = load("credit_notes.json")
    cn_counted = cn.filter((pl.col("status") == "issued") & pl.col("refund").is_null()).select(
        "customer", amt="amount"
    )
    refunds = load("refunds.json").join(
        cn.filter(pl.col("refund").is_not_null()).select("refund", "customer"),
        left_on="id",
        right_on="refund",
        how="left",
    )
    # refunds without a credit note: find their customer through the charge on the invoice
    inv_charge = pl.DataFrame(
        json.loads((d / "invoices.json").read_text())["data"], infer_schema_length=None
    ).select("charge", cust="customer")
    refunds = refunds.join(inv_charge, on="charge", how="left").select(
        customer=pl.coalesce("customer", "cust"), amt="amount"
    )
    adj = pl.concat([cn_counted, refunds]).group_by("customer").agg(adj=pl.col("amt").sum())
    expected = (
        net.join(adj, on="customer", how="left")
        .select("customer", total=pl.col("net") - pl.col("adj").fill_null(0))
        .filter(pl.col("total") != 0)
    )
    # Chargebee: line items nested in the invoices, no refunds or credit notes modelled there
    cb = json.loads((estate / "exports/billing/chargebee/invoices.json").read_text())["list"]
    cb_lines = pl.DataFrame(
        [
            {"customer": i["invoice"]["customer_id"], "net": li["amount"] - li["discount_amount"]}
            for i in cb
            if i["invoice"]["status"] in ("paid", "payment_due")
            for li in i["invoice"]["line_items"]
        ],
        schema={"customer": pl.String, "net": pl.Int64},
    )
    expected = pl.concat(
        [expected, cb_lines.group_by("customer").agg(total=pl.col("net").sum())]
    ).filter(pl.col("total") != 0)
    truth = (
        pl.read_parquet(estate / "truth/revenue.parquet")
        .group_by("customer_id")
        .agg(total=pl.col("amount_minor").sum())
    )
    truth = truth.filter(pl.col("total") != 0)
    assert dict(expected.iter_rows()) == dict(truth.iter_rows())


def test_romi_truth_covers_spend_and_revenue(estate: Path) -> None:
    romi = pl.read_parquet(estate / "truth/romi.parquet")
    assert romi.columns == ["period", "platform", "campaign_id", "spend", "revenue"]
    paid = romi.filter(pl.col("campaign_id").is_not_null())
    assert set(paid["platform"]) == {"google_ads", "meta_ads", "linkedin_ads", "microsoft_ads"}
    # every campaign spends every month of the window; later months have revenue only
    in_window = paid.filter(pl.col("period") <= date(2026, 10, 1))
    assert in_window.height == 12 * 12  # 12 campaigns x 12 months
    assert (in_window["spend"] > 0).all()
    assert (paid.filter(pl.col("period") > date(2026, 10, 1))["spend"] == 0).all()
    # revenue in the ROMI truth adds up to the revenue truth (both in reporting currency)
    rev = pl.read_parquet(estate / "truth/revenue.parquet")
    # each row is rounded to the cent once: the totals differ by at most half a cent a row
    tolerance = 0.005 * (romi.height + rev.height)
    assert romi["revenue"].sum() == pytest.approx(rev["amount_reporting"].sum(), abs=tolerance)
    assert romi["revenue"].sum() > 0


def test_salesforce_ids_have_valid_checksums() -> None:
    ids = salesforce_ids("00Q", np.arange(5))
    for sfid in ids:
        assert len(sfid) == 18
        # recompute the suffix by hand from the 15-character id
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
        suffix = ""
        for chunk in range(3):
            bits = sum(
                1 << i for i, ch in enumerate(sfid[chunk * 5 : chunk * 5 + 5]) if ch.isupper()
            )
            suffix += alphabet[bits]
        assert sfid[15:] == suffix


# ------------------------------------------------------------------ formats: through the mappings


@pytest.mark.parametrize("source", [s[0] for s in SOURCES])
def test_each_export_stages_through_its_mapping_with_zero_quarantine(
    estate: Path, source: str
) -> None:
    from romirecon.testing import stage_sample

    _name, system, entity, mapping, path = next(s for s in SOURCES if s[0] == source)
    mapping_path = estate / "mappings" / mapping
    if not mapping_path.exists():
        pytest.skip(f"mappings/{mapping} is not in this checkout yet")
    files = sorted(glob.glob(str(estate / path)))
    assert files
    for f in files[:3]:
        con, table, quarantine = stage_sample(mapping_path, f, system, entity)
        assert quarantine == [], (f, quarantine[:3])
        staged = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert staged is not None and staged[0] == _file_rows(Path(f))


# ------------------------------------------------------------------ the committed demo estate

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


def test_demo_fixture_is_what_the_generator_writes(tmp_path: Path) -> None:
    """fixtures/demo is regenerated from its manifest's parameters: exports and truth agree
    (regenerate with `romirecon generate --out fixtures/demo ...` after changing the generator)."""
    manifest = json.loads((DEMO / "truth/manifest.json").read_text())
    generate_estate(
        tmp_path,
        customers=manifest["customers"],
        seed=manifest["seed"],
        dup_rate=manifest["dup_rate"],
        as_of=date.fromisoformat(manifest["as_of"]),
    )
    for rel in manifest["files"]:
        assert (tmp_path / rel).read_bytes() == (DEMO / rel).read_bytes(), rel
    for name in ("records", "clusters", "revenue", "romi", "billing_cases"):
        fresh = pl.read_parquet(tmp_path / f"truth/{name}.parquet")
        assert fresh.equals(pl.read_parquet(DEMO / f"truth/{name}.parquet")), name
    # the committed files (a demo run's state folder, .romirecon/, is git-ignored) stay small
    committed = [p for p in DEMO.rglob("*") if p.is_file() and ".romirecon" not in p.parts]
    assert sum(p.stat().st_size for p in committed) < 5 * 1024 * 1024


def test_demo_fixture_mappings_match_the_repository() -> None:
    repo = DEMO.parent.parent / "mappings"
    for m in sorted((DEMO / "mappings").glob("*.yaml")):
        if (repo / m.name).exists():
            assert m.read_text() == (repo / m.name).read_text(), (
                f"{m.name}: regenerate fixtures/demo"
            )


def test_hubspot_merge_pointers_name_the_merged_away_contact(estate: Path) -> None:
    rec = pl.read_parquet(estate / "truth/records.parquet").filter(
        pl.col("source") == "hubspot_contact"
    )
    doc = json.loads((estate / "exports/crm/hubspot/contacts.json").read_text())["results"]
    survivors = [c for c in doc if c["properties"]["hs_merged_object_ids"]]
    assert survivors
    ent = dict(rec.select("source_id", "entity_id").iter_rows())
    archived = {c["id"] for c in doc if c["archived"]}
    for c in survivors:
        (loser,) = c["properties"]["hs_merged_object_ids"].split(";")
        assert loser in archived
        assert ent[loser] == ent[c["id"]]


def test_api_retries_share_the_idempotency_key(estate: Path) -> None:
    rec = pl.read_parquet(estate / "truth/records.parquet")
    retried = rec.filter(
        (pl.col("source") == "stripe_customer") & (pl.col("vector") == "api_retry")
    )
    assert retried.height > 0
    events = json.loads((estate / "exports/billing/stripe/events.json").read_text())["data"]
    key_of = {
        e["data"]["object"]["id"]: e["request"]["idempotency_key"]
        for e in events
        if e["type"] == "customer.created"
    }
    ent = dict(
        rec.filter(pl.col("source") == "stripe_customer")
        .select("source_id", "entity_id")
        .iter_rows()
    )
    originals = {
        r["entity_id"]: r["source_id"]
        for r in rec.filter(
            (pl.col("source") == "stripe_customer") & (pl.col("vector") == "original")
        ).to_dicts()
    }
    for dup in retried["source_id"]:
        orig = originals[ent[dup]]
        assert orig != dup and key_of[dup] == key_of[orig]


def test_romi_spend_truth_matches_the_exports_converted_at_ecb_rates(estate: Path) -> None:
    """Independent path: Microsoft Ads spend (GBP) from its CSV, converted to USD per day with the
    ECB file's rates (USD per EUR / GBP per EUR, last published rate on days without one)."""
    ms = pl.read_csv(
        estate / "exports/ads/microsoft_ads/campaign_performance.csv", infer_schema=False
    )
    ms = ms.select(
        day=pl.col("TimePeriod").str.to_date(),
        campaign_id="CampaignId",
        spend=pl.col("Spend").cast(pl.Decimal(18, 2)).cast(pl.Float64),
        currency="CurrencyCode",
    )
    assert set(ms["currency"]) == {"GBP"}
    ecb = pl.read_csv(estate / "exports/fx/ecb/eurofxref-hist.csv", infer_schema=False).select(
        day=pl.col("Date").str.to_date(),
        usd=pl.col("USD").cast(pl.Float64),
        gbp=pl.col("GBP").cast(pl.Float64),
    )
    conv = ms.sort("day").join_asof(ecb.sort("day"), on="day", strategy="backward")
    expected = conv.group_by(
        period=pl.col("day").dt.truncate("1mo"), campaign_id="campaign_id"
    ).agg(spend=(pl.col("spend") * pl.col("usd") / pl.col("gbp")).sum())
    romi = pl.read_parquet(estate / "truth/romi.parquet").filter(
        pl.col("platform") == "microsoft_ads"
    )
    joined = expected.join(romi, on=["period", "campaign_id"], how="full", coalesce=True)
    joined = joined.filter(pl.col("spend").is_not_null())  # months with spend
    assert joined.height == 2 * 12  # two campaigns, twelve months
    assert (joined["spend"] - joined["spend_right"]).abs().max() < 0.006


def test_ndjson_layout_writes_the_same_records_one_per_line(estate: Path, tmp_path: Path) -> None:
    """`--json-layout ndjson` (the benchmark's estates) writes each API-list export as a .jsonl
    of the very records the list document holds, and the project reads those files."""
    from romirecon.generate import layout_path

    nd = tmp_path / "nd"
    generate_estate(nd, customers=400, seed=11, dup_rate=0.2, json_layout="ndjson")
    doc = yaml.safe_load((nd / "romirecon.yaml").read_text())
    paths = {s["name"]: s["path"] for s in doc["sources"]}
    changed = 0
    for name, _system, _entity, _mapping, path in SOURCES:
        if name not in paths:
            continue
        assert paths[name] == layout_path(path, "ndjson")
        if paths[name] == path:
            continue
        changed += 1
        listed = json.loads((estate / path).read_text())
        key = next(k for k in ("data", "results", "items", "list") if k in listed)
        lines = (nd / paths[name]).read_text().splitlines()
        assert [json.loads(x) for x in lines] == listed[key], name
    assert changed >= 10  # Stripe x7, HubSpot, Chargebee x3, NetSuite x2 (those mapped here)
    # every source of the project finds its files, the ad platforms' globs included
    from romirecon.config import load_project
    from romirecon.stages.ingest import resolve_files

    project = load_project(nd)
    for source in project.sources:
        assert resolve_files(project, source), source.name
    truth_api = pl.read_parquet(estate / "truth/records.parquet")
    truth_nd = pl.read_parquet(nd / "truth/records.parquet")
    assert truth_nd.with_columns(pl.col("source_file").str.replace(r"\.jsonl$", ".json")).equals(
        truth_api
    )
    # and both files stage into the same canonical rows through the one mapping
    from romirecon.testing import stage_sample

    for name in ("stripe_invoice", "hubspot_contact", "chargebee_invoice"):
        _n, system, entity, mapping, path = next(s for s in SOURCES if s[0] == name)
        staged = []
        for root, rel in ((estate, path), (nd, paths[name])):
            con, table, quarantine = stage_sample(
                root / "mappings" / mapping, root / rel, system, entity
            )
            assert quarantine == []
            staged.append(
                con.execute(
                    f"SELECT * EXCLUDE (source_file, file_sha256) FROM {table} ORDER BY source_row"
                ).fetchall()
            )
        assert staged[0] == staged[1] and len(staged[0]) > 100, name
