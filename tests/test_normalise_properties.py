"""Properties of the normalisers' fast paths: each gives exactly what the general code gives.

Chinese mobiles are read without phonenumbers' parser (hub.normalise.check_phone); plain addresses
without the full email validator (check_email). Hypothesis writes numbers and addresses the way
member systems hold them, and each fast result must equal the slow one."""

import re

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hub import normalise
from hub.normalise import check_email, check_phone

FULL_WIDTH = str.maketrans("0123456789+-() ", "０１２３４５６７８９＋－（）\u3000")
NEVER = re.compile(r"(?!)")


def written(national: str, prefix: str, groups: bool, separator: str, full_width: bool) -> str:
    body = f"{national[:3]}{separator}{national[3:7]}{separator}{national[7:]}" if groups else national
    text = f"{prefix}{body}"
    return text.translate(FULL_WIDTH) if full_width else text


mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
any_eleven = st.from_regex(r"1[0-9]{10}", fullmatch=True)
prefixes = st.sampled_from(["", "+86", "+86 ", "+86-", "0086", "0086 ", "86", "86 ", "(+86) ", " "])
separators = st.sampled_from([" ", "-", ".", "  ", " - "])


def slow(raw: str, region: str = "CN") -> tuple:
    """check_phone with its Chinese-mobile fast path switched off: phonenumbers reads everything."""
    fast = normalise._CN_MOBILE_INPUT
    normalise._CN_MOBILE_INPUT = NEVER
    try:
        return tuple(check_phone(raw, region))
    finally:
        normalise._CN_MOBILE_INPUT = fast


@settings(max_examples=400, deadline=None)
@given(national=mobiles | any_eleven, prefix=prefixes, groups=st.booleans(), separator=separators, wide=st.booleans())
@example(national="13812345678", prefix="0086 ", groups=True, separator="-", wide=True)
@example(national="14012345678", prefix="+86", groups=False, separator=" ", wide=False)
def test_chinese_mobile_fast_path_equals_phonenumbers(national, prefix, groups, separator, wide):
    raw = written(national, prefix, groups, separator, wide)
    number = phonenumbers.parse("+86" + national)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    expected = e164 if phonenumbers.is_valid_number(number) else None
    assert check_phone(raw).value == expected
    assert tuple(check_phone(raw)) == slow(raw)


@settings(max_examples=200, deadline=None)
@given(national=mobiles, prefix=st.sampled_from(["+86 ", "0086"]), region=st.sampled_from(["US", "GB", "HK"]))
def test_fast_path_with_another_default_region(national, prefix, region):
    raw = f"{prefix}{national}"
    assert tuple(check_phone(raw, region)) == slow(raw, region)


atoms = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}", fullmatch=True)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    local=st.lists(atoms, min_size=1, max_size=3).map(".".join),
    domain=st.lists(labels, min_size=1, max_size=3).map(".".join),
    tld=st.sampled_from(["com", "cn", "net", "org", "io", "test", "local", "c", "xn--fiqs8s"]),
    padding=st.sampled_from(["", " ", "\u200b"]),
)
@example(local="a", domain="xn--ab", tld="com", padding="")
def test_email_fast_path_equals_the_full_validator(local, domain, tld, padding):
    from pydantic.networks import validate_email
    from pydantic_core import PydanticCustomError

    raw = f"{padding}{local}@{domain}.{tld}{padding}"
    text = raw.replace("\u200b", "").strip().lower()
    try:
        expected = (validate_email(text)[1].lower(), None)
    except PydanticCustomError:
        expected = None
    got = tuple(check_email(raw))
    if expected is None:
        assert got[0] is None and got[1]
    else:
        assert got == expected


@pytest.mark.parametrize("raw", ["+86 138 1234 5678", "0086-138-1234-5678", "８６ １３８１２３４５６７８"])
def test_the_examples_in_the_docstring_take_the_fast_path(raw, monkeypatch):
    def no_parser(*args, **kwargs):
        raise AssertionError("phonenumbers was asked")

    monkeypatch.setattr(normalise.phonenumbers, "parse", no_parser)
    assert check_phone(raw).value == "+8613812345678"
