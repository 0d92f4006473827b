"""Normalising contact, name, birthday, gender, address and ID fields so the same person matches
across systems.

Every function is total: bad input never raises, it gives None (or a ``Parsed`` whose ``problem``
says what was wrong, in words a data steward can act on). The one exception is ``keyed_hash``, which
raises HubError when the hashing key is not configured: that is a set-up problem, not a bad record.
Tables (surname readings, nicknames, regions) live in hub/data/ and are table-tested in
tests/test_normalise*.py.

Sections: phones · emails · names (Chinese and Western) · birthdays · gender · addresses ·
resident ID numbers and keyed hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import phonenumbers
import yaml
from opencc import OpenCC
from pypinyin import lazy_pinyin

from schemas.errors import HubError

DATA = Path(__file__).resolve().parent / "data"
T = TypeVar("T")


class Parsed(NamedTuple, Generic[T]):
    """A normalised value, or None with the reason it could not be normalised (``problem``).
    Both None: there was nothing to normalise."""

    value: T | None
    problem: str | None = None


@cache
def _table(name: str) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml reads the tables ten times faster
    return yaml.load((DATA / name).read_text(encoding="utf-8"), Loader=loader)


def _nfkc(raw: Any) -> str:
    text = str(raw)
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


# ====================================================================================== phones
_SEPARATORS = re.compile(r"[\s\-().]+")
_CN_MOBILE_INPUT = re.compile(r"(?:\+86|0086|86)?(1\d{10})")
_CN_MOBILE_RANGE = re.compile(r"1[3-9][0-9]{9}")


@cache
def _cn_mobile() -> re.Pattern[str]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    return re.compile(metadata.mobile.national_number_pattern)


def check_phone(raw: Any, region: str = "CN") -> Parsed[str]:
    """``138 1234 5678``, ``+86-138-1234-5678``, ``0086 138…``, ``86 138…`` → ``+8613812345678``.
    Full-width digits are folded first. A number that is not valid for its region is not guessed at:
    the value is None and the problem says why (the caller keeps the raw text)."""
    if raw is None or raw == "" or isinstance(raw, bool):
        return Parsed(None)
    text = _nfkc(raw).strip()
    if not text:
        return Parsed(None)
    compact = _SEPARATORS.sub("", text)
    # Fast path for Chinese mobiles, the bulk of a chain's members: the same metadata phonenumbers
    # uses, without its general parser (60 µs a number).
    if region == "CN" or compact.startswith(("+86", "0086")):
        match = _CN_MOBILE_INPUT.fullmatch(compact)
        if match:
            if _cn_mobile().fullmatch(match.group(1)):
                return Parsed("+86" + match.group(1))
            if _CN_MOBILE_RANGE.fullmatch(match.group(1)):  # 1[3-9]…: a mobile or nothing, never a landline
                return Parsed(None, f"{raw!r} is not a valid phone number (default region {region})")
    digits = "".join(ch for ch in text if ch.isdigit())
    if text.startswith("00"):
        text = "+" + text[2:].lstrip()
    elif region == "CN" and not text.startswith("+") and len(digits) == 13 and digits.startswith("86"):
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return Parsed(None, f"{raw!r} is not a phone number ({_parse_reason(exc)})")
    if not phonenumbers.is_valid_number(number):
        return Parsed(None, f"{raw!r} is not a valid phone number (default region {region})")
    return Parsed(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _parse_reason(exc: phonenumbers.NumberParseException) -> str:
    reasons = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "no digits to read",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return reasons.get(exc.error_type, "unreadable")


def phone_e164(raw: str | None, region: str = "CN") -> str | None:
    """The E.164 form of a phone number, or None when it is not a valid number (never guessed)."""
    return check_phone(raw, region).value


# ====================================================================================== emails
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_EMAIL_FAST = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")


@dataclass(frozen=True)
class EmailProvider:
    """How a mail provider delivers variants of one mailbox."""

    canonical_domain: str
    ignores_dots: bool = False  # j.smith@ and jsmith@ are one mailbox
    tag_separator: str | None = "+"  # jsmith+shop@ is jsmith@


EMAIL_PROVIDERS: dict[str, EmailProvider] = {
    "gmail.com": EmailProvider("gmail.com", ignores_dots=True),
    "googlemail.com": EmailProvider("gmail.com", ignores_dots=True),
    "outlook.com": EmailProvider("outlook.com"),
    "hotmail.com": EmailProvider("hotmail.com"),
    "live.com": EmailProvider("live.com"),
    "icloud.com": EmailProvider("icloud.com"),
    "me.com": EmailProvider("icloud.com"),
    "mac.com": EmailProvider("icloud.com"),
    "protonmail.com": EmailProvider("protonmail.com"),
    "proton.me": EmailProvider("proton.me"),
    "fastmail.com": EmailProvider("fastmail.com"),
    "yahoo.com": EmailProvider("yahoo.com", tag_separator="-"),
}
"""Providers whose address variants reach one mailbox. Rewriting is off unless a caller names the
providers to rewrite (or ``"*"`` for all of these): two people may legitimately differ by a dot on
a provider that does not ignore them, and a steward should choose to fold them."""


def check_email(raw: Any, *, rewrite: Collection[str] = ()) -> Parsed[str]:
    """Trimmed, lower-cased, syntax-checked. ``rewrite`` names providers (e.g. ``{"gmail.com"}`` or
    ``{"*"}``) whose dots and plus tags are folded, so j.smith+shop@gmail.com → jsmith@gmail.com."""
    if raw is None or isinstance(raw, bool):
        return Parsed(None)
    text = _nfkc(raw).translate(_INVISIBLE).strip().lower()
    if not text:
        return Parsed(None)
    local, _, domain = text.rpartition("@")
    if not (
        len(text) <= 254
        and len(local) <= 64
        and _EMAIL_FAST.fullmatch(text)
        and ("--" not in domain or not any(label[2:4] == "--" for label in domain.split(".")))
        and domain.rsplit(".", 1)[-1] not in _SPECIAL_USE
    ):
        # Anything unusual (unicode, quoted local parts, "Name <addr>") gets the full validator
        # that the canonical model uses; the fast path above only accepts what it would accept.
        from pydantic.networks import validate_email
        from pydantic_core import PydanticCustomError

        try:
            text = validate_email(text)[1].lower()
        except PydanticCustomError as exc:
            return Parsed(None, f"{raw!r}: {exc.message()}")
        local, _, domain = text.rpartition("@")
    provider = EMAIL_PROVIDERS.get(domain)
    if (
        provider is not None
        and rewrite
        and ("*" in rewrite or domain in rewrite or provider.canonical_domain in rewrite)
    ):
        if provider.tag_separator:
            local = local.split(provider.tag_separator, 1)[0] or local
        if provider.ignores_dots:
            local = local.replace(".", "") or local
        text = f"{local}@{provider.canonical_domain}"
    return Parsed(text)


def email_key(raw: str | None, *, rewrite: Collection[str] = ()) -> str | None:
    """Trimmed and lower-cased; None when it is not an address at all."""
    return check_email(raw, rewrite=rewrite).value


# ====================================================================================== names
@cache
def _t2s() -> OpenCC:
    return OpenCC("t2s")


@lru_cache(maxsize=131072)
def name_text(raw: str | None) -> str | None:
    """NFKC, traditional → simplified, inner whitespace folded; None when empty."""
    if raw is None:
        return None
    text = " ".join(unicodedata.normalize("NFKC", str(raw)).split())
    return _t2s().convert(text) if text else None


def _is_han(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)


@cache
def _surnames() -> tuple[dict[str, str], dict[str, str]]:
    data = _table("surnames.yaml")
    return data["readings"], data["compound"]


def split_chinese_name(full: str | None) -> tuple[str | None, str | None]:
    """(family, given) of a Chinese name written in one field: 欧阳娜娜 → (欧阳, 娜娜), 张伟 → (张, 伟).
    Compound surnames come from hub/data/surnames.yaml; names joined by a middle dot (维吾尔 names)
    have no family name to split off."""
    text = name_text(full)
    if not text:
        return None, None
    text = text.replace(" ", "")
    if "·" in text or "•" in text or len(text) < 2 or not _is_han(text[0]):
        return None, text
    _, compound = _surnames()
    if len(text) >= 3 and text[:2] in compound:
        return text[:2], text[2:]
    return text[0], text[1:]


@lru_cache(maxsize=131072)
def name_pinyin(family: str | None, given: str | None) -> str | None:
    """Toneless pinyin, family first: 曾国藩 → ``zeng guofan``, 单田芳 → ``shan tianfang``,
    欧阳娜娜 → ``ouyang nana``. The family part is read as a surname (曾 zeng, not ceng); the given
    part with pypinyin's phrase dictionary. None for names without Chinese characters."""
    family, given = name_text(family), name_text(given)
    if not family and given and len(given) >= 2 and _is_han(given):
        family, given = split_chinese_name(given)
    if not any(part and _is_han(part) for part in (family, given)):
        return None
    parts = [_family_pinyin(family.replace(" ", "")) if family else "", _given_pinyin(given) if given else ""]
    return " ".join(p for p in parts if p) or None


