"""One input → expected table per normalisation rule (hub.normalise)."""

import re
from datetime import UTC, date, datetime

import phonenumbers
import pytest

from hub.normalise import (
    Address,
    check_birthday,
    check_email,
    check_phone,
    check_resident_id,
    city_name,
    gender_code,
    id_check_digit,
    keyed_hash,
    name_key,
    name_pinyin,
    normalise_name,
    resident_id_hash,
    split_address,
    split_chinese_name,
    split_western_name,
    western_case,
)
from schemas.errors import HubError

TODAY = date(2025, 6, 1)


def epoch_ms(*ymd, hour=0):
    return int(datetime(*ymd, hour, tzinfo=UTC).timestamp() * 1000)


# ------------------------------------------------------------------------------ phones
@pytest.mark.parametrize(
    ("raw", "region", "value", "problem"),
    [
        ("138 1234 5678", "CN", "+8613812345678", None),
        ("+86-138-1234-5678", "CN", "+8613812345678", None),
        ("0086 13812345678", "CN", "+8613812345678", None),
        ("86 138 1234 5678", "CN", "+8613812345678", None),
        ("(+86) 138.1234.5678", "CN", "+8613812345678", None),
        ("１３８－１２３４－５６７８", "CN", "+8613812345678", None),
        (13812345678, "CN", "+8613812345678", None),
        ("010-6552 9988", "CN", "+861065529988", None),
        ("+1 650-253-0000", "CN", "+16502530000", None),
        ("650-253-0000", "US", "+16502530000", None),
        ("+86 138 1234 5678", "US", "+8613812345678", None),
        ("14012345678", "CN", None, "'14012345678' is not a valid phone number (default region CN)"),
        ("12345", "CN", None, "'12345' is not a valid phone number (default region CN)"),
        ("abc", "CN", None, "'abc' is not a phone number (no digits to read)"),
        ("", "CN", None, None),
        (None, "CN", None, None),
    ],
)
def test_phone(raw, region, value, problem):
    assert check_phone(raw, region) == (value, problem)


@pytest.mark.parametrize("national", ["13812345678", "14012345678", "16212345678", "17400012345", "19912345678"])
def test_phone_fast_path_agrees_with_phonenumbers(national):
    number = phonenumbers.parse(national, "CN")
    expected = phonenumbers.format_number(number, 0) if phonenumbers.is_valid_number(number) else None
    assert check_phone(national).value == expected


# ------------------------------------------------------------------------------ emails
@pytest.mark.parametrize(
    ("raw", "rewrite", "value"),
    [
        (" Foo.Bar@QQ.com ", (), "foo.bar@qq.com"),
        ("ＦＯＯ@qq.com", (), "foo@qq.com"),
        ("a\u200b@163.com", (), "a@163.com"),
        ("Jane <jane@x.com>", (), "jane@x.com"),
        ("J.Smith+shop@GMAIL.com", (), "j.smith+shop@gmail.com"),
        ("J.Smith+shop@GMAIL.com", {"gmail.com"}, "jsmith@gmail.com"),
        ("j.smith+shop@googlemail.com", {"*"}, "jsmith@gmail.com"),
        ("j.smith+shop@outlook.com", {"*"}, "j.smith@outlook.com"),
        ("j.smith+shop@outlook.com", {"gmail.com"}, "j.smith+shop@outlook.com"),
        ("li.lei+vip@qq.com", {"*"}, "li.lei+vip@qq.com"),
    ],
)
def test_email(raw, rewrite, value):
    assert check_email(raw, rewrite=rewrite) == (value, None)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("no-at-sign", "An email address must have an @-sign."),
        ("a..b@x.com", "An email address cannot have two periods in a row."),
        ("x@localhost", "It should have a period."),
        ("a@x.test", "special-use or reserved name"),
        ("a b@x.com", "invalid characters before the @-sign: SPACE"),
    ],
)
def test_invalid_email_says_why(raw, problem):
    parsed = check_email(raw)
    assert parsed.value is None and problem in parsed.problem and repr(raw) in parsed.problem


