"""The generator's model of the world: people, companies, campaigns, ad accounts, FX rates.

Everything the exports and the truth are derived from lives here, drawn from one seeded
`numpy.random.Generator`. The vendor writers only format this model; the truth is computed from
it directly, never by reading the exports back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# country, currency, weight, calling code, mobile prefixes, digits after prefix, legal suffix,
# cities (city, state/region, postal code)
COUNTRIES: list[tuple[str, str, float, str, list[str], int, str, list[tuple[str, str, str]]]] = [
    ("US", "USD", 0.36, "1", ["212", "312", "415", "617", "646", "303", "512", "206"], 7, "Inc.",
     [("New York", "NY", "10013"), ("Chicago", "IL", "60607"), ("San Francisco", "CA", "94107"),
      ("Austin", "TX", "78701"), ("Seattle", "WA", "98101")]),
    ("CA", "CAD", 0.05, "1", ["416", "604", "514"], 7, "Ltd.",
     [("Toronto", "ON", "M5V 2T6"), ("Vancouver", "BC", "V6B 1A1")]),
    ("GB", "GBP", 0.12, "44", ["74", "75", "77", "78"], 8, "Ltd",
     [("London", "", "EC1V 9HX"), ("Manchester", "", "M1 1AE")]),
    ("DE", "EUR", 0.10, "49", ["151", "160", "171", "176"], 8, "GmbH",
     [("Berlin", "BE", "10115"), ("München", "BY", "80331"), ("Köln", "NW", "50667")]),
    ("FR", "EUR", 0.06, "33", ["6"], 8, "SAS", [("Paris", "", "75002"), ("Lyon", "", "69002")]),
    ("NL", "EUR", 0.05, "31", ["6"], 8, "B.V.", [("Amsterdam", "NH", "1012 AB")]),
    ("JP", "JPY", 0.08, "81", ["90", "80"], 8, "K.K.", [("Tokyo", "13", "100-0005")]),
    ("KW", "KWD", 0.04, "965", ["50", "55", "60", "65", "66", "69", "90", "97", "99"], 6, "W.L.L.",
     [("Kuwait City", "", "13001")]),
    ("IS", "ISK", 0.04, "354", ["61", "66", "69", "77", "82", "86"], 5, "ehf.",
     [("Reykjavík", "", "101")]),
    ("AU", "AUD", 0.10, "61", ["4"], 8, "Pty Ltd", [("Sydney", "NSW", "2000"), ("Melbourne", "VIC", "3000")]),
]  # fmt: skip

# (suffix as written, variant a mapping error or a hand-typed record produces)
SUFFIX_VARIANTS = {
    "Inc.": "Incorporated", "Ltd.": "Limited", "Ltd": "Limited", "GmbH": "G.m.b.H.",
    "SAS": "S.A.S.", "B.V.": "BV", "K.K.": "Kabushiki Kaisha", "W.L.L.": "WLL",
    "ehf.": "ehf", "Pty Ltd": "Pty. Limited",
}  # fmt: skip

FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kara",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Paul",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Uma",
    "Victor",
    "Wendy",
    "Xavier",
    "Yara",
    "Zoe",
    "Aiko",
    "Haruto",
    "Sakura",
    "Kenji",
    "Fatima",
    "Omar",
    "Layla",
    "Yusuf",
    "Sigrun",
    "Gunnar",
    "Helga",
    "Bjorn",
    "Chloe",
    "Louis",
    "Camille",
    "Jules",
    "Sophie",
    "Lukas",
    "Mia",
    "Finn",
    "Lea",
    "Emil",
    "Olivia",
    "James",
    "Amelia",
    "George",
    "Isla",
    "Jack",
    "Ava",
    "Lucas",
    "Ella",
    "Mason",
    "Aria",
    "Ethan",
    "Nora",
    "Leo",
]
LAST = [
    "Smith",
    "Johnson",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Lee",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Parker",
    "Collins",
    "Edwards",
    "Stewart",
    "Morris",
    "Murphy",
    "Cook",
    "Rogers",
    "Keller",
    "Schmidt",
    "Fischer",
    "Weber",
    "Wagner",
    "Becker",
    "Dubois",
    "Laurent",
    "Bernard",
    "Petit",
    "Jansen",
    "Visser",
    "Bakker",
    "Tanaka",
    "Sato",
    "Suzuki",
    "Takahashi",
    "Alsabah",
    "Alrashid",
    "Jonsson",
    "Sigurdsson",
    "Gudmundsdottir",
    "Nguyen",
    "Patel",
    "Kowalski",
]
STEM_A = [
    "Bright",
    "North",
    "Blue",
    "Silver",
    "Quantum",
    "Apex",
    "Nova",
    "Cedar",
    "Harbor",
    "Summit",
    "Pioneer",
    "Vertex",
    "Lumen",
    "Atlas",
    "Orbit",
    "Crest",
    "Evergreen",
    "Iron",
    "Maple",
    "Polar",
    "Prairie",
    "Rapid",
    "Solar",
    "Terra",
    "Urban",
    "Vivid",
    "Zenith",
    "Coral",
    "Delta",
    "Echo",
    "Falcon",
    "Granite",
    "Horizon",
    "Indigo",
    "Juniper",
    "Kestrel",
    "Lattice",
    "Meridian",
    "Nimbus",
    "Onyx",
]
STEM_B = [
    "Analytics",
    "Labs",
    "Systems",
    "Logistics",
    "Foods",
    "Health",
    "Capital",
    "Robotics",
    "Energy",
    "Media",
    "Software",
    "Retail",
    "Partners",
    "Dynamics",
    "Networks",
    "Works",
    "Studio",
    "Ventures",
    "Supply",
    "Bio",
    "Cloud",
    "Data",
    "Design",
    "Freight",
    "Games",
    "Holdings",
    "Insights",
    "Learning",
    "Motors",
    "Optics",
]

# platform -> (utm_source, utm_medium, click id column, lead source)
PLATFORMS: dict[str, tuple[str, str, str, str]] = {
    "google_ads": ("google", "cpc", "gclid", "Advertisement"),
    "meta_ads": ("facebook", "paid_social", "fbclid", "Advertisement"),
    "linkedin_ads": ("linkedin", "paid_social", "li_fat_id", "Advertisement"),
    "microsoft_ads": ("bing", "cpc", "msclkid", "Advertisement"),
}
CHANNELS = [
    "google_ads",
    "meta_ads",
    "linkedin_ads",
    "microsoft_ads",
    "organic",
    "direct",
    "referral",
]
CHANNEL_WEIGHTS = [0.30, 0.20, 0.12, 0.08, 0.15, 0.08, 0.07]

# ad accounts: platform, account id, name, currency, IANA timezone, campaigns (name, weight)
AD_ACCOUNTS: list[tuple[str, str, str, str, str, list[str]]] = [
    ("google_ads", "4817203391", "Acme Growth US", "USD", "America/New_York",
     ["brand_search_us", "generic_search_us", "pmax_us"]),
    ("google_ads", "6120458813", "Acme Growth EU", "EUR", "Europe/Berlin",
     ["brand_search_eu", "generic_search_eu"]),
    ("meta_ads", "act_1029384756", "Acme Social", "USD", "America/Los_Angeles",
     ["prospecting_lookalike", "retargeting_site_visitors", "video_awareness"]),
    ("linkedin_ads", "508812345", "Acme B2B", "EUR", "UTC", ["abm_enterprise", "lead_gen_forms"]),
    ("microsoft_ads", "180339871", "Acme Search UK", "GBP", "Europe/London",
     ["bing_brand_uk", "bing_generic_uk"]),
]  # fmt: skip

CAMPAIGN_ID_BASE = {"google_ads": 20145500000, "meta_ads": 120210000000000000,
                    "linkedin_ads": 310450000, "microsoft_ads": 531200000}  # fmt: skip


@dataclass(frozen=True)
class World:
    start_day: int  # first day of the modelled year (days since epoch)
    as_of_day: int
    people: pl.DataFrame  # one row per true person (entity)
    companies: pl.DataFrame  # one row per true company
    campaigns: pl.DataFrame  # one row per ad campaign


def campaigns_frame() -> pl.DataFrame:
    rows = []
    per_platform: dict[str, int] = {}
    for platform, acct, acct_name, cur, tz, names in AD_ACCOUNTS:
        for name in names:
            k = per_platform.get(platform, 0)
            per_platform[platform] = k + 1
            cid = str(CAMPAIGN_ID_BASE[platform] + 7001 * (k + 1))
            rows.append((platform, acct, acct_name, cur, tz, cid, name))
    return pl.DataFrame(
        rows,
        schema=[
            "platform",
            "account_id",
            "account_name",
            "currency",
            "timezone",
            "campaign_id",
            "campaign_name",
        ],
        orient="row",
    ).with_row_index("campaign_idx")


def _gather(values: list[str], index: np.ndarray) -> pl.Series:
    """values[index] as a polars String series (no numpy string arrays: those convert slowly)."""
    return pl.Series(values, dtype=pl.String).gather(pl.Series(np.asarray(index, dtype=np.int64)))


def _flat_choice(
    rng: np.random.Generator, options: list[list[str]], group: np.ndarray
) -> np.ndarray:
    """For each row, a uniformly drawn position in the flat list of its group's options."""
    sizes = np.array([len(o) for o in options])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.minimum((rng.random(group.size) * sizes[group]).astype(np.int64), sizes[group] - 1)
    return offsets[group] + within


