#!/usr/bin/env python3
"""Generates the personal-data corpus for 30 phone regions (fixed seed) under
crates/runops-redact/tests/corpus/generated/:

- corpus.txt: log, JSON, key=value, psql, nginx and stack-trace lines with planted values
  (phone numbers of the 30 default regions in national, international and E.164 formats
  and in the layouts Faker prints, US SSNs keyed and separated, e-mails, cards, IBANs,
  IPs) and lines of lookalikes that must stay (versions, tracking numbers, timestamps,
  durations, byte counts, ids, amounts, dates);
- expected.tsv: `line TAB region TAB INFO_TYPE TAB value`, one row per planted value;
- phone_formats.tsv: `region TAB format TAB text` of random valid numbers of each default
  region in libphonenumber's standard formats, for the property test.

Every planted phone number is valid for its region according to libphonenumber (the
`phonenumbers` port). A number written as a bare digit run (no separator, no `+`) is
planted only under a key or a column that names it (`"phone":`, `phone=`, a psql column
`phone`): bare runs elsewhere are ids.

Usage (reproduces the committed files byte for byte):
    python3 -m venv /tmp/v && /tmp/v/bin/pip install faker==40.63.0 phonenumbers==9.0.43
    /tmp/v/bin/python scripts/redact/gen_corpus.py
"""
import os
import random

import phonenumbers as pn
from faker import Faker
from phonenumbers import PhoneNumberFormat as F
from phonenumbers import PhoneNumberType as T

SEED = int(os.environ.get("REDACT_CORPUS_SEED", "20261203"))
REGIONS = ("US CA GB DE FR IT ES NL BE CH AT SE NO DK FI PL PT IE CZ RO BR MX IN JP KR "
           "AU NZ SG IL ZA").split()
# The Faker locale whose phone layouts and names go with each region.
LOCALES = {
    "US": "en_US", "CA": "en_CA", "GB": "en_GB", "DE": "de_DE", "FR": "fr_FR",
    "IT": "it_IT", "ES": "es_ES", "NL": "nl_NL", "BE": "nl_BE", "CH": "de_CH",
    "AT": "de_AT", "SE": "sv_SE", "NO": "no_NO", "DK": "da_DK", "FI": "fi_FI",
    "PL": "pl_PL", "PT": "pt_PT", "IE": "en_IE", "CZ": "cs_CZ", "RO": "ro_RO",
    "BR": "pt_BR", "MX": "es_MX", "IN": "en_IN", "JP": "ja_JP", "KR": "ko_KR",
    "AU": "en_AU", "NZ": "en_NZ", "SG": "en_US", "IL": "he_IL", "ZA": "en_US",
}
PHONES_PER_REGION = 60
FAKER_PHONES_PER_REGION = 20
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "runops-redact",
                   "tests", "corpus", "generated")

rng = random.Random(SEED)
fake = Faker("en_US")
fake.seed_instance(SEED)


def random_valid_number(region):
    """A random valid number of the region: an example number with its digits after
    the first two redrawn until libphonenumber says it is valid."""
    types = [T.FIXED_LINE, T.MOBILE, T.TOLL_FREE]
    weights = [5, 5, 1]
    for _ in range(1000):
        t = rng.choices(types, weights)[0]
        ex = pn.example_number_for_type(region, t)
        if ex is None:
            continue
        nsn = str(ex.national_number)
        keep = min(len(nsn) - 4, rng.choice([1, 2, 3]))
        digits = nsn[:keep] + "".join(rng.choice("0123456789") for _ in nsn[keep:])
        n = pn.PhoneNumber(country_code=ex.country_code, national_number=int(digits))
        if ex.italian_leading_zero:
            n.italian_leading_zero = True
        if pn.is_valid_number_for_region(n, region):
            return n
    raise RuntimeError(f"no valid number for {region}")


def is_bare(text):
    return text.isdigit()


def faker_phone(region, faker):
    """A phone number as Faker's locale prints it, if libphonenumber finds it valid;
    extensions are cut."""
    for _ in range(200):
        p = faker.phone_number()
        if "x" in p.lower() or "ext" in p.lower():
            continue
        try:
            n = pn.parse(p, region)
        except pn.NumberParseException:
            continue
        if pn.is_valid_number_for_region(n, region):
            return p
    return None