# ------------------------------------------------------------------------------ Chinese names
@pytest.mark.parametrize(
    ("family", "given", "pinyin"),
    [
        ("曾", "国藩", "zeng guofan"),
        ("单", "田芳", "shan tianfang"),
        ("区", "志强", "ou zhiqiang"),
        ("區", "志強", "ou zhiqiang"),
        ("解", "放", "xie fang"),
        ("仇", "英", "qiu ying"),
        ("查", "良镛", "zha liangyong"),
        ("朴", "槿惠", "piao jinhui"),
        ("欧阳", "娜娜", "ouyang nana"),
        ("尉迟", "恭", "yuchi gong"),
        ("长孙", "无忌", "zhangsun wuji"),
        ("张", "伟", "zhang wei"),
        (None, "诸葛亮", "zhuge liang"),
        (None, "曾国藩", "zeng guofan"),
        ("Smith", "John", None),
    ],
)
def test_pinyin_reads_surnames_as_surnames(family, given, pinyin):
    assert name_pinyin(family, given) == pinyin


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        ("欧阳娜娜", ("欧阳", "娜娜")),
        ("司马光", ("司马", "光")),
        ("诸葛亮", ("诸葛", "亮")),
        ("上官婉儿", ("上官", "婉儿")),
        ("張偉", ("张", "伟")),
        ("王 芳", ("王", "芳")),
        ("钟离春", ("钟", "离春")),
        ("欧阳", ("欧", "阳")),
        ("买买提·艾力", (None, "买买提·艾力")),
        ("", (None, None)),
    ],
)
def test_split_chinese_name(full, expected):
    assert split_chinese_name(full) == expected


# ------------------------------------------------------------------------------ Western names
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("JOHN", "John"),
        ("mcdonald", "McDonald"),
        ("o'brien", "O'Brien"),
        ("MARY-JANE", "Mary-Jane"),
        ("anna van der berg", "Anna van der Berg"),
        ("DeVito", "DeVito"),
        ("ZOË", "Zoë"),
        ("张伟", "张伟"),
    ],
)
def test_western_case(raw, expected):
    assert western_case(raw) == expected


@pytest.mark.parametrize(
    ("full", "family_first", "expected"),
    [
        ("John Smith", False, ("Smith", "John")),
        ("Smith, John", False, ("Smith", "John")),
        ("SMITH John", False, ("SMITH", "John")),
        ("Smith John", True, ("Smith", "John")),
        ("Dr. John Smith Jr.", False, ("Smith", "John")),
        ("Anna van der Berg", False, ("van der Berg", "Anna")),
        ("Madonna", False, (None, "Madonna")),
    ],
)
def test_split_western_name(full, family_first, expected):
    assert split_western_name(full, family_first=family_first) == expected


@pytest.mark.parametrize(
    ("family", "given", "full", "key"),
    [
        ("Smith", "Bob", None, "smith robert"),
        ("SMITH", "robert", None, "smith robert"),
        (None, None, "Smith, Róbert", "smith robert"),
        ("Ørsted", "Zoë", None, "orsted zoe"),
        ("Lee", "Chris", None, "lee chris"),
        ("Smith", None, None, "smith"),
        (None, "Bob", None, "robert"),
        ("張", "偉", None, "张伟"),
        (None, None, "欧阳 娜娜", "欧阳娜娜"),
    ],
)
def test_name_key(family, given, full, key):
    assert name_key(family, given, full) == key


def test_normalise_name_splits_a_full_name_and_cases_it():
    name = normalise_name(None, None, "SMITH john")
    assert (name.family, name.given, name.full, name.pinyin, name.key) == (
        "Smith",
        "John",
        "John Smith",
        None,
        "smith john",
    )
    name = normalise_name(None, None, "曾國藩")
    assert (name.family, name.given, name.full, name.pinyin) == ("曾", "国藩", "曾国藩", "zeng guofan")


