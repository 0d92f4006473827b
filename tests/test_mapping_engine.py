from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mappings import load_mapping
from schemas.errors import MappingError

BASE = """\
source: shopify
stream: orders
target: order
fields:
  source_id: id
  member_source_id: customer.id
  store_code: store('online')
  channel: "'online'"
  status: case when cancelled_at is not null then 'cancelled' when financial_status = 'paid' then 'paid' else 'pending' end
  total.amount: cast(total_price as decimal)
  total.currency: currency
  ordered_at: created_at
lines:
  from: line_items
  fields:
    sku: upper(sku)
    quantity: cast(quantity as int)
    unit_price.amount: cast(price as decimal)
    unit_price.currency: "'CNY'"
"""

RECORD = {
    "id": 5,
    "customer": {"id": 9},
    "cancelled_at": None,
    "financial_status": "paid",
    "total_price": "12.50",
    "currency": "CNY",
    "created_at": "2025-01-01T00:00:00+08:00",
    "line_items": [{"sku": "ab", "quantity": "2", "price": "6.25"}],
}


def compile_text(tmp_path, text):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return load_mapping(path), path


def test_apply_builds_nested_canonical_values(tmp_path):
    mapping, _ = compile_text(tmp_path, BASE)
    values = mapping.apply(RECORD)
    assert values["member_source_id"] == 9
    assert values["store_code"] == "ONLINE"
    assert values["status"] == "paid"
    assert values["total"] == {"amount": Decimal("12.50"), "currency": "CNY"}
    assert values["lines"] == [
        {"sku": "AB", "quantity": 2, "unit_price": {"amount": Decimal("6.25"), "currency": "CNY"}}
    ]
    assert {"customer.id", "line_items[].price"} <= mapping.source_fields


@pytest.mark.parametrize(
    ("expression", "record", "expected"),
    [
        ("coalesce(a, b)", {"a": None, "b": "x"}, "x"),
        ("coalesce(a, b)", {"a": "", "b": "x"}, "x"),
        ("trim(a || ' ' || b)", {"a": "张", "b": "伟 "}, "张 伟"),
        ("a || b", {"a": None, "b": "x"}, None),
        ("amount / 100", {"amount": 990}, Decimal("9.9")),
        ("cast(a as int) + 1", {"a": "41"}, 42),
        ("-a", {"a": 3}, -3),
        ("nullif(a, '')", {"a": ""}, None),
        ("lower(a)", {"a": "Foo@QQ.com"}, "foo@qq.com"),
        ("a in ('x', 'y')", {"a": "y"}, True),
        ("a.b.c", {"a": {"b": {"c": 1}}}, 1),
        ("a.b", {"a": None}, None),
        ("m2o_id(p)", {"p": [7, "Name"]}, 7),
        ("m2o_name(p)", {"p": False}, None),
        ("odoo_null(p)", {"p": False}, None),
        ("utc(d)", {"d": "2025-06-01 10:00:00"}, datetime(2025, 6, 1, 10, tzinfo=UTC)),
        ("cast(d as date)", {"d": "1990-02-03T00:00:00"}, datetime(1990, 2, 3).date()),
        ("substr(a, 2, 3)", {"a": "abcdef"}, "bcd"),
        ("case a when 1 then 'one' else 'many' end", {"a": 1}, "one"),
        ("not (a = 1)", {"a": 2}, True),
        ("a is not null and b > 2", {"a": 0, "b": 3}, True),
    ],
)
def test_expressions(tmp_path, expression, record, expected):
    text = BASE.replace("channel: \"'online'\"", f'channel: "{expression}"')
    mapping, _ = compile_text(tmp_path, text)
    assert mapping.apply({**RECORD, **record})["channel"] == expected


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        (
            "store('online')",
            "stor('online')",
            "m.yaml:7:15: store_code: unknown function stor(); did you mean 'store'?",
        ),
        (
            "  member_source_id:",
            "  member_sorce_id:",
            "m.yaml:6:3: unknown canonical field 'member_sorce_id'; did you mean 'member_source_id'?",
        ),
        ("cast(total_price as decimal)", "cast(total_price as decimal))", "m.yaml:10:45: total.amount: cannot parse"),
        ("target: order", "target: ordr", "m.yaml:3:9: unknown target 'ordr'; did you mean 'order'?"),
        ("fields:\n  source_id", "feilds:\n  source_id", "m.yaml:4:1: unknown key 'feilds'; did you mean 'fields'?"),
        (
            "    sku: upper(sku)",
            "    skew: upper(sku)",
            "m.yaml:16:5: unknown canonical field 'skew'; did you mean 'sku'?",
        ),
        ("upper(sku)", "x ~~ y", "unsupported expression"),
    ],
)
def test_broken_mappings_fail_with_file_line_column(tmp_path, replace, by, message):
    assert replace in BASE
    with pytest.raises(MappingError) as caught:
        compile_text(tmp_path, BASE.replace(replace, by, 1))
    assert message in str(caught.value)


def test_runtime_failure_names_the_field(tmp_path):
    mapping, _ = compile_text(tmp_path, BASE)
    with pytest.raises(MappingError, match=r"^total\.amount: cannot cast 'abc' to decimal"):
        mapping.apply({**RECORD, "total_price": "abc"})


def test_unknown_store_code_is_a_mapping_failure(tmp_path):
    mapping, _ = compile_text(tmp_path, BASE.replace("store('online')", "store(channel_code)"))
    with pytest.raises(MappingError, match=r"store code 'mars' of shopify is not in mappings/stores\.yaml"):
        mapping.apply({**RECORD, "channel_code": "mars"})


def test_missing_amount_means_no_money_value(tmp_path):
    text = BASE.replace(
        "  ordered_at: created_at",
        "  ordered_at: created_at\n  refunded.amount: cast(refund as decimal)\n  refunded.currency: currency",
    )
    mapping, _ = compile_text(tmp_path, text)
    assert mapping.apply(RECORD)["refunded"] is None
    assert mapping.apply({**RECORD, "refund": "1.5"})["refunded"] == {"amount": Decimal("1.5"), "currency": "CNY"}