def phones(region):
    faker = Faker(LOCALES[region])
    faker.seed_instance(SEED + REGIONS.index(region))
    out = []
    for k in range(PHONES_PER_REGION):
        n = random_valid_number(region)
        fmt = [F.NATIONAL, F.NATIONAL, F.INTERNATIONAL, F.E164][k % 4]
        out.append(pn.format_number(n, fmt))
    for _ in range(FAKER_PHONES_PER_REGION):
        p = faker_phone(region, faker)
        if p is not None:
            out.append(p)
    return out


def ssn():
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"


def ts():
    return (f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}."
            f"{rng.randint(0, 999):03d}Z")


# Contexts for a value that is written with separators or a `+`: anywhere.
FREE = [
    "{ts} INFO [worker-{n}] callback requested by customer, number {v}, attempt {n}",
    '{{"ts":"{ts}","level":"info","msg":"contact updated","phone":"{v}","user_id":{id}}}',
    "{ts} WARN sms.Sender: delivery to {v} failed: code={n} retry_in=30s",
    "  at com.acme.contacts.Validator.check(Validator.java:{n}) - rejected {v}",
    '127.0.0.1 - - [01/Mar/2026:12:34:56 +0000] "POST /api/v1/call HTTP/1.1" 202 {n} "-" "agent" to={v}',
    "customer_phone={v} plan=pro seats={n}",
    "Kunde bittet um Rückruf unter {v}.",
    "{ts} DEBUG dialer: dialing {v} (trunk {n})",
]
# Contexts that name the value: also for bare digit runs.
KEYED = [
    '{{"ts":"{ts}","event":"signup","phone":"{v}","id":{id}}}',
    "{ts} INFO profile saved phone={v} id={id}",
    "mobile: {v}",
    '{{"user":{{"id":{id},"mobilePhone":"{v}"}}}}',
]
SSN_SEPARATED = [
    "{ts} INFO kyc check passed for ssn {v} (user {id})",
    "applicant SSN: {v}",
    '{{"event":"kyc","ssn":"{v}","score":{n}}}',
]
SSN_KEYED = [
    '{{"event":"kyc","ssn":"{v}","score":{n}}}',
    "{ts} INFO kyc ok ssn={v} user_id={id}",
    '{{"applicant":{{"id":{id},"social_security_number":"{v}"}}}}',
    "SSN: {v}",
]
OTHER = [
    "{ts} INFO mail sent to {v} (template=welcome)",
    '{{"ts":"{ts}","msg":"charge","value":"{v}","amount":{n}}}',
    "{ts} DEBUG value={v} user_id={id}",
    "  at com.acme.Billing.charge(Billing.java:{n}) - for {v}",
]

