"""RFM quintiles as properties (hypothesis): the cut points PostgreSQL takes with ``percentile_disc``
and the ranked window SQLite uses give every value the score 1 + floor(5 × below / n), per group and
chain-wide, with equal values sharing a score."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from test_segments_world import quintiles

from hub.analytics.metrics import cut_points, scores

PROPERTY = settings(
    max_examples=int(os.environ.get("MEMBERHUB_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
MEASURES = {"f": "v", "m": "w"}
rows = st.lists(
    st.tuples(
        st.sampled_from(["SH01", "BJ01", "ONLINE"]),
        st.integers(0, 6),  # few distinct values: ties are the rule, as with order counts
        st.decimals(min_value=0, max_value=50, places=2),
    ),
    min_size=1,
    max_size=60,
)


def expected(facts: dict[tuple[str, str], tuple[int, Decimal]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Both scores of each row among ``facts``, computed directly."""
    v = quintiles({key: value for key, (value, _) in facts.items()})
    w = quintiles({key: value for key, (_, value) in facts.items()})
    return {key: (v[key], w[key]) for key in facts}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE facts (grp VARCHAR(8), member VARCHAR(8), v INTEGER, w NUMERIC(10, 2))"))
    yield engine
    engine.dispose()


def _scores(connection, *, group: str | None, percentile: bool) -> dict[tuple[str, str], tuple[int, int]]:
    cuts = cut_points("facts", MEASURES, group=group, percentile=percentile)
    join = f"JOIN ({cuts}) AS c ON c.{group} = f.{group}" if group else f"CROSS JOIN ({cuts}) AS c"
    query = f"SELECT f.grp, f.member, {', '.join(scores(MEASURES).values())} FROM facts AS f {join}"
    return {(g, m): (int(f), int(w)) for g, m, f, w in connection.execute(text(query))}


@PROPERTY
@given(data=rows)
def test_quintile_scores_are_the_share_of_lower_values_with_ties_shared(engine, data):
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM facts"))
        connection.execute(
            text("INSERT INTO facts VALUES (:g, :m, :v, :w)"),
            [{"g": g, "m": f"M{i}", "v": v, "w": w if postgres else float(w)} for i, (g, v, w) in enumerate(data)],
        )
        facts = {(g, f"M{i}"): (v, w) for i, (g, v, w) in enumerate(data)}
        for percentile in [False, True] if postgres else [False]:
            by_group = _scores(connection, group="grp", percentile=percentile)
            for grp in {g for g, _ in facts}:
                in_group = {key: value for key, value in facts.items() if key[0] == grp}
                assert {key: by_group[key] for key in in_group} == expected(in_group), percentile
            assert _scores(connection, group=None, percentile=percentile) == expected(facts), percentile
