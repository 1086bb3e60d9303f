"""The generator's model of the world: people, companies, campaigns, ad accounts, FX rates.

Everything the exports and the truth are derived from lives here, drawn from one seeded
`numpy.random.Generator`. The vendor writers only format this model; the truth is computed from
it directly, never by reading the exports back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from romirecon.generate.util import pick

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
    comp_a = pick(rng, STEM_A, n_comp)
    comp_b = pick(rng, STEM_B, n_comp)
    suffix = np.array([c[6] for c in COUNTRIES])[comp_country]
    comp_name = np.char.add(np.char.add(np.char.add(comp_a, " "), comp_b), np.char.add(" ", suffix))
    companies = (
        pl.DataFrame(
            {
                "company_idx": np.arange(n_comp, dtype=np.int64),
                "company_entity": np.char.add("A", np.char.zfill(np.arange(n_comp).astype(str), 8)),
                "company": comp_name,
                "legal_suffix": suffix,
                "country_idx": comp_country,
                "stem": np.char.lower(np.char.add(comp_a, comp_b)),
            }
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
        .drop("n_same", "stem")
    )
    person_comp = np.where(b2b, rng.integers(0, n_comp, size=n), -1)
    ci = np.where(b2b, comp_country[np.maximum(person_comp, 0)], ci)

    first = pick(rng, FIRST, n)
    last = pick(rng, LAST, n)
    titles = pick(rng, ["CEO", "CFO", "Head of Marketing", "Marketing Manager", "VP Sales",
                        "Operations Lead", "Founder", "Data Analyst", "Controller"], n)  # fmt: skip

    # phone: calling code + mobile prefix + random digits (valid ranges for libphonenumber)
    cc = np.array([c[3] for c in COUNTRIES])[ci]
    prefix = np.empty(n, dtype=object)
    ndig = np.array([c[5] for c in COUNTRIES])[ci]
    for k, c in enumerate(COUNTRIES):  # loop over 10 countries, not records
        m = ci == k
        prefix[m] = pick(rng, c[4], int(m.sum()))
    digits = rng.integers(0, 10, size=(n, 8))
    nanp = np.isin(cc, ["1"])
    digits[nanp, 0] = rng.integers(2, 10, size=int(nanp.sum()))  # NANP exchange starts 2-9
    digit_str = np.ascontiguousarray(digits.astype("<U1")).view("<U8").reshape(-1)
    people = pl.DataFrame(
        {
            "person_idx": idx,
            "entity_id": np.char.add("P", np.char.zfill(idx.astype(str), 8)),
            "b2b": b2b,
            "company_idx": person_comp,
            "country_idx": ci,
            "first_name": first,
            "last_name": last,
            "title": np.where(b2b, titles, ""),
            "calling_code": cc,
            "phone_prefix": prefix.astype(str),
            "phone_digits": digit_str,
            "phone_ndig": ndig,
        }
    )
    people = people.with_columns(
        nsn=pl.col("phone_prefix") + pl.col("phone_digits").str.slice(0, pl.col("phone_ndig"))
    ).drop("phone_prefix", "phone_digits", "phone_ndig")

    country_tbl = pl.DataFrame(
        {
            "country_idx": np.arange(len(COUNTRIES)),
            "country": [c[0] for c in COUNTRIES],
            "currency": [c[1] for c in COUNTRIES],
        }
    )
    people = people.join(country_tbl, on="country_idx", how="left")
    # city per person (loop over countries, each vectorised)
    city = np.empty(n, dtype=object)
    state = np.empty(n, dtype=object)
    postal = np.empty(n, dtype=object)
    for k, c in enumerate(COUNTRIES):
        m = ci == k
        j = rng.integers(0, len(c[7]), size=int(m.sum()))
        city[m] = np.array([x[0] for x in c[7]])[j]
        state[m] = np.array([x[1] for x in c[7]])[j]
        postal[m] = np.array([x[2] for x in c[7]])[j]
    street_no = rng.integers(1, 400, size=n)
    street = np.char.add(street_no.astype(str), pick(rng, [" Main Street", " Market Street",
                         " High Street", " Harbour Road", " Park Avenue", " Station Road"], n))  # fmt: skip
    people = people.with_columns(
        city=pl.Series(city.astype(str)),
        state=pl.Series(state.astype(str)),
        postal_code=pl.Series(postal.astype(str)),
        street=pl.Series(street),
    )
    people = people.join(
        companies.select("company_idx", "company_entity", "company", "legal_suffix", "domain"),
        on="company_idx",
        how="left",
    ).sort("person_idx")

    # emails: work address at the company's domain, else a consumer mailbox with a number
    consumer = pick(
        rng, ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "gmx.de", "web.de"], n
    )
    local = (pl.col("first_name") + pl.lit(".") + pl.col("last_name")).str.to_lowercase()
    people = (
        people.with_columns(
            _dom=pl.when(pl.col("b2b")).then(pl.col("domain")).otherwise(pl.Series(consumer)),
            _num=pl.Series(rng.integers(1, 999, size=n)),
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
        .drop("_dom", "_num", "_k")
    )

    # acquisition: channel, campaign, lead time
    camps = campaigns_frame()
    ch = pick(rng, CHANNELS, n, CHANNEL_WEIGHTS)
    ch = np.where((ch == "linkedin_ads") & ~b2b, "meta_ads", ch)  # LinkedIn reaches companies
    camp_idx = np.full(n, -1, dtype=np.int64)
    for platform in PLATFORMS:  # loop over four platforms
        m = ch == platform
        options = camps.filter(pl.col("platform") == platform)["campaign_idx"].to_numpy()
        w = rng.uniform(0.5, 2.0, size=options.size)
        camp_idx[m] = options[rng.choice(options.size, size=int(m.sum()), p=w / w.sum())]
    span = as_of_day - start_day
    lead_day = start_day + rng.integers(0, int(span * 0.9), size=n)
    lead_sec = lead_day.astype(np.int64) * 86400 + rng.integers(8 * 3600, 20 * 3600, size=n)
    people = (
        people.with_columns(
            channel=pl.Series(ch),
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
    )
    return World(start_day=start_day, as_of_day=as_of_day, people=people, companies=companies,
                 campaigns=camps)  # fmt: skip