# ------------------------------------------------------------------------------ birthdays
@pytest.mark.parametrize(
    ("raw", "day_first", "expected"),
    [
        ("1990-02-03", None, date(1990, 2, 3)),
        ("1990-2-3", None, date(1990, 2, 3)),
        ("1990/2/3", None, date(1990, 2, 3)),
        ("1990.02.03", None, date(1990, 2, 3)),
        ("19900203", None, date(1990, 2, 3)),
        (19900203, None, date(1990, 2, 3)),
        ("1990年2月3日", None, date(1990, 2, 3)),
        ("１９９０年０２月０３日", None, date(1990, 2, 3)),
        ("1990-02-03T00:00:00Z", None, date(1990, 2, 3)),
        ("1990-02-02T16:00:00.000Z", None, date(1990, 2, 3)),
        (epoch_ms(1990, 2, 3), None, date(1990, 2, 3)),
        (str(epoch_ms(1990, 2, 3)), None, date(1990, 2, 3)),
        (epoch_ms(1960, 1, 1), None, date(1960, 1, 1)),
        (epoch_ms(1990, 2, 2, hour=16), None, date(1990, 2, 3)),
        ("3 Feb 1990", None, date(1990, 2, 3)),
        ("03-Feb-1990", None, date(1990, 2, 3)),
        ("February 3rd, 1990", None, date(1990, 2, 3)),
        ("13/02/1990", None, date(1990, 2, 13)),
        ("02/13/1990", None, date(1990, 2, 13)),
        ("03/02/1990", True, date(1990, 2, 3)),
        ("02/03/1990", False, date(1990, 2, 3)),
        (date(1990, 2, 3), None, date(1990, 2, 3)),
        (datetime(1990, 2, 3, 9, 30), None, date(1990, 2, 3)),
    ],
)
def test_birthday_formats(raw, day_first, expected):
    assert check_birthday(raw, today=TODAY, day_first=day_first) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("02/03/1990", "'02/03/1990': day and month order is ambiguous; say day_first for this source"),
        ("0000-09-21", "'0000-09-21': has a month and day but no year"),
        ("--09-21", "'--09-21': has a month and day but no year"),
        ("1990-02-30", "'1990-02-30': day is out of range for month"),
        ("2030-01-01", "'2030-01-01' is in the future"),
        ("1850-01-01", "'1850-01-01' is before 1900"),
        ("yesterday", "'yesterday' is not a date in a known format"),
        (True, "True is not a date"),
    ],
)
def test_birthday_problems(raw, problem):
    assert check_birthday(raw, today=TODAY) == (None, problem)


# ------------------------------------------------------------------------------ gender
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("M", ("male", None)),
        ("male", ("male", None)),
        ("男", ("male", None)),
        ("先生", ("male", None)),
        (1, ("male", None)),
        ("1", ("male", None)),
        ("F", ("female", None)),
        ("Female", ("female", None)),
        ("女", ("female", None)),
        ("女士", ("female", None)),
        (2, ("female", None)),
        (2.0, ("female", None)),
        ("X", ("other", None)),
        ("其他", ("other", None)),
        ("0", (None, None)),
        ("9", (None, None)),
        ("保密", (None, None)),
        (None, (None, None)),
        ("Q", (None, "gender code 'Q' is not recognised")),
        (True, (None, "gender code True is not recognised")),
    ],
)
def test_gender_codes(raw, expected):
    assert gender_code(raw) == expected


