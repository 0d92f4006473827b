"""Masking (脱敏) of contact fields for roles that need not see them: 138****5678, w***g@qq.com."""

from __future__ import annotations

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE


def _national_digits(phone: str) -> str:
    if phone[:1] == "+" and phone[1:].isdigit() and phone[1:2] != "0":  # E.164, as the hub stores phones
        for length in (1, 2, 3):  # country calling codes are prefix-free: the first that is one is it
            if int(phone[1 : 1 + length]) in COUNTRY_CODE_TO_REGION_CODE:
                return phone[1 + length :]
    try:
        return str(phonenumbers.parse(phone, None).national_number)
    except phonenumbers.NumberParseException:
        return "".join(ch for ch in phone if ch.isdigit())


def mask_phone(phone: str | None) -> str | None:
    """Keep the first three and last four digits of the national number: +8613812345678 → 138****5678."""
    if not phone:
        return phone
    digits = _national_digits(phone)
    if len(digits) <= 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_email(email: str | None) -> str | None:
    """The first and last letter of the local part: wang.fang@qq.com → w***g@qq.com."""
    if not email or "@" not in email:
        return email
    local, domain = email.rsplit("@", 1)
    shown = local[0] + "***" + (local[-1] if len(local) > 1 else "")
    return f"{shown}@{domain}"


def mask_name(name: str | None) -> str | None:
    """王芳 → 王*, James Norman → J*** N***: enough to greet, not enough to identify."""
    if not name:
        return name
    if " " in name.strip():
        return " ".join(part[0] + "***" for part in name.split())
    return name[0] + "*" * max(1, len(name) - 1)
