"""Normalising contact and name fields so the same person matches across systems.

Each function is small, total (never raises on bad input) and table-tested in tests/test_normalise.py.
"""

from __future__ import annotations

import unicodedata
from functools import cache

import phonenumbers
from opencc import OpenCC


@cache
def _t2s() -> OpenCC:
    return OpenCC("t2s")


def phone_e164(raw: str | None, region: str = "CN") -> str | None:
    """``138 1234 5678``, ``+86-138-1234-5678``, ``0086 138…``, ``86 138…`` → ``+8613812345678``.
    Full-width digits are folded first. Invalid numbers give None: kept raw elsewhere, never guessed."""
    if not raw:
        return None
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if text.startswith("00"):
        text = "+" + text[2:].lstrip()
    elif region == "CN" and not text.startswith("+") and len(digits) == 13 and digits.startswith("86"):
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def email_key(raw: str | None) -> str | None:
    """Trimmed and lower-cased; None when it is not an address at all."""
    if not raw:
        return None
    text = unicodedata.normalize("NFKC", str(raw)).strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or " " in text:
        return None
    return text


def name_text(raw: str | None) -> str | None:
    """NFKC, traditional → simplified, inner whitespace folded; None when empty."""
    if raw is None:
        return None
    text = " ".join(unicodedata.normalize("NFKC", str(raw)).split())
    return _t2s().convert(text) if text else None


def full_name(family: str | None, given: str | None, given_full: str | None = None) -> str | None:
    """Chinese names family-first without a space; Latin names given-first with one."""
    family, given = name_text(family), name_text(given)
    if family and given:
        if _is_han(family) or _is_han(given):
            return f"{family}{given}"
        return f"{given} {family}"
    return family or given or name_text(given_full)


def _is_han(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)