def build_world(rng: np.random.Generator, n: int, start_day: int, as_of_day: int) -> World:
    """Draw n people (some at companies), their acquisition and contact details."""
    idx = np.arange(n, dtype=np.int64)
    b2b = rng.random(n) < 0.7

    # countries and currencies
    cw = np.array([c[2] for c in COUNTRIES])
    ci = rng.choice(len(COUNTRIES), size=n, p=cw / cw.sum())

    # companies: about three B2B people per company, the company's country is the person's
    n_comp = max(1, int(b2b.sum()) // 3)
    comp_country = rng.choice(len(COUNTRIES), size=n_comp, p=cw / cw.sum())
    ia = rng.integers(0, len(STEM_A), size=n_comp)
    ib = rng.integers(0, len(STEM_B), size=n_comp)
    companies = (
        pl.DataFrame(
            {
                "company_idx": np.arange(n_comp, dtype=np.int64),
                "country_idx": comp_country,
                "stem_a": _gather(STEM_A, ia),
                "stem_b": _gather(STEM_B, ib),
                "legal_suffix": _gather([c[6] for c in COUNTRIES], comp_country),
            }
        )
        .with_columns(
            company_entity=pl.lit("A") + pl.col("company_idx").cast(pl.String).str.zfill(8),
            company=pl.col("stem_a") + " " + pl.col("stem_b") + " " + pl.col("legal_suffix"),
            stem=(pl.col("stem_a") + pl.col("stem_b")).str.to_lowercase(),
        )
        .with_columns(
            # a domain per company: name-derived, numbered when two companies share a name
            n_same=pl.col("company_idx").cum_count().over("stem") - 1,
        )
        .with_columns(
            domain=pl.when(pl.col("n_same") == 0)
            .then(pl.col("stem"))
            .otherwise(pl.col("stem") + pl.col("n_same").cast(pl.String))
            + pl.lit(".com"),
        )
        .select("company_idx", "company_entity", "company", "legal_suffix", "country_idx", "domain")
    )
    person_comp = np.where(b2b, rng.integers(0, n_comp, size=n), -1)
    ci = np.where(b2b, comp_country[np.maximum(person_comp, 0)], ci)

    titles = ["CEO", "CFO", "Head of Marketing", "Marketing Manager", "VP Sales",
              "Operations Lead", "Founder", "Data Analyst", "Controller"]  # fmt: skip
    i_first = rng.integers(0, len(FIRST), size=n)
    i_last = rng.integers(0, len(LAST), size=n)
    i_title = rng.integers(0, len(titles), size=n)

    # phone: calling code + mobile prefix + random digits (valid ranges for libphonenumber)
    prefix_opts = [c[4] for c in COUNTRIES]
    i_prefix = _flat_choice(rng, prefix_opts, ci)
    ndig = np.array([c[5] for c in COUNTRIES])[ci]
    nanp = np.array([c[3] == "1" for c in COUNTRIES])[ci]
    # NANP exchanges start 2-9; eight digits drawn, the country's count kept
    lead_digit = np.where(nanp, rng.integers(2, 10, size=n), rng.integers(0, 10, size=n))
    rest = rng.integers(0, 10**7, size=n)
    city_opts = [[x[0] for x in c[7]] for c in COUNTRIES]
    i_city = _flat_choice(rng, city_opts, ci)
    street_no = rng.integers(1, 400, size=n)
    streets = [" Main Street", " Market Street", " High Street", " Harbour Road", " Park Avenue",
               " Station Road"]  # fmt: skip
    i_street = rng.integers(0, len(streets), size=n)
    people = pl.DataFrame(
        {
            "person_idx": idx,
            "b2b": b2b,
            "company_idx": person_comp,
            "country_idx": ci,
            "first_name": _gather(FIRST, i_first),
            "last_name": _gather(LAST, i_last),
            "_title": _gather(titles, i_title),
            "calling_code": _gather([c[3] for c in COUNTRIES], ci),
            "_prefix": _gather([x for o in prefix_opts for x in o], i_prefix),
            "_digits": pl.Series(lead_digit * 10**7 + rest).cast(pl.String).str.zfill(8),
            "_ndig": ndig,
            "country": _gather([c[0] for c in COUNTRIES], ci),
            "currency": _gather([c[1] for c in COUNTRIES], ci),
            "city": _gather([x[0] for c in COUNTRIES for x in c[7]], i_city),
            "state": _gather([x[1] for c in COUNTRIES for x in c[7]], i_city),
            "postal_code": _gather([x[2] for c in COUNTRIES for x in c[7]], i_city),
            "_street_no": street_no,
            "_street": _gather(streets, i_street),
        }
    ).with_columns(
        entity_id=pl.lit("P") + pl.col("person_idx").cast(pl.String).str.zfill(8),
        title=pl.when(pl.col("b2b")).then(pl.col("_title")).otherwise(pl.lit("")),
        nsn=pl.col("_prefix") + pl.col("_digits").str.slice(0, pl.col("_ndig")),
        street=pl.col("_street_no").cast(pl.String) + pl.col("_street"),
    )
    people = people.join(
        companies.select("company_idx", "company_entity", "company", "legal_suffix", "domain"),
        on="company_idx",
        how="left",
    ).sort("person_idx")

    # emails: work address at the company's domain, else a consumer mailbox with a number
    consumer = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "gmx.de", "web.de"]
    local = (pl.col("first_name") + pl.lit(".") + pl.col("last_name")).str.to_lowercase()
    people = (
        people.with_columns(
            _dom=pl.when(pl.col("b2b"))
            .then(pl.col("domain"))
            .otherwise(_gather(consumer, rng.integers(0, len(consumer), size=n))),
        )
        .with_columns(
            _k=pl.col("person_idx").cum_count().over("first_name", "last_name", "_dom") - 1,
        )
        .with_columns(
            email=pl.when(pl.col("b2b") & (pl.col("_k") == 0))
            .then(local + "@" + pl.col("_dom"))
            .when(pl.col("b2b"))
            .then(local + pl.col("_k").cast(pl.String) + "@" + pl.col("_dom"))
            .otherwise(local + pl.col("person_idx").cast(pl.String) + "@" + pl.col("_dom")),
            e164=pl.lit("+") + pl.col("calling_code") + pl.col("nsn"),
        )
    )

    # acquisition: channel, campaign, lead time
    camps = campaigns_frame()
    w = np.array(CHANNEL_WEIGHTS)
    ch = rng.choice(len(CHANNELS), size=n, p=w / w.sum())
    li, meta = CHANNELS.index("linkedin_ads"), CHANNELS.index("meta_ads")
    ch = np.where((ch == li) & ~b2b, meta, ch)  # LinkedIn reaches companies
    camp_idx = np.full(n, -1, dtype=np.int64)
    for platform in PLATFORMS:  # loop over four platforms
        m = ch == CHANNELS.index(platform)
        options = camps.filter(pl.col("platform") == platform)["campaign_idx"].to_numpy()
        cw_ = rng.uniform(0.5, 2.0, size=options.size)
        camp_idx[m] = options[rng.choice(options.size, size=int(m.sum()), p=cw_ / cw_.sum())]
    span = as_of_day - start_day
    lead_day = start_day + rng.integers(0, int(span * 0.9), size=n)
    lead_sec = lead_day.astype(np.int64) * 86400 + rng.integers(8 * 3600, 20 * 3600, size=n)
    people = (
        people.with_columns(
            channel=_gather(CHANNELS, ch),
            campaign_idx=pl.Series(camp_idx),
            lead_ts=pl.Series(lead_sec),
            click_token=pl.Series(rng.integers(0, 2**62, size=n, dtype=np.int64)),
        )
        .join(
            camps.select("campaign_idx", "platform", "campaign_id", "campaign_name"),
            on="campaign_idx",
            how="left",
        )
        .sort("person_idx")
        .select(
            "person_idx", "entity_id", "b2b", "company_idx", "country_idx", "first_name",
            "last_name", "title", "calling_code", "nsn", "country", "currency", "city", "state",
            "postal_code", "street", "company_entity", "company", "legal_suffix", "domain",
            "email", "e164", "channel", "campaign_idx", "lead_ts", "click_token", "platform",
            "campaign_id", "campaign_name",
        )
    )  # fmt: skip
    return World(start_day=start_day, as_of_day=as_of_day, people=people, companies=companies,
                 campaigns=camps)  # fmt: skip