# Lookalikes: each function returns one line that must stay as it is.
LOOKALIKES = [
    lambda: f"System.Data, Version={rng.randint(1, 9)}.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089",
    lambda: f'<assemblyIdentity name="Acme.Core" version="{rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}" />',
    lambda: "tracking " + " ".join(f"{rng.randint(0, 9999):04d}" for _ in range(5)) + f" {rng.randint(10, 99)}",
    lambda: f"usps_tracking=94{rng.randint(10**19, 10**20 - 1)}",
    lambda: f"ups 1Z{rng.randint(100, 999)}AA1{rng.randint(10**9, 10**10 - 1)}",
    lambda: f"{ts()} INFO request done in {rng.randint(1, 99999)} ms, {rng.randint(1, 10**9)} bytes",
    lambda: f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2026 {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} Auftrag {rng.randint(100000, 999999)} gebucht",
    lambda: f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2026 {rng.randint(1, 12)}:{rng.randint(0, 59):02d} PM order #{rng.randint(10**5, 10**7)}",
    lambda: f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}+00 LOG:  duration: {rng.randint(1, 9999)}.{rng.randint(0, 999):03d} ms",
    lambda: f"epoch={rng.randint(1_600_000_000, 1_800_000_000)} epoch_ms={rng.randint(1_600_000_000_000, 1_800_000_000_000)}",
    lambda: f"id={rng.randint(10**9, 10**10 - 1)} user_id={rng.randint(10**6, 10**9)} account {rng.randint(10**8, 10**9 - 1)}",
    lambda: f"order ORD-2026-{rng.randint(0, 999999):06d} invoice INV/{rng.randint(1000, 9999)}/{rng.randint(10, 99)}",
    lambda: f"transferred {rng.randint(1, 999)},{rng.randint(0, 999):03d},{rng.randint(0, 999):03d} bytes ({rng.randint(1, 99)}.{rng.randint(0, 9)} MB/s)",
    lambda: f"Gesamt: {rng.randint(1, 999)}.{rng.randint(0, 999):03d}.{rng.randint(0, 999):03d} Bytes, EUR {rng.randint(1, 999)}.{rng.randint(0, 999):03d},{rng.randint(0, 99):02d}",
    lambda: f"nginx/1.{rng.randint(10, 27)}.{rng.randint(0, 9)} openssl {rng.randint(1, 3)}.{rng.randint(0, 9)}.{rng.randint(0, 20)} kernel 5.15.0-{rng.randint(10, 120)}-generic",
    lambda: f"elapsed {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d} cpu {rng.randint(0, 99)}.{rng.randint(0, 99)}% rss {rng.randint(1, 9999)} MiB",
    lambda: f"cpu  {rng.randint(1000, 99999)} {rng.randint(0, 999)} {rng.randint(1000, 99999)} {rng.randint(10**6, 10**8)} {rng.randint(100, 9999)} 0 {rng.randint(10, 999)} 0 0 0",
    lambda: f'{{"id":"{fake.uuid4()}","seq":{rng.randint(10**9, 10**12)},"build":"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 999)}"}}',
    lambda: f"pid {rng.randint(100, 99999)} port {rng.randint(1024, 65535)} fd {rng.randint(3, 999)} uid {rng.randint(1000, 65534)}",
    lambda: f"commit {fake.sha1()} tree {fake.sha1()[:12]}",
    lambda: f" {rng.randint(1, 9999)} | {fake.word()} | {rng.randint(1, 999)}.{rng.randint(0, 99):02d} | 2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
    lambda: f"lat={rng.uniform(-90, 90):.6f} lon={rng.uniform(-180, 180):.6f} alt {rng.randint(1, 999)} m",
    lambda: f"20260{rng.randint(1, 9)}{rng.randint(10, 28)}T{rng.randint(10, 23)}{rng.randint(10, 59)}{rng.randint(10, 59)}Z snapshot-{rng.randint(10**6, 10**7)}",
    lambda: f"Mar {rng.randint(1, 28):2d} {rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)} host sshd[{rng.randint(100, 99999)}]: session opened",
    lambda: f"v{rng.randint(1, 20)}.{rng.randint(0, 20)}.{rng.randint(0, 20)}.{rng.randint(0, 999)} released {rng.randint(1, 28)} {rng.choice(['Jan', 'Feb', 'Mar'])} 2026",
    lambda: f"queue depth {rng.randint(1, 999)} {rng.randint(1, 999)} {rng.randint(1, 999)} {rng.randint(1, 999)}",
]


def fill(template, v):
    return template.format(v=v, ts=ts(), n=rng.randint(1, 999), id=rng.randint(1000, 999999))


def psql_table(rows, key, region):
    """A psql result with a `key` column; rows are (value, planted?)."""
    name_w = 16
    val_w = max(len(key), max(len(v) for v, _ in rows))
    lines = [f" id | {'name'.ljust(name_w)} | {key.ljust(val_w)} | created_at",
             f"----+-{'-' * name_w}-+-{'-' * val_w}-+---------------------"]
    planted = []
    for k, (v, is_planted) in enumerate(rows):
        name = fake.first_name()[:name_w].ljust(name_w)
        lines.append(f" {k + 1:2d} | {name} | {v.ljust(val_w)} | 2026-03-0{k % 9 + 1} 12:0{k % 10}:00")
        if is_planted:
            planted.append((len(lines) - 1, v))
    lines.append(f"({len(rows)} rows)")
    lines.append("")
    return lines, planted


