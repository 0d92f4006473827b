"""Views of a field that comparisons and blocking keys read: ``text`` (normalised), ``pinyin``
(toneless, Hanzi read as Mandarin, Latin letters folded to ASCII), ``initials``, ``digits``,
``days`` (a date as days since 1970) and a few more. Each view is a pure function of one value,
registered by name, and computed once per distinct value (names repeat a lot), never per pair."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date
from functools import cache, lru_cache
from pathlib import Path

import yaml
from opencc import OpenCC
from pypinyin import Style, lazy_pinyin

# Surname readings that differ from the everyday reading of the character (pypinyin reads 曾 as
# ceng, 单 as dan...). hub/data/surnames.yaml extends this table when it is present.
_SURNAME_READINGS = {
    "曾": "zeng", "单": "shan", "区": "ou", "解": "xie", "仇": "qiu", "查": "zha", "朴": "piao",
    "盖": "ge", "乐": "yue", "秘": "bi", "种": "chong", "覃": "qin", "缪": "miao", "翟": "zhai",
    "召": "shao", "员": "yun", "繁": "po", "黑": "he", "冼": "xian", "句": "gou", "能": "nai",
    "尉": "yu", "长": "zhang", "重": "chong", "沈": "shen", "石": "shi", "柏": "bai", "薄": "bo",
}  # fmt: skip
_COMPOUND_SURNAMES = {
    "欧阳": "ouyang", "司马": "sima", "上官": "shangguan", "诸葛": "zhuge", "东方": "dongfang",
    "皇甫": "huangfu", "尉迟": "yuchi", "公孙": "gongsun", "慕容": "murong", "令狐": "linghu",
    "长孙": "zhangsun", "宇文": "yuwen", "司徒": "situ", "夏侯": "xiahou", "端木": "duanmu",
    "单于": "chanyu", "万俟": "moqi", "澹台": "tantai", "呼延": "huyan", "轩辕": "xuanyuan",
}  # fmt: skip
_SHARED_SURNAMES = Path(__file__).resolve().parents[1] / "data" / "surnames.yaml"


@cache
def surname_tables() -> tuple[dict[str, str], dict[str, str]]:
    readings, compound = dict(_SURNAME_READINGS), dict(_COMPOUND_SURNAMES)
    if _SHARED_SURNAMES.exists():
        try:
            data = yaml.safe_load(_SHARED_SURNAMES.read_text(encoding="utf-8")) or {}
            readings.update({k: str(v) for k, v in (data.get("readings") or {}).items()})
            compound.update({k: str(v).replace(" ", "") for k, v in (data.get("compound") or {}).items()})
        except (OSError, yaml.YAMLError, AttributeError):
            pass  # the built-in table is enough to match on
    return readings, compound


@cache
def _t2s() -> OpenCC:
    return OpenCC("t2s")


def is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")
_NOT_DIGIT = re.compile(r"\D+")


def has_han(text: str) -> bool:
    return _HAN.search(text) is not None


@lru_cache(maxsize=1 << 20)
def normalise(value: str) -> str | None:
    """NFKC, traditional → simplified, lower case, inner whitespace folded; None when empty."""
    text = " ".join(unicodedata.normalize("NFKC", value).split()).lower()
    if not text:
        return None
    if has_han(text):
        text = _t2s().convert(text).replace(" ", "")
    return text


_CHAR_PINYIN: dict[str, str] = {}


def _char_pinyin(ch: str) -> str:
    reading = _CHAR_PINYIN.get(ch)
    if reading is None:
        reading = _CHAR_PINYIN[ch] = lazy_pinyin(ch, style=Style.NORMAL)[0].lower() if is_han(ch) else ch
    return reading


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch)).lower()


def pinyin(text: str, *, surname: bool = False) -> str:
    """Toneless pinyin without spaces (王芳 → wangfang); Latin text folded to ASCII letters and digits.
    With ``surname`` the leading characters are read as a family name (曾 → zeng)."""
    if not has_han(text):
        return _fold(text)
    readings, compound = surname_tables()
    out = []
    rest = text
    if surname:
        if rest[:2] in compound:
            out.append(compound[rest[:2]])
            rest = rest[2:]
        elif rest[:1] in readings:
            out.append(readings[rest[:1]])
            rest = rest[1:]
    out.extend(_char_pinyin(ch) for ch in rest)
    return _fold("".join(out))


def initials(text: str) -> str:
    """First letter of each word, or of each character's pinyin: 王小明 → wxm, mary jane → mj."""
    if has_han(text):
        return "".join(_char_pinyin(ch)[:1] for ch in text if not ch.isspace())
    return "".join(word[:1] for word in _fold_words(text))


def _fold_words(text: str) -> list[str]:
    return [w for w in (_fold(part) for part in text.split()) if w]


_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def date_key(value: str) -> str | None:
    """YYYYMMDD for ``1990-05-01``, ``19900501`` or a date; None when it is not a date."""
    m = _DATE.match(value)
    return "".join(m.groups()) if m else None


def days(value: str) -> int | None:
    """Days since 1970-01-01 of a YYYYMMDD date; None when it is not a real calendar date."""
    key = date_key(value)
    if key is None:
        return None
    try:
        return date(int(key[:4]), int(key[4:6]), int(key[6:])).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None


def month_day_swapped(value: str) -> str | None:
    """The same date with month and day exchanged (19900105 → 19900501): a common entry error."""
    key = date_key(value)
    return None if key is None else key[:4] + key[6:8] + key[4:6]


def digits(value: str) -> str | None:
    return _NOT_DIGIT.sub("", value) or None


def _email_local(value: str) -> str | None:
    local, at, _ = value.rpartition("@")
    return local.split("+", 1)[0].replace(".", "") if at else None


# A view's function gets the normalised text of a value and returns the view's value or None.
VIEWS: dict[str, Callable[[str], str | int | None]] = {
    "text": lambda v: v,
    "pinyin": lambda v: pinyin(v) or None,
    "surname_pinyin": lambda v: pinyin(v, surname=True) or None,
    "initials": lambda v: initials(v) or None,
    "first_letter": lambda v: pinyin(v)[:1] or None,
    "prefix3": lambda v: pinyin(v)[:3] or None,
    "digits": digits,
    "last4": lambda v: (digits(v) or "")[-4:] or None,
    "date": date_key,
    "days": days,
    "year": lambda v: (date_key(v) or "")[:4] or None,
    "month_day_swapped": month_day_swapped,
    "email_local": _email_local,
}