@lru_cache(maxsize=4096)
def _family_pinyin(family: str) -> str:
    readings, compound = _surnames()
    if family in compound:
        return compound[family]
    return "".join(readings.get(ch) or lazy_pinyin(ch)[0] for ch in family).lower()


@lru_cache(maxsize=65536)
def _given_pinyin(given: str) -> str:
    return "".join(lazy_pinyin(given.replace(" ", ""))).lower()


_PARTICLES = frozenset(
    {"van", "von", "der", "den", "de", "la", "le", "du", "da", "di", "del", "della", "dos", "das", "bin", "al", "ter"}
)
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam"})
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq"})


def western_case(text: str | None) -> str | None:
    """``JOHN`` → ``John``, ``mcdonald`` → ``McDonald``, ``o'brien`` → ``O'Brien``, ``VAN DER BERG`` →
    ``van der Berg``. Text already in mixed case is the writer's choice and kept (``DeVito``)."""
    if not text or _is_han(text) or (text != text.upper() and text != text.lower()):
        return text
    words = text.lower().split(" ")
    out = []
    for position, word in enumerate(words):
        if position and word in _PARTICLES and position < len(words) - 1:
            out.append(word)
            continue
        pieces = re.split(r"([-'’])", word)
        cased = "".join(p[:1].upper() + p[1:] for p in pieces)
        if cased.startswith("Mc") and len(cased) > 2:
            cased = "Mc" + cased[2:3].upper() + cased[3:]
        out.append(cased)
    return " ".join(out)


