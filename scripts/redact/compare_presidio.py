#!/usr/bin/env python3
"""Scores Microsoft Presidio's pattern recognizers on the generated corpus
(crates/runops-redact/tests/corpus/generated), the way
crates/runops-redact/tests/generated_corpus.rs scores runops-redact: a finding is correct
when it covers a planted value of its type on its line, every other finding is a false
positive. Prints the per-type and per-region tables of docs/redaction.md.

Presidio runs without an NLP model (its pattern and phonenumbers-based recognizers only,
no context words), every result kept whatever its score (as AnalyzerEngine does with its
default threshold 0), overlapping results of one type merged. Two phone setups: the
PhoneRecognizer's default regions, and the same 30 regions runops-redact reads.

Usage:
    python3 -m venv /tmp/v && /tmp/v/bin/pip install presidio-analyzer==2.2.366 \\
        phonenumbers==9.0.43 faker==40.63.0
    /tmp/v/bin/python scripts/redact/gen_corpus.py        # the corpus (committed)
    /tmp/v/bin/python scripts/redact/compare_presidio.py
    cargo test -p runops-redact --test generated_corpus -- --nocapture   # runops-redact
"""
import collections
import os
import time

from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

DIR = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "runops-redact",
                   "tests", "corpus", "generated")
REGIONS = ("US CA GB DE FR IT ES NL BE CH AT SE NO DK FI PL PT IE CZ RO BR MX IN JP KR "
           "AU NZ SG IL ZA").split()
# Presidio entity -> runops-redact info type.
TYPES = {
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD_NUMBER",
    "US_SSN": "US_SOCIAL_SECURITY_NUMBER",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
}


def load():
    with open(os.path.join(DIR, "corpus.txt")) as f:
        lines = f.read().split("\n")
    planted = collections.defaultdict(list)
    with open(os.path.join(DIR, "expected.tsv")) as f:
        for row in f:
            if row.startswith("#") or not row.strip():
                continue
            line, region, t, value = row.rstrip("\n").split("\t", 3)
            planted[int(line)].append((region, t, value))
    return lines, planted


def merged(results):
    """Overlapping results of one type become one span."""
    out = []
    for r in sorted(results, key=lambda r: (r[0], r[1], r[2])):
        if out and out[-1][0] == r[0] and r[1] < out[-1][2]:
            out[-1] = (r[0], out[-1][1], max(out[-1][2], r[2]))
        else:
            out.append(r)
    return out


def score(name, recognizers, lines, planted):
    found = set()
    fp = collections.Counter()
    started = time.perf_counter()
    for n, text in enumerate(lines, start=1):
        results = []
        for rec, entity in recognizers:
            for r in rec.analyze(text, [entity], None):
                results.append((TYPES[r.entity_type], r.start, r.end))
        for t, start, end in merged(results):
            hit = None
            for k, (region, pt, value) in enumerate(planted.get(n, [])):
                if pt != t:
                    continue
                at = text.find(value)
                while at != -1:
                    if start <= at and at + len(value) <= end:
                        hit = k
                        break
                    at = text.find(value, at + 1)
                if hit is not None:
                    break
            if hit is None:
                fp[t] += 1
            else:
                found.add((n, hit))
    secs = time.perf_counter() - started
    by_type = collections.defaultdict(lambda: [0, 0])
    by_region = collections.defaultdict(lambda: [0, 0])
    for n, values in planted.items():
        for k, (region, t, _) in enumerate(values):
            by_type[t][0] += 1
            by_type[t][1] += (n, k) in found
            if t == "PHONE_NUMBER":
                by_region[region][0] += 1
                by_region[region][1] += (n, k) in found
    size = sum(len(line) + 1 for line in lines)
    print(f"\n## {name} ({secs:.1f} s, {size / secs / 1e6:.3f} MB/s)\n")
    print("| info type | planted | found | false positives | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in sorted(by_type):
        planted_n, found_n = by_type[t]
        reported = found_n + fp[t]
        precision = 100 * found_n / reported if reported else 100
        print(f"| {t} | {planted_n} | {found_n} | {fp[t]} | {precision:.2f} % | "
              f"{100 * found_n / planted_n:.2f} % |")
    print("\n| region | planted phones | found | recall |")
    print("|---|---:|---:|---:|")
    for region in sorted(by_region):
        planted_n, found_n = by_region[region]
        print(f"| {region} | {planted_n} | {found_n} | {100 * found_n / planted_n:.1f} % |")


def main():
    lines, planted = load()
    others = [
        (EmailRecognizer(), "EMAIL_ADDRESS"),
        (CreditCardRecognizer(), "CREDIT_CARD"),
        (UsSsnRecognizer(), "US_SSN"),
        (IbanRecognizer(), "IBAN_CODE"),
        (IpRecognizer(), "IP_ADDRESS"),
    ]
    score("Presidio, default phone regions", others + [(PhoneRecognizer(), "PHONE_NUMBER")],
          lines, planted)
    score("Presidio, the 30 regions", others
          + [(PhoneRecognizer(supported_regions=REGIONS), "PHONE_NUMBER")], lines, planted)


if __name__ == "__main__":
    main()
