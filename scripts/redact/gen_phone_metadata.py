#!/usr/bin/env python3
"""Compiles libphonenumber's metadata (via the `phonenumbers` package, a port of
libphonenumber with the same metadata) into crates/runops-redact/src/pii/phone_metadata.rs.

For every region: ISO code, country calling code, national (trunk) prefix, the national
significant number lengths that are valid, and one anchored pattern that is the union of
the patterns of the number types libphonenumber's isValidNumber accepts (fixed line,
mobile, toll free, premium rate, shared cost, VoIP, personal, pager, UAN, voicemail).

Usage: python3 -m venv /tmp/v && /tmp/v/bin/pip install phonenumbers==9.0.43
       /tmp/v/bin/python scripts/redact/gen_phone_metadata.py
"""
import os
import re

import phonenumbers
from phonenumbers import PhoneMetadata

TYPES = ["fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "voip",
         "personal_number", "pager", "uan", "voicemail"]

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "runops-redact",
                   "src", "pii", "phone_metadata.rs")


def prefix_in_national_format(region, prefix):
    """True when libphonenumber writes the national prefix in front of every example
    number of the region in its national format (`020 7946 0958`): a national-format
    number of that region without it is not read as one (unless its key names it)."""
    if not prefix:
        return False
    seen = False
    for t in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
        n = phonenumbers.example_number_for_type(region, t)
        if n is None:
            continue
        seen = True
        national = "".join(c for c in phonenumbers.format_number(
            n, phonenumbers.PhoneNumberFormat.NATIONAL) if c.isdigit())
        if not national.startswith(prefix):
            return False
    return seen


GROUP = re.compile(r"\((?:\\d|\[[^\]]*\]|[0-9])(?:\{(\d+)(?:,(\d+))?\})?\)")


# National layouts in common use that libphonenumber does not print: (region, first
# digits, groups). Norwegian mobile numbers are written `412 34 567`.
EXTRA_FORMATS = [
    ("NO", "49", ((3, 3), (2, 2), (3, 3))),
]


def formats(m):
    """The national formats of the region as `(first digits, prefix written, groups)`: a
    bit set of the first digits its leading-digits pattern allows, whether the national
    prefix is written in front of the number (`0$1`; `None` when it may be left out),
    and the digit count (min, max) of each group."""
    out = []
    for f in list(m.number_format) or list(m.intl_number_format):
        groups = GROUP.findall(f.pattern)
        if not groups or GROUP.sub("", f.pattern) != "":
            continue
        spans = tuple((int(lo or 1), int(hi or lo or 1)) for lo, hi in groups)
        ldp = f.leading_digits_pattern[0] if f.leading_digits_pattern else None
        lead = re.compile(ldp) if ldp else None
        digits = 0
        for d in range(10):
            if lead is None or any(lead.match(f"{d}{k:03d}") for k in range(1000)):
                digits |= 1 << d
        rule = f.national_prefix_formatting_rule
        prefix = m.national_prefix or ""
        if not prefix:
            written = "false"
        elif f.national_prefix_optional_when_formatting:
            written = "None"
        else:
            written = "true" if rule and prefix in rule.split("\\1")[0] else "false"
        if written != "None":
            written = f"Some({written})"
        # The most specific of the leading-digits patterns (libphonenumber lists them
        # from the first digit on); empty when any number fits.
        leading = f.leading_digits_pattern[-1] if f.leading_digits_pattern else ""
        row = (digits, written, spans, leading)
        if row not in out:
            out.append(row)
    for region, first, spans in EXTRA_FORMATS:
        if region == m.id:
            out.append((sum(1 << int(d) for d in first), "Some(false)", spans, f"[{first}]"))
    return out


def main():
    rows = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        m = PhoneMetadata.metadata_for_region(region)
        if m is None:
            continue
        patterns = []
        lengths = set()
        for t in TYPES:
            d = getattr(m, t)
            if d is None or d.national_number_pattern is None:
                continue
            patterns.append(d.national_number_pattern)
            pl = d.possible_length or m.general_desc.possible_length or ()
            lengths.update(x for x in pl if x > 0)
        if not patterns:
            continue
        mask = 0
        for n in lengths:
            mask |= 1 << n
        prefix = m.national_prefix or ""
        if not prefix.isdigit():
            prefix = ""
        pattern = "|".join(f"(?:{p})" for p in patterns)
        rows.append((region, m.country_code, prefix, mask, pattern,
                     prefix_in_national_format(region, prefix), formats(m)))
    with open(OUT, "w") as f:
        f.write("// @generated by scripts/redact/gen_phone_metadata.py from libphonenumber's\n")
        f.write(f"// metadata (phonenumbers {phonenumbers.__version__}); do not edit.\n\n")
        f.write("use super::phones::Region;\n\n")
        f.write("/// Every region libphonenumber knows, by ISO code.\n")
        f.write("#[rustfmt::skip]\n")
        f.write("pub(super) const REGIONS: &[Region] = &[\n")
        for region, cc, prefix, mask, pattern, required, groups in rows:
            groups = ", ".join(
                f"({d:#x}, {w}, &[{', '.join(f'({lo}, {hi})' for lo, hi in spans)}], r\"{ld}\")"
                for d, w, spans, ld in groups)
            f.write(f'    Region {{ code: "{region}", calling_code: {cc}, prefix: "{prefix}", '
                    f'prefix_written: {str(required).lower()}, lengths: 0x{mask:x}, '
                    f'formats: &[{groups}], pattern: r"{pattern}" }},\n')
        f.write("];\n")
    print(f"{len(rows)} regions -> {OUT}")


if __name__ == "__main__":
    main()