def split_western_name(full: str | None, *, family_first: bool = False) -> tuple[str | None, str | None]:
    """(family, given) of a Latin-script name in one field. ``Smith, John`` and ``SMITH John`` are
    family-first whatever ``family_first`` says (a comma or an all-capitals family name is how
    people write it); particles stay with the family name (``Anna van der Berg``); titles and
    suffixes (Mr, Dr, Jr, III) are dropped."""
    text = name_text(full)
    if not text:
        return None, None
    if "," in text:
        family, _, given = text.partition(",")
        return _strip_affixes(family) or None, _strip_affixes(given) or None
    tokens = _strip_affixes(text).split()
    if not tokens:
        return None, None
    if len(tokens) == 1:
        return None, tokens[0]
    capitals = [i for i, t in enumerate(tokens) if len(t) > 1 and t.isupper()]
    if len(capitals) == 1 and len(capitals) < len(tokens):
        i = capitals[0]
        return tokens[i], " ".join(tokens[:i] + tokens[i + 1 :])
    if family_first:
        return tokens[0], " ".join(tokens[1:])
    start = len(tokens) - 1
    while start > 1 and tokens[start - 1].lower() in _PARTICLES:
        start -= 1
    return " ".join(tokens[start:]), " ".join(tokens[:start])


def _strip_affixes(text: str) -> str:
    tokens = [t for t in text.replace(".", " ").split() if t.lower() not in _TITLES | _SUFFIXES]
    return " ".join(tokens)