def main():
    os.makedirs(OUT, exist_ok=True)
    blocks = []  # (lines, [(index in lines, region, type, value)])

    for region in REGIONS:
        for v in phones(region):
            bare = is_bare(v)
            templates = KEYED if bare else FREE + KEYED
            blocks.append(([fill(rng.choice(templates), v)], [(0, region, "PHONE_NUMBER", v)]))
        table_rows = [(pn.format_number(random_valid_number(region), rng.choice([F.NATIONAL, F.E164])), True)
                      for _ in range(4)]
        bare_rows = [(pn.format_number(random_valid_number(region), F.E164)[1:], False) for _ in range(0)]
        lines, planted = psql_table(table_rows + bare_rows, "phone", region)
        blocks.append((lines, [(i, region, "PHONE_NUMBER", v) for i, v in planted]))

    # Bare North American numbers under keys and in a psql column.
    for _ in range(40):
        n = random_valid_number("US")
        v = pn.format_number(n, F.E164)[2:]
        blocks.append(([fill(rng.choice(KEYED), v)], [(0, "US", "PHONE_NUMBER", v)]))
    us_rows = [(pn.format_number(random_valid_number("US"), F.E164)[2:], True) for _ in range(6)]
    lines, planted = psql_table(us_rows, "phone", "US")
    blocks.append((lines, [(i, "US", "PHONE_NUMBER", v) for i, v in planted]))

    # SSNs: separated anywhere, bare under a key or in a psql column.
    for _ in range(120):
        s = ssn()
        v = rng.choice([f"{s[:3]}-{s[3:5]}-{s[5:]}", f"{s[:3]} {s[3:5]} {s[5:]}"])
        blocks.append(([fill(rng.choice(SSN_SEPARATED), v)], [(0, "-", "US_SOCIAL_SECURITY_NUMBER", v)]))
    for _ in range(120):
        v = ssn()
        blocks.append(([fill(rng.choice(SSN_KEYED), v)], [(0, "-", "US_SOCIAL_SECURITY_NUMBER", v)]))
    lines, planted = psql_table([(ssn(), True) for _ in range(8)], "ssn", "-")
    blocks.append((lines, [(i, "-", "US_SOCIAL_SECURITY_NUMBER", v) for i, v in planted]))

    # E-mails, cards, IBANs, IPs.
    for _ in range(150):
        v = fake.email()
        blocks.append(([fill(rng.choice(OTHER), v)], [(0, "-", "EMAIL_ADDRESS", v)]))
    for _ in range(150):
        v = fake.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex", "discover"]))
        if rng.random() < 0.4 and len(v) == 16:
            v = " ".join(v[k:k + 4] for k in range(0, 16, 4))
        blocks.append(([fill(rng.choice(OTHER), v)], [(0, "-", "CREDIT_CARD_NUMBER", v)]))
    iban_fakers = [Faker(loc) for loc in ["de_DE", "en_GB", "fr_FR", "nl_NL", "es_ES", "it_IT", "pl_PL"]]
    for k, f in enumerate(iban_fakers):
        f.seed_instance(SEED + 100 + k)
    for _ in range(150):
        v = rng.choice(iban_fakers).iban()
        if rng.random() < 0.5:
            v = " ".join(v[k:k + 4] for k in range(0, len(v), 4))
        blocks.append(([fill(rng.choice(OTHER), v)], [(0, "-", "IBAN_CODE", v)]))
    for _ in range(150):
        v = fake.ipv4_public() if rng.random() < 0.7 else fake.ipv6()
        blocks.append(([fill(rng.choice(OTHER), v)], [(0, "-", "IP_ADDRESS", v)]))

    # Lookalikes, and psql tables of ids, amounts and times with no labelled column.
    for _ in range(4000):
        blocks.append(([rng.choice(LOOKALIKES)()], []))
    for _ in range(20):
        rows = [(str(rng.randint(10**9, 10**10 - 1)), False) for _ in range(5)]
        lines, _ = psql_table(rows, "order_no", "-")
        blocks.append((lines, []))

    rng.shuffle(blocks)
    corpus, expected = [], []
    for lines, planted in blocks:
        base = len(corpus)
        corpus.extend(lines)
        for i, region, t, v in planted:
            assert v in lines[i], (v, lines[i])
            expected.append(f"{base + i + 1}\t{region}\t{t}\t{v}")
    with open(os.path.join(OUT, "corpus.txt"), "w") as f:
        f.write("\n".join(corpus) + "\n")
    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        f.write("# line\tregion\tinfo type\tvalue (generated by scripts/redact/gen_corpus.py)\n")
        f.write("\n".join(expected) + "\n")

    # Random valid numbers in libphonenumber's standard formats, for the property test.
    with open(os.path.join(OUT, "phone_formats.tsv"), "w") as f:
        for region in REGIONS:
            for _ in range(40):
                n = random_valid_number(region)
                for name, fmt in [("NATIONAL", F.NATIONAL), ("INTERNATIONAL", F.INTERNATIONAL),
                                  ("E164", F.E164)]:
                    f.write(f"{region}\t{name}\t{pn.format_number(n, fmt)}\n")
    print(f"{len(corpus)} lines, {len(expected)} planted values -> {OUT}")


if __name__ == "__main__":
    main()
