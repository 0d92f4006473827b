"""Mapping validation: a table of broken mappings, each with the exact message a person would read,
and the shipped mappings, which must all validate."""

import pytest

from mappings import load_mapping, load_mappings, mapping_files
from mappings.engine import MappingFileError, check_mapping
from schemas.errors import MappingError

BASE = """\
source: shopify
stream: customers
target: member
fields:
  source_id: id
  channel: "'online'"
  phone: coalesce(mobile, phone)
  email: lower(trim(email))
  full_name: trim(last_name || first_name)
  birthday: cast(birth_date as date)
  store_code: store('online')
"""
DISCOVERED = {
    path: {"string"} for path in ("id", "mobile", "phone", "email", "last_name", "first_name", "birth_date", "a", "b")
} | {"customer": {"object"}, "customer.id": {"number"}}

BROKEN = [
    # unknown functions, with the closest valid name or what to write instead
    ("lower(trim(email))", "lowr(trim(email))", "8:10: email: unknown function lowr(); did you mean 'lower'?"),
    ("lower(trim(email))", "concat(email, 'x')", "8:10: email: unknown function concat(); write a || b"),
    ("lower(trim(email))", "m2o_id(email, 1)", "8:10: email: m2o_id() takes 1 argument, got 2"),
    ("store('online')", "stor('online')", "11:15: store_code: unknown function stor(); did you mean 'store'?"),
    # syntax
    (
        "trim(last_name || first_name)",
        "trim(last_name || first_name",
        "9:18: full_name: cannot parse 'trim(last_name || first_name': '(' is never closed",
    ),
    (
        "lower(trim(email))",
        "lower(email, 1)",
        "8:24: email: cannot parse 'lower(email, 1)': The number of provided arguments (2) is greater than the "
        "maximum number of supported arguments (1)",
    ),
    (
        "lower(trim(email))",
        "email address",
        "8:16: email: unexpected 'address' after 'email': a missing operator or comma?",
    ),
    ("lower(trim(email))", '""', "8:10: email: empty expression; write NULL for no value"),
    # types
    (
        "lower(trim(email))",
        "email = 'x'",
        "8:10: email: type mismatch: the expression gives boolean, email takes text",
    ),
    (
        "trim(last_name || first_name)",
        "\"'abc' + 1\"",
        "9:15: full_name: type mismatch: arithmetic (+) takes number, but 'abc' is text",
    ),
    (
        "cast(birth_date as date)",
        "cast(a = b as date)",
        "10:13: birthday: type mismatch: cannot cast a = b (boolean) to date",
    ),
    (
        "cast(birth_date as date)",
        "cast(birth_date as json)",
        "10:13: birthday: unsupported cast to json; valid: bigint, boolean, date, decimal, double, int, text, "
        "timestamp, varchar",
    ),
    (
        "trim(last_name || first_name)",
        "case when a then 'x' else 1 end",
        "9:40: full_name: type mismatch: CASE mixes text and number",
    ),
    (
        "trim(last_name || first_name)",
        "trim(a) and b",
        "9:14: full_name: type mismatch: AND takes boolean, but TRIM(a) is text",
    ),
    (
        "trim(last_name || first_name)",
        "case when 'a' = 1 then 'x' end",
        "9:24: full_name: type mismatch: 'a' = 1 compares text with number",
    ),
    (
        "lower(trim(email))",
        "lower(customer)",
        "8:16: email: type mismatch: argument 1 of lower() takes boolean or date or number or text or timestamp, "
        "but customer is object",
    ),
    # canonical fields, values and keys
    ("  email:", "  emial:", "8:3: unknown canonical field 'emial'; did you mean 'email'?"),
    ("\"'online'\"", "\"'onlin'\"", "6:13: channel: unknown channel 'onlin'; did you mean 'online'?"),
    (
        "store('online')",
        "store('onlin')",
        "11:21: store_code: store code 'onlin' of shopify is not in mappings/stores.yaml; did you mean 'online'?",
    ),
    ("target: member", "target: membr", "3:9: unknown target 'membr'; did you mean 'member'?"),
    ("stream: customers\n", "", "1:1: missing required key 'stream'"),
    (
        "fields:",
        "feilds:",
        ("4:1: unknown key 'feilds'; did you mean 'fields'?", "1:1: missing required key 'fields'"),
    ),
    ("  store_code: store('online')", "  store_code: store('online')\n  phone: mobile", "12:3: phone: mapped twice"),
    (
        "  store_code: store('online')",
        "  store_code: store('online')\nrequired: [phon]",
        "12:12: required: unknown canonical field 'phon'; did you mean 'phone'?",
    ),
    # source fields, checked against what discovery saw in the stream
    (
        "coalesce(mobile, phone)",
        "coalesce(mobil, phone)",
        "7:19: phone: unknown source field 'mobil' (not seen in shop.customers); did you mean 'mobile'?",
    ),
    (
        "trim(last_name || first_name)",
        ">-\n    trim(last_name ||\n         frist_name)",
        "11:10: full_name: unknown source field 'frist_name' (not seen in shop.customers); did you mean 'first_name'?",
    ),
    (
        "trim(last_name || first_name)",
        "'trim(''x'' || frist_name)'",
        "9:29: full_name: unknown source field 'frist_name' (not seen in shop.customers); did you mean 'first_name'?",
    ),
    (
        "  source_id: id",
        "  source_id: customer.idd",
        "5:14: source_id: unknown source field 'customer.idd' (not seen in shop.customers); did you mean "
        "'customer.id'?",
    ),
]


