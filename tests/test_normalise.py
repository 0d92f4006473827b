import pytest

from hub.normalise import email_key, full_name, name_text, phone_e164


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("138 1234 5678", "+8613812345678"),
        ("+86-138-1234-5678", "+8613812345678"),
        ("0086 13812345678", "+8613812345678"),
        ("86 13812345678", "+8613812345678"),
        ("8613812345678", "+8613812345678"),
        ("13812345678", "+8613812345678"),
        ("１３８１２３４５６７８", "+8613812345678"),
        ("+1 650-253-0000", "+16502530000"),
        ("12345", None),
        ("1381234567", None),
        ("", None),
        (None, None),
        ("not a phone", None),
    ],
)
def test_phone_e164(raw, expected):
    assert phone_e164(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Foo.Bar@QQ.com ", "foo.bar@qq.com"),
        ("ＦＯＯ@qq.com", "foo@qq.com"),
        ("no-at-sign", None),
        ("a@b", None),
        ("", None),
    ],
)
def test_email_key(raw, expected):
    assert email_key(raw) == expected


@pytest.mark.parametrize(
    ("family", "given", "expected"),
    [
        ("張", "偉", "张伟"),
        ("欧阳", "娜娜", "欧阳娜娜"),
        ("Smith", "John", "John Smith"),
        (None, "John", "John"),
        ("  王 ", " 芳", "王芳"),
    ],
)
def test_full_name(family, given, expected):
    assert full_name(family, given) == expected


def test_name_text_folds_width_and_space():
    assert name_text("Ｊｏｈｎ   Ｓｍｉｔｈ") == "John Smith"
    assert name_text("   ") is None