# ------------------------------------------------------------------------------ addresses
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("广东省广州市天河区天河路208号", Address("广东省", "广州市", "天河区", "天河路208号")),
        ("广东广州天河区天河路208号", Address("广东省", "广州市", "天河区", "天河路208号")),
        ("上海市徐汇区漕溪北路88号", Address("上海市", "上海市", "徐汇区", "漕溪北路88号")),
        ("上海浦东新区世纪大道100号", Address("上海市", "上海市", "浦东新区", "世纪大道100号")),
        ("北京朝阳区建国路87号", Address("北京市", "北京市", "朝阳区", "建国路87号")),
        ("浦东新区世纪大道100号", Address("上海市", "上海市", "浦东新区", "世纪大道100号")),
        ("朝阳区建国路87号", Address(None, None, "朝阳区", "建国路87号")),
        ("杭州市西湖区文三路", Address("浙江省", "杭州市", "西湖区", "文三路")),
        ("吉林省吉林市船营区", Address("吉林省", "吉林市", None, "船营区")),
        ("江苏省南京市", Address("江苏省", "南京市", None, None)),
        ("廣東省深圳市南山區科技園", Address("广东省", "深圳市", "南山区", "科技园")),
        ("上海南京路100号", Address("上海市", "上海市", None, "南京路100号")),
        ("火星基地1号", Address(None, None, None, "火星基地1号")),
        ("", Address()),
    ],
)
def test_split_address(raw, expected):
    assert split_address(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("上海", "上海市"), ("廣州", "广州市"), ("杭州市", "杭州市"), ("Shanghai", "Shanghai"), ("", None)],
)
def test_city_name(raw, expected):
    assert city_name(raw) == expected


# ------------------------------------------------------------------------------ resident IDs
VALID_18 = "11010519491231002X"  # the example number of GB 11643-1999
VALID_15 = "110105491231002"  # the same person's old 15-digit number


@pytest.mark.parametrize(
    ("raw", "number", "born", "sex", "problem"),
    [
        (VALID_18, VALID_18, date(1949, 12, 31), "female", None),
        (VALID_18.lower(), VALID_18, date(1949, 12, 31), "female", None),
        (" 1101 0519 4912 3100 2X ", VALID_18, date(1949, 12, 31), "female", None),
        (VALID_15, VALID_18, date(1949, 12, 31), "female", None),
        ("110105194912310021", None, None, None, "resident ID check digit does not match (typo or made-up number)"),
        (
            "99010519491231002" + id_check_digit("99010519491231002"),
            None,
            None,
            None,
            "resident ID region code 99 is not a province",
        ),
        (
            "11010519491331002" + id_check_digit("11010519491331002"),
            None,
            None,
            None,
            "resident ID birth date is not a real date",
        ),
        (
            "11010520300101002" + id_check_digit("11010520300101002"),
            None,
            None,
            None,
            "resident ID birth date is out of range",
        ),
        ("1101051949123100", None, None, None, "resident ID must be 18 characters (or 15 digits), got 16"),
        ("", None, None, None, None),
    ],
)
def test_resident_id(raw, number, born, sex, problem):
    parsed = check_resident_id(raw, today=TODAY)
    assert parsed.problem == problem
    if number:
        assert (parsed.value.number, parsed.value.birth_date, parsed.value.sex) == (number, born, sex)
    else:
        assert parsed.value is None
    assert VALID_18 not in repr(parsed) and VALID_18 not in (parsed.problem or "")


def test_resident_id_hash_is_keyed_and_the_same_for_old_and_new_numbers(monkeypatch):
    monkeypatch.setenv("MEMBERHUB_HASH_KEY", "k" * 32)
    digest = resident_id_hash(VALID_18)
    assert digest == resident_id_hash(VALID_15) == resident_id_hash(VALID_18.lower())
    assert len(digest) == 64 and VALID_18 not in digest
    assert digest != resident_id_hash(VALID_18, key="another key of 32 characters...")
    assert resident_id_hash("110105194912310021") is None


@pytest.mark.parametrize(
    ("key", "message"),
    [(None, "MEMBERHUB_HASH_KEY is not set"), ("short", "MEMBERHUB_HASH_KEY is too short (5 characters)")],
)
def test_keyed_hash_needs_a_real_key(monkeypatch, key, message):
    monkeypatch.delenv("MEMBERHUB_HASH_KEY", raising=False)
    if key:
        monkeypatch.setenv("MEMBERHUB_HASH_KEY", key)
    with pytest.raises(HubError, match=re.escape(message)):
        keyed_hash("cn_resident_id", VALID_18)
