"""The resolver without a database: comparison levels, pinyin, EM, term frequencies, clustering,
constraints, survivorship, settings errors, and ``memberhub match`` end to end."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from hub.resolution import Model, Resolver, accuracy, load_settings, parse_settings
from hub.resolution.cluster import cluster_component
from hub.resolution.model import expectation_maximisation
from hub.resolution.settings import FieldRule
from hub.resolution.survivorship import Candidate, choose
from hub.resolution.text import initials, pinyin
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def explain(a: dict, b: dict) -> dict[str, str]:
    resolver = Resolver()
    resolver.add(["a", "b"], [a, b])
    return {c["field"]: c["level"] for c in resolver.explain("a", "b")["comparisons"]}


@pytest.mark.parametrize(
    ("field", "left", "right", "level"),
    [
        ("family_name", "王", "王", "same"),
        ("family_name", "王", "汪", "same pinyin"),
        ("family_name", "陳", "陈", "same"),  # traditional folded to simplified first
        ("family_name", "smith", "smiths", "very similar"),
        ("family_name", "smith", "smyth", "similar"),
        ("family_name", "smith", "garcia", "different"),
        ("given_name", "伟", "玮", "same pinyin"),  # a pinyin-keyboard homophone
        ("given_name", "Katherine", "Kathryn", "similar"),
        ("given_name", "Ｍａｒｙ", "mary", "same"),  # full-width and case folded
        ("birthday", "1990-05-01", "19900501", "same"),
        ("birthday", "1990-05-01", "1990-05-07", "one digit off"),
        ("birthday", "1990-01-05", "1990-05-01", "month and day swapped"),
        ("birthday", "1990-05-01", "1990-11-20", "within a year"),
        ("birthday", "1990-05-01", "1975-12-30", "different"),
        ("phone", "+8613812345678", "138 1234 5678", "same"),
        ("phone", "+8613812345678", "+8613812345679", "one digit off"),
        ("phone", "+8613812345678", "+8613900001111", "different"),
        ("email", "Fang@X.com", "fang@x.com", "same"),
        ("email", "fang@qq.com", "fang@163.com", "same mailbox name"),
        ("email", "fang@qq.com", "zhou@163.com", "different"),
    ],
)
def test_comparison_levels(field, left, right, level):
    assert explain({field: left}, {field: right})[field] == level


def test_swapped_names_and_missing_values():
    levels = explain({"family_name": "王", "given_name": "芳"}, {"family_name": "芳", "given_name": "王", "phone": "1"})
    assert levels["family_name"] == "swapped with given name"
    assert "phone" not in levels  # missing on one side: neither for nor against


@pytest.mark.parametrize(
    ("text", "surname", "expected"),
    [
        ("王芳", False, "wangfang"),
        ("曾国藩", True, "zengguofan"),
        ("单田芳", True, "shantianfang"),
        ("欧阳娜娜", True, "ouyangnana"),
        ("Zoë", False, "zoe"),
    ],
)
def test_pinyin_reads_surnames_as_surnames(text, surname, expected):
    assert pinyin(text, surname=surname) == expected


def test_initials():
    assert (initials("王小明"), initials("mary jane")) == ("wxm", "mj")


def test_em_recovers_m_and_u_without_labels():
    rng = np.random.default_rng(3)
    true_m = [np.array([1, 0.9, 0.07, 0.03]), np.array([1, 0.85, 0.15]), np.array([1, 0.8, 0.1, 0.1])]
    true_u = [np.array([1, 0.02, 0.08, 0.9]), np.array([1, 0.1, 0.9]), np.array([1, 0.01, 0.04, 0.95])]
    n, prior = 40_000, 0.2
    match = rng.random(n) < prior
    levels = np.zeros((n, 3), dtype=np.int8)
    for j in range(3):
        for is_match, table in ((True, true_m[j]), (False, true_u[j])):
            p = table[1:] / table[1:].sum()
            rows = match == is_match
            levels[rows, j] = rng.choice(np.arange(1, len(p) + 1), size=rows.sum(), p=p)
    start = Model(
        ("a", "b", "c"),
        [np.array([1, 0.6, 0.2, 0.2]), np.array([1, 0.6, 0.4]), np.array([1, 0.5, 0.25, 0.25])],
        [np.array([1, 0.2, 0.2, 0.6]), np.array([1, 0.3, 0.7]), np.array([1, 0.2, 0.2, 0.6])],
        0.5,
    )
    expectation_maximisation(start, levels, max_iterations=200)
    assert abs(start.prior - prior) < 0.01
    for j in range(3):
        assert np.allclose(start.m[j][1:], true_m[j][1:], atol=0.02)
        assert np.allclose(start.u[j][1:], true_u[j][1:], atol=0.02)


def test_steward_labels_pin_the_posterior_in_em():
    levels = np.array([[1, 1]] * 50 + [[2, 2]] * 50, dtype=np.int8)
    model = Model(("a", "b"), [np.array([1, 0.5, 0.5])] * 2, [np.array([1, 0.5, 0.5])] * 2, 0.5)
    labels = np.array([1] * 50 + [0] * 50, dtype=np.int8)
    expectation_maximisation(model, levels, labels=labels)
    assert model.labelled_pairs == 100 and model.m[0][1] > 0.99 and model.u[0][2] > 0.99


def test_term_frequency_makes_common_values_count_for_less():
    records, keys = [], []
    for i in range(60):  # 60 people named 王 (with different given names), 2 named 欧阳
        keys.append(f"w{i}")
        records.append({"family_name": "王", "given_name": f"名{i}", "birthday": f"19{50 + i % 40}0101"})
    keys += ["o1", "o2"]
    records += [{"family_name": "欧阳", "given_name": "名1", "birthday": "19510101"}] * 2
    resolver = Resolver()
    resolver.add(keys, records, train=True)
    common = next(c for c in resolver.explain("w1", "w41")["comparisons"] if c["field"] == "family_name")
    rare = next(c for c in resolver.explain("o1", "o2")["comparisons"] if c["field"] == "family_name")
    assert common["tf_adjustment"] < rare["tf_adjustment"]
    assert common["holders"] == 60


def test_a_shared_store_phone_links_nobody():
    names = [
        "张伟",
        "李娜",
        "王芳",
        "刘洋",
        "陈静",
        "赵磊",
        "周敏",
        "孙丽",
        "马超",
        "朱琳",
        "胡军",
        "郭静",
        "何勇",
        "高欣",
        "林涛",
        "罗平",
    ]
    records = [{"family_name": n[0], "given_name": n[1], "phone": "+8602188886666"} for n in names]
    resolver = Resolver()
    resolver.add(list(range(len(records))), records)
    assert len(resolver.partition()) == len(names)
    assert resolver.explain(0, 1)["rule"] == "score"  # held by 6 records: no deterministic phone rule


def test_no_chaining_through_one_bad_link():
    weights = {(1, 2): 20.0, (3, 4): 20.0, (2, 3): 15.0, (1, 3): -40.0, (1, 4): -40.0, (2, 4): -40.0}

    def score(a, b):
        return np.array([weights[(int(x), int(y))] for x, y in zip(a, b, strict=True)])

    edges = [(w, a, b) for (a, b), w in weights.items() if w >= 10]
    common = {"order_key": lambda p: p, "weights": score, "must": {}, "cannot": {}}
    assert sorted(cluster_component([1, 2, 3, 4], edges, conflict=-30, **common)) == [[1, 2], [3, 4]]
    assert sorted(cluster_component([1, 2, 3, 4], edges, conflict=-50, **common)) == [[1, 2, 3, 4]]


def test_shared_family_phone_does_not_merge_husband_and_wife():
    records = [
        {"family_name": "张", "given_name": "伟", "phone": "+8613800000001", "birthday": "19800101", "gender": "male"},
        {"family_name": "张", "given_name": "伟", "email": "zw@qq.com", "birthday": "19800101", "gender": "male"},
        {
            "family_name": "李",
            "given_name": "娜",
            "phone": "+8613800000001",
            "birthday": "19820303",
            "gender": "female",
        },
        {"family_name": "李", "given_name": "娜", "email": "ln@qq.com", "birthday": "19820303", "gender": "female"},
    ]
    resolver = Resolver()
    resolver.add([1, 2, 3, 4], records)
    assert resolver.partition() == {frozenset({1, 2}), frozenset({3, 4})}


def test_must_and_cannot_links_are_always_honoured():
    same = {"family_name": "王", "given_name": "芳", "email": "wf@qq.com", "birthday": "19900501"}
    other = {"family_name": "李", "given_name": "强", "phone": "+8613911112222", "birthday": "19700101"}
    resolver = Resolver()
    resolver.add([1, 2, 3], [same, same, other])
    assert resolver.partition() == {frozenset({1, 2}), frozenset({3})}
    resolver.constrain(1, 2, same=False)
    resolver.constrain(2, 3, same=True)
    assert resolver.partition() == {frozenset({1}), frozenset({2, 3})}
    resolver.add([4], [same])  # new evidence for 1-2 and 2-4 changes nothing a steward decided
    groups = resolver.partition()
    assert not any({1, 2} <= g for g in groups) and any({2, 3} <= g for g in groups)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (FieldRule("most_recent"), "new"),
        (FieldRule("oldest"), "old"),
        (FieldRule("most_frequent", then="most_recent"), "old"),
        (FieldRule("most_complete"), "the longest value"),
        (FieldRule("source_priority", sources=("odoo", "pos"), then="most_recent"), "from odoo"),
    ],
)
def test_survivorship_rules(rule, expected):
    t = [datetime(2025, 1, d, tzinfo=UTC) for d in (1, 2, 3, 4)]
    cands = [
        Candidate(1, "pos", "1", "old", t[0], t[0]),
        Candidate(2, "web", "2", "old", t[1], t[1]),
        Candidate(3, "odoo", "3", "from odoo", t[1], t[1]),
        Candidate(4, "crm", "4", "the longest value", t[2], t[2]),
        Candidate(5, "pos", "5", "new", t[3], t[3]),
        Candidate(6, "pos", "6", None, t[3], t[3]),
    ]
    winner, _ = choose(cands, rule)
    assert winner.value == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"survivorship": {"fields": {"phone": {"rule": "most_recnt"}}}}, "did you mean 'most_recent'"),
        ({"comparisons": [{"field": "phone", "levels": [{"kind": "exactt"}]}]}, "did you mean 'exact'"),
        ({"blocking": {"rules": [{"keys": ["phone.pinyn"]}]}}, "did you mean 'pinyin'"),
        ({"comparisons": [{"field": "phone", "levels": [{"kind": "exact"}]}]}, "must end with an `else` level"),
        ({"thresholds": {"merge": 0.4, "review": 0.5}}, "thresholds must satisfy"),
    ],
)
def test_settings_errors_name_the_closest_valid_choice(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw)


def test_settings_file_errors_give_the_line(tmp_path):
    text = (ROOT / "hub/resolution/settings.yaml").read_text().replace("kind: jaro_winkler,", "kind: jaro_winkle,", 1)
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    with pytest.raises(
        ConfigError,
        match=r"settings.yaml, line \d+: unknown level kind 'jaro_winkle' \(did you mean 'jaro_winkler'\?\)",
    ):
        load_settings(path)


def test_accuracy_metrics():
    acc = accuracy({1: "a", 2: "a", 3: "b", 4: "c"}, {1: "x", 2: "x", 3: "x", 4: "y"})
    assert (acc.precision, round(acc.recall, 3), acc.true_pairs) == (1.0, 0.333, 3)


def test_memberhub_match_end_to_end(tmp_path):
    rows = [
        ("r1", "芳", "王", "1990-05-01", "138 1234 5678", ""),
        ("r2", "芳", "王", "1990-05-01", "", "fang@x.com"),
        ("r3", "芳", "汪", "1990-05-01", "+86 138-1234-5678", "fang@x.com"),
        ("r4", "伟", "李", "1985-01-02", "139 0000 1111", ""),
        ("r5", "Mary", "Smith", "1970-02-03", "", "mary@x.com"),
        ("r6", "Marry", "Smith", "1970-02-03", "", "MARY@x.com"),
    ]
    source = tmp_path / "members.csv"
    with source.open("w", newline="") as f:
        csv.writer(f).writerows([("rec_id", "first", "last", "dob", "mobile", "mail"), *rows])
    out, pairs = tmp_path / "clusters.csv", tmp_path / "pairs.csv"
    columns = "id=rec_id,given_name=first,family_name=last,birthday=dob,phone=mobile,email=mail"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "match",
            str(source),
            "--columns",
            columns,
            "--out",
            str(out),
            "--pairs",
            str(pairs),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "6 records into 3 members" in done.stdout
    with out.open() as f:
        clusters = {r["record_id"]: r["cluster_id"] for r in csv.DictReader(f)}
    assert clusters["r1"] == clusters["r2"] == clusters["r3"] != clusters["r4"]
    assert clusters["r5"] == clusters["r6"]
    with pairs.open() as f:
        scored = list(csv.DictReader(f))
    assert {"record_id_a", "match_weight", "match_probability", "decision", "rule", "evidence"} <= set(scored[0])
    assert any("email: same" in r["evidence"] for r in scored)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "match",
            str(source),
            "--columns",
            "id=rec_id,givn_name=first",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 1 and "did you mean 'given_name'" in bad.stderr