@cache
def _nicknames() -> dict[str, str]:
    table: dict[str, str] = {}
    for formal, nicknames in _table("nicknames.yaml").items():
        for nickname in nicknames:
            table[nickname] = formal
    return table


_FOLD = str.maketrans({"ß": "ss", "ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "ł": "l", "Ł": "l", "đ": "d", "þ": "th"})


def ascii_fold(text: str) -> str:
    """``Zoë Ørsted`` → ``Zoe Orsted``: accents and ligatures folded, for matching only."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def name_key(family: str | None, given: str | None, full: str | None = None) -> str | None:
    """A key for comparing names, never for display. Chinese: simplified characters, family first,
    no spaces (張偉 → 张伟). Latin: family first, lower-case, accents folded, a first given name that
    is a known nickname replaced by the name it stands for (Bob SMITH → ``smith robert``)."""
    family, given = name_text(family), name_text(given)
    if not family and not given:
        text = name_text(full)
        if not text:
            return None
        family, given = split_chinese_name(text) if _is_han(text) else split_western_name(text)
    if any(part and _is_han(part) for part in (family, given)):
        return f"{family or ''}{given or ''}".replace(" ", "") or None
    words = [re.sub(r"[^a-z0-9]+", " ", ascii_fold(part or "").lower()).split() for part in (family, given)]
    family_words, given_words = words
    if given_words:
        given_words[0] = _nicknames().get(given_words[0], given_words[0])
    return " ".join(family_words + given_words) or None


def full_name(family: str | None, given: str | None, given_full: str | None = None) -> str | None:
    """Chinese names family-first without a space; Latin names given-first with one, in name case."""
    family, given = name_text(family), name_text(given)
    if family and given:
        if _is_han(family) or _is_han(given):
            return f"{family}{given}"
        return f"{western_case(given)} {western_case(family)}"
    single = family or given or name_text(given_full)
    return western_case(single) if single else None


@dataclass(frozen=True)
class Name:
    """A person's name after normalisation: parts, display form and matching keys."""

    family: str | None
    given: str | None
    full: str | None
    pinyin: str | None
    key: str | None


def normalise_name(
    family: str | None, given: str | None, full: str | None = None, *, family_first: bool = False
) -> Name:
    """Everything the hub keeps about a name. When the source gives only a full name it is split
    (Chinese by surname table, Latin by the rules of ``split_western_name``)."""
    fam, giv = name_text(family), name_text(given)
    if (fam and _is_han(fam)) or (giv and _is_han(giv)):
        # A Chinese family or given name decides everything without the full name (only read when
        # both are missing, or to tell whether a Latin pair belongs to a Chinese name): cached per
        # pair, so the full name, unique per member, is never converted.
        return _normalise_name(family, given, None, False)
    return _normalise_name(family, given, full, family_first)


@lru_cache(maxsize=131072)
def _normalise_name(family: str | None, given: str | None, full: str | None, family_first: bool) -> Name:
    fam, giv, whole = name_text(family), name_text(given), name_text(full)
    if not fam and not giv and whole:
        if _is_han(whole):
            fam, giv = split_chinese_name(whole)
        else:
            fam, giv = split_western_name(whole, family_first=family_first)
    han = any(part and _is_han(part) for part in (fam, giv, whole))
    if not han:
        fam, giv = western_case(fam), western_case(giv)
    display = full_name(fam, giv, whole) if (fam or giv) else whole
    return Name(fam, giv, display, name_pinyin(fam, giv) if han else None, name_key(fam, giv, whole))


# ====================================================================================== birthdays
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_YMD = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*[日号]?(?:[t ].*)?")
_NO_YEAR = re.compile(r"(?:0000|--)-?(\d{1,2})-(\d{1,2})")
_DMY = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})")
_D_MON_Y = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?[\s-]+([a-z]+)\.?,?[\s-]+(\d{4})")
_MON_D_Y = re.compile(r"([a-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = date(1900, 1, 1)


_TODAY: list[Any] = [0.0, date.min]


def _today() -> date:
    """``date.today()``, read again at most once a second (it costs microseconds, and staging asks
    for every record)."""
    now = time.monotonic()
    if now - _TODAY[0] >= 1.0:
        _TODAY[:] = [now, date.today()]
    return _TODAY[1]


def check_birthday(raw: Any, *, today: date | None = None, day_first: bool | None = None) -> Parsed[date]:
    """A birthday from the forms source systems use: dates, ISO text (``1990-02-03``, with or without
    a time), ``1990/2/3``, ``1990.2.3``, ``19900203``, ``1990年2月3日``, ``3 Feb 1990``, ``Feb 3, 1990``,
    and epoch milliseconds as HubSpot sends them (midnight UTC; a timestamp at 16:00 UTC is taken as
    midnight in China, which is what a UTC+8 system exporting local midnight produces).
    ``02/03/1990`` is read day-first or month-first only when ``day_first`` says which, or when one
    part is over 12; otherwise it is ambiguous and not guessed. Dates before 1900 or after today,
    and month-day without a year (Square's ``0000-09-21``), give None with the reason."""
    today = today or _today()
    if type(raw) is str or type(raw) is int:  # birthdays repeat: each distinct text or number is read once
        return _check_birthday_cached(raw, today, day_first)
    return _check_birthday(raw, today, day_first)


@lru_cache(maxsize=65536)
def _check_birthday_cached(raw: str | int, today: date, day_first: bool | None) -> Parsed[date]:
    return _check_birthday(raw, today, day_first)


def _check_birthday(raw: Any, today: date, day_first: bool | None) -> Parsed[date]:
    if raw is None or raw == "":
        return Parsed(None)
    if isinstance(raw, bool):
        return Parsed(None, f"{raw!r} is not a date")
    try:
        found = _read_birthday(raw, day_first)
    except ValueError as exc:
        return Parsed(None, f"{raw!r}: {exc}")
    if found is None:
        return Parsed(None, f"{raw!r} is not a date in a known format")
    if found > today:
        return Parsed(None, f"{raw!r} is in the future")
    if found < _EARLIEST:
        return Parsed(None, f"{raw!r} is before 1900")
    return Parsed(found)


def parse_birthday(raw: Any, *, today: date | None = None, day_first: bool | None = None) -> date | None:
    return check_birthday(raw, today=today, day_first=day_first).value


def _read_birthday(raw: Any, day_first: bool | None) -> date | None:
    if isinstance(raw, datetime):
        return _moment_date(raw)
    if isinstance(raw, date):
        return raw
    if isinstance(raw, int | float | Decimal):
        return _number_date(raw)
    text = _nfkc(raw).strip().lower()
    if re.fullmatch(r"-?\d+", text):
        return _number_date(int(text))
    if match := _NO_YEAR.fullmatch(text):
        raise ValueError("has a month and day but no year")
    if match := _YMD.fullmatch(text):
        if "t" in text or ":" in text:
            try:
                return _moment_date(datetime.fromisoformat(text.upper().replace("Z", "+00:00")))
            except ValueError:
                pass
        return date(int(match[1]), int(match[2]), int(match[3]))
    if match := _DMY.fullmatch(text):
        a, b, year = int(match[1]), int(match[2]), int(match[3])
        if a > 12 or (day_first and b <= 12):
            return date(year, b, a)
        if b > 12 or day_first is False or a == b:
            return date(year, a, b)
        raise ValueError("day and month order is ambiguous; say day_first for this source")
    if match := _D_MON_Y.fullmatch(text):
        month = _MONTHS.get(match[2])
        return date(int(match[3]), month, int(match[1])) if month else None
    if match := _MON_D_Y.fullmatch(text):
        month = _MONTHS.get(match[1])
        return date(int(match[3]), month, int(match[2])) if month else None
    return None


def _number_date(number: int | float | Decimal) -> date | None:
    if isinstance(number, float | Decimal):
        if number != int(number):
            return None
        number = int(number)
    if 10_000_000 <= number <= 99_999_999:  # YYYYMMDD
        text = str(number)
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    try:
        return _moment_date(_EPOCH + timedelta(milliseconds=number))
    except OverflowError as exc:
        raise ValueError("is not a date") from exc


def _moment_date(moment: datetime) -> date:
    if moment.tzinfo is not None and moment.utcoffset() == timedelta(0) and moment.time().isoformat() == "16:00:00":
        return (moment + timedelta(hours=8)).date()
    return moment.date()


# ====================================================================================== gender
_GENDER = {
    "male": ("m", "male", "man", "boy", "男", "男性", "先生", "1", "mr"),
    "female": ("f", "female", "woman", "girl", "女", "女性", "女士", "小姐", "2", "ms", "mrs", "miss"),
    "other": ("o", "other", "x", "nonbinary", "non-binary", "non binary", "diverse", "其他"),
    None: ("0", "9", "u", "unknown", "未知", "保密", "secret", "n/a", "na", "-", "prefer not to say", "unspecified"),
}
GENDER_CODES = {code: gender for gender, codes in _GENDER.items() for code in codes}
"""Codes that systems use for gender. Digits follow GB/T 2261.1 (1 male, 2 female, 0 unknown,
9 unspecified); a source with another convention maps it in its mapping file with ``case``."""


def gender_code(raw: Any) -> Parsed[str]:
    """``M``/``男``/``1``/``先生`` → male, ``F``/``女``/``2``/``女士`` → female, ``X``/``其他`` → other;
    explicitly unknown codes (0, 9, 保密) → None without a problem; anything else → None, flagged."""
    if raw is None or raw == "":
        return Parsed(None)
    if isinstance(raw, bool):
        return Parsed(None, f"gender code {raw!r} is not recognised")
    key = _nfkc(raw).strip().lower()
    if isinstance(raw, float) and raw == int(raw):
        key = str(int(raw))
    if key in GENDER_CODES:
        return Parsed(GENDER_CODES[key])
    return Parsed(None, f"gender code {raw!r} is not recognised")


# ====================================================================================== addresses
@dataclass(frozen=True)
class Address:
    province: str | None = None
    city: str | None = None
    district: str | None = None
    detail: str | None = None  # what follows the district: street, building, room


@dataclass(frozen=True)
class _Regions:
    provinces: dict[str, dict[str, Any]]  # full name -> entry
    short: dict[str, str]  # short name -> full name
    city_province: dict[str, str]  # city full name -> province full name
    city_short: dict[str, str]  # city short name -> city full name
    districts: dict[str, list[str]]  # district full name -> cities that have it
    city_districts: dict[str, set[str]]
    ambiguous: frozenset[str]
    id_codes: frozenset[str]


@cache
def _regions() -> _Regions:
    data = _table("regions.yaml")
    provinces = {p["name"]: p for p in data["provinces"]}
    short = {p["short"]: p["name"] for p in data["provinces"]}
    city_province = {name: name for name, p in provinces.items() if p.get("municipality")}
    for province, cities in data["cities"].items():
        for city in cities:
            city_province[city] = province
    city_short = {c.removesuffix("市"): c for c in city_province if c.endswith("市")}
    city_short.update({p["short"]: p["name"] for p in data["provinces"] if p.get("municipality")})
    districts: dict[str, list[str]] = {}
    for city, names in data["districts"].items():
        for name in names:
            districts.setdefault(name, []).append(city)
    return _Regions(
        provinces,
        short,
        city_province,
        city_short,
        districts,
        {city: set(names) for city, names in data["districts"].items()},
        frozenset(data["ambiguous_districts"]),
        frozenset([p["code"] for p in data["provinces"]] + data["extra_id_codes"]),
    )


def _prefix(text: str, names: Iterable[str], *, not_before: str = "") -> str | None:
    """The longest of ``names`` that ``text`` starts with (and that is not followed by one of
    ``not_before``: 广州路 is a street, not the city)."""
    for name in _by_length(names if isinstance(names, tuple) else tuple(names)):
        if text.startswith(name) and not (not_before and text[len(name) : len(name) + 1] in not_before):
            return name
    return None


@lru_cache(maxsize=1024)
def _by_length(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(names, key=len, reverse=True))


@lru_cache(maxsize=65536)
def split_address(raw: str | None) -> Address:
    """Province, city and district of a Chinese address, where the table knows them:
    ``广东省广州市天河区天河路208号`` → 广东省 / 广州市 / 天河区 / 天河路208号; ``上海浦东新区世纪大道100号``
    → 上海市 / 上海市 / 浦东新区. A province missing from the text is inferred from its city; a city
    from its district only when no other city has a district of that name. Nothing is guessed beyond
    that: an address the table does not know is returned as detail."""
    text = name_text(raw)
    if not text:
        return Address()
    text = text.replace(" ", "")
    r = _regions()
    province = city = district = None
    rest = text
    if found := _prefix(rest, tuple(r.provinces)):
        province, rest = found, rest[len(found) :]
    elif found := _prefix(rest, tuple(c for c in r.city_province if c.endswith("市"))):
        city, rest = found, rest[len(found) :]
    elif found := _prefix(rest, tuple(r.short), not_before="市区县路街"):
        province, rest = r.short[found], rest[len(found) :]
    if province and city is None:
        if r.provinces[province].get("municipality"):
            city = province
            rest = rest.removeprefix(province).removeprefix(r.provinces[province]["short"] + "市")
        else:
            cities = tuple(c for c, p in r.city_province.items() if p == province)
            if found := _prefix(rest, cities):
                city, rest = found, rest[len(found) :]
            elif found := _prefix(rest, tuple(c.removesuffix("市") for c in cities), not_before="区县路街"):
                city, rest = found + "市", rest[len(found) :]
    elif city is None and (found := _prefix(rest, tuple(r.city_short), not_before="区县路街")):
        city, rest = r.city_short[found], rest[len(found) :]
    if city and province is None:
        province = r.city_province.get(city)
    if city:
        if found := _prefix(rest, tuple(sorted(r.city_districts.get(city, ())))):
            district, rest = found, rest[len(found) :]
    elif found := _prefix(rest, tuple(r.districts)):
        owners = r.districts[found]
        district, rest = found, rest[len(found) :]
        if len(owners) == 1 and found not in r.ambiguous:
            city = owners[0]
            province = r.city_province.get(city)
    return Address(province, city, district, rest or None)


def city_name(raw: str | None) -> str | None:
    """A city as the table names it (上海 → 上海市, 廣州 → 广州市); unknown cities as written."""
    text = name_text(raw)
    if not text:
        return None
    r = _regions()
    compact = text.replace(" ", "")
    if compact in r.city_province:
        return compact
    return r.city_short.get(compact, text)


def province_of(city: str | None) -> str | None:
    return _regions().city_province.get(city) if city else None


# ====================================================================================== resident IDs
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


@dataclass(frozen=True)
class ResidentId:
    """A valid resident ID number (居民身份证号码), always in its 18-character form."""

    number: str
    birth_date: date
    sex: str  # male | female, from the sequence code's parity
    region_code: str  # the six-digit administrative division code

    def __repr__(self) -> str:  # never print the number itself
        return f"ResidentId(region={self.region_code[:2]}****, birth_date=…, sex={self.sex})"


def id_check_digit(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def check_resident_id(raw: Any, *, today: date | None = None) -> Parsed[ResidentId]:
    """An 18-character resident ID (17 digits and a MOD 11-2 check digit, X allowed) or an old
    15-digit one (upgraded to 18: the century 19 inserted and the check digit computed, so both
    forms of one person's number hash alike). The province code, the birth date (a real date, not
    in the future) and the check digit are validated. Problems never quote the number."""
    if raw is None or raw == "" or isinstance(raw, bool):
        return Parsed(None)
    text = _nfkc(raw).strip().upper().replace(" ", "")
    if len(text) == 15 and text.isdigit():
        first17 = text[:6] + "19" + text[6:]
        number = first17 + id_check_digit(first17)
    elif len(text) == 18 and text[:17].isdigit() and (text[17].isdigit() or text[17] == "X"):
        number = text
        expected = id_check_digit(number[:17])
        if number[17] != expected:
            return Parsed(None, "resident ID check digit does not match (typo or made-up number)")
    else:
        return Parsed(None, f"resident ID must be 18 characters (or 15 digits), got {len(text)}")
    if number[:2] not in _regions().id_codes:
        return Parsed(None, f"resident ID region code {number[:2]} is not a province")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return Parsed(None, "resident ID birth date is not a real date")
    if born > (today or _today()) or born < _EARLIEST:
        return Parsed(None, "resident ID birth date is out of range")
    return Parsed(ResidentId(number, born, "male" if int(number[16]) % 2 else "female", number[:6]))


HASH_KEY_ENV = "MEMBERHUB_HASH_KEY"


def keyed_hash(kind: str, value: str, *, key: str | None = None) -> str:
    """HMAC-SHA256 of ``kind:value`` under the hub's secret key (environment MEMBERHUB_HASH_KEY): the
    same value always gives the same hash, so records match on it, but the value cannot be
    recovered or brute-forced without the key. Changing the key breaks every stored hash."""
    secret = key if key is not None else os.environ.get(HASH_KEY_ENV)
    if not secret:
        raise HubError(
            f"{HASH_KEY_ENV} is not set: resident ID numbers are stored only as a keyed hash. Set it to a "
            "long random secret (python -c 'import secrets; print(secrets.token_hex(32))'), keep it "
            "in your secret store, and use the same value on every run and machine."
        )
    if len(secret) < 16:
        raise HubError(f"{HASH_KEY_ENV} is too short ({len(secret)} characters); use at least 32 random characters")
    return hmac.new(secret.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def resident_id_hash(raw: Any, *, key: str | None = None) -> str | None:
    """The keyed hash of a valid resident ID number, or None when it is absent or invalid."""
    parsed = check_resident_id(raw)
    return keyed_hash("cn_resident_id", parsed.value.number, key=key) if parsed.value else None


__all__ = [
    "EMAIL_PROVIDERS",
    "GENDER_CODES",
    "Address",
    "Name",
    "Parsed",
    "ResidentId",
    "ascii_fold",
    "check_birthday",
    "check_email",
    "check_phone",
    "check_resident_id",
    "city_name",
    "email_key",
    "full_name",
    "gender_code",
    "id_check_digit",
    "keyed_hash",
    "name_key",
    "name_pinyin",
    "name_text",
    "normalise_name",
    "parse_birthday",
    "phone_e164",
    "province_of",
    "resident_id_hash",
    "split_address",
    "split_chinese_name",
    "split_western_name",
    "western_case",
]