@pytest.mark.parametrize(("replace", "by", "message"), BROKEN, ids=[str(b[2]).split(": ", 1)[1][:50] for b in BROKEN])
def test_broken_mappings_give_exact_messages(tmp_path, replace, by, message):
    messages = [message] if isinstance(message, str) else list(message)
    assert replace in BASE
    path = tmp_path / "m.yaml"
    path.write_text(BASE.replace(replace, by, 1))
    mapping, problems = check_mapping(path, fields=DISCOVERED, fields_label="shop.customers")
    assert mapping is None
    assert [str(p) for p in problems] == [f"{path}:{m}" for m in messages]
    with pytest.raises(MappingError) as caught:
        load_mapping(path, fields=DISCOVERED)
    assert str(caught.value).startswith(f"{path}:")


def test_every_problem_in_a_file_is_reported_not_just_the_first(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE.replace("lower(trim(email))", "lowr(email)").replace("  birthday:", "  bday:"))
    with pytest.raises(MappingFileError) as caught:
        load_mapping(path)
    assert [p.message for p in caught.value.problems] == [
        "email: unknown function lowr(); did you mean 'lower'?",
        "unknown canonical field 'bday'; did you mean 'birthday'?",
    ]
    assert str(caught.value).count("\n") == 1


def test_without_discovery_source_fields_are_not_checked(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE.replace("coalesce(mobile, phone)", "coalesce(mobil, phone)"))
    mapping = load_mapping(path)
    assert {"mobil", "phone", "email", "last_name", "first_name", "birth_date", "id"} == mapping.source_fields


def test_lines_are_checked_against_the_items_of_the_list(tmp_path):
    text = """\
source: shopify
stream: orders
target: order
fields:
  source_id: id
  store_code: store('online')
  channel: "'online'"
  status: "'paid'"
  total.amount: cast(total as decimal)
  total.currency: "'CNY'"
  ordered_at: created_at
lines:
  from: line_items
  fields:
    sku: skuu
    quantity: cast(qty as int)
    unit_price.amount: price
    unit_price.currency: "'yuan'"
"""
    path = tmp_path / "orders.yaml"
    path.write_text(text)
    discovered = {p: {"string"} for p in ("id", "total", "created_at", "line_items[].sku", "line_items[].qty")}
    discovered["line_items"] = {"array"}
    discovered["line_items[].price"] = {"string"}
    _, problems = check_mapping(path, fields=discovered, fields_label="shop.orders")
    assert [str(p).split(":", 1)[1] for p in problems] == [
        "15:10: sku: unknown source field 'skuu' (not seen in shop.orders); did you mean 'sku'?",
        "18:27: unit_price.currency: 'yuan' is not an ISO 4217 code such as 'CNY'",
    ]


def test_every_shipped_mapping_validates():
    files = mapping_files()
    for path in files:
        mapping, problems = check_mapping(path)
        assert problems == [], "\n".join(map(str, problems))
        assert mapping.fingerprint and mapping.source == path.parent.name
    assert len(load_mappings()) == len(files)


def test_two_files_for_one_stream_are_an_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "shopify").mkdir(exist_ok=True)
        (tmp_path / "shopify" / f"{name}.yaml").write_text(BASE)
    with pytest.raises(MappingError, match=r"shopify\.customers is already mapped by .*a\.yaml"):
        load_mappings(tmp_path)


def test_explain_shows_source_values_beside_canonical_ones(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE)
    mapping = load_mapping(path)
    rows = {r["target"]: r for r in mapping.explain({"id": 7, "mobile": "", "phone": "138", "birth_date": "x"})}
    assert rows["phone"]["source"] == {"mobile": "", "phone": "138"} and rows["phone"]["value"] == "138"
    assert rows["birthday"]["error"] == "cannot cast 'x' to date"
    assert rows["channel"]["source"] == {} and rows["channel"]["value"] == "online"
    assert mapping.reads("mobile") == ["phone"] and mapping.reads("nothing") == []


@pytest.mark.parametrize(
    ("expression", "record", "expected"),
    [
        ("a between 1 and 3", {"a": 2}, True),
        ("a between 1 and 3", {"a": "5"}, False),
        ("if(a = 1, 'one', 'other')", {"a": 1}, "one"),
        ("a % 3", {"a": 10}, 1),
        ("a > 2", {"a": "3"}, True),
        ("a = 1", {"a": "x"}, False),
        ("cast(a as boolean)", {"a": "yes"}, True),
        ("replace(a, '-', '')", {"a": "138-1234"}, "1381234"),
        ("length(a)", {"a": "张伟"}, 2),
    ],
)
def test_more_expressions(tmp_path, expression, record, expected):
    # channel takes any kind of expression (its value is checked by the canonical model at staging)
    path = tmp_path / "m.yaml"
    path.write_text(BASE.replace("channel: \"'online'\"", f'channel: "{expression}"'))
    assert load_mapping(path).apply(record)["channel"] == expected


def test_required_fields_are_part_of_the_mapping(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE + "required: [phone, email]\n")
    assert load_mapping(path).required == ("phone", "email")
