"""Load the till lookup (``GET /api/v1/members/lookup?phone=...``) and print throughput and latency.

    .venv/bin/python benchmarks/lookup.py                          # 100,000 members on PostgreSQL, 20 s
    .venv/bin/python benchmarks/lookup.py --members 20000 --seconds 10 --workers 2 --connections 16

Setup (not timed): a schema of its own on PostgreSQL (dropped afterwards unless --keep), migrated,
then 100,000 members written with bulk inserts — a source record, a staged member with a sealed
phone and e-mail and their blind indexes, a golden member, its link, two ledger entries and a tier
— and an API token of a till's clerk account (``--role clerk``, the default: limited to its stores,
here all of them) or of an admin (``--role admin``). Then ``memberhub serve --workers N`` (uvicorn)
serves the hub, and ``wrk`` (Debian's package; ``apt-get install wrk``), a separate process, sends
lookups for random members' phones over keep-alive connections: a few seconds to warm up (every
worker connected, its statement prepared), then ``--seconds`` measured. Printed: requests/s,
latency percentiles from wrk, non-2xx answers, the query plan of the phone lookup (index scans only:
the blind index, then the member's ledger, tier and stores), the CPU time per request of the web
workers, of their PostgreSQL server processes and of wrk, and the load average. Targets (the
issue's): at least 1,000 requests/s at p99 ≤ 50 ms.

Not part of the test run: machines are shared and noisy, so figures belong in notes, not asserts.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, text

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WARM_UP_SECONDS = 3
APPLICATION = "memberhub-lookup-benchmark"
"""the application name the served hub's connections carry, to find their server processes"""
STORES = ["SH01", "SH02", "BJ01", "BJ02", "GZ01", "ONLINE"]
KEYS = {  # benchmark data is made up: fixed keys keep a kept schema readable on the next run
    "MEMBERHUB_ENCRYPTION_KEYS": "1:" + base64.b64encode(bytes(range(100, 132))).decode(),
    "MEMBERHUB_HASH_KEY": "lookup-benchmark-blind-index-secret",
}
LUA = """
math.randomseed(os.time())
request = function()
  local i = math.random(0, %(members)d - 1)
  return wrk.format("GET", string.format("/api/v1/members/lookup?phone=139%%08d", i))
end
"""


def phone(i: int) -> str:
    return f"+86139{i:08d}"


def seed(url: str, members: int, role: str) -> str:
    """Write ``members`` resolved members; return an API token of the ``role`` asking."""
    from hub.db import engine_for, upgrade
    from hub.privacy import blind_index
    from hub.tables import (
        GoldenMember,
        LedgerEntryRow,
        MemberLink,
        SourceRecordRow,
        StagedMember,
        TierAssignmentRow,
    )

    upgrade(url)
    engine = engine_for(url)
    rng = random.Random(8)
    now = datetime.now(UTC)
    batch = 5000
    with engine.begin() as conn:
        for start in range(0, members, batch):
            ids = range(start, min(start + batch, members))
            conn.execute(
                insert(SourceRecordRow),
                [
                    {
                        "id": i + 1,
                        "source": "pos",
                        "stream": "members",
                        "external_id": f"m{i}",
                        "payload": {},
                        "content_hash": f"{i:064d}",
                        "first_seen_at": now,
                        "last_seen_at": now,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(StagedMember),
                [
                    {
                        "id": i + 1,
                        "source_record_id": i + 1,
                        "source": "pos",
                        "source_id": f"m{i}",
                        "channel": "pos",
                        "full_name": f"会员{i}",
                        "phone": phone(i),
                        "email": f"m{i}@example.cn",
                        "phone_bidx": blind_index("phone", phone(i)),
                        "email_bidx": blind_index("email", f"m{i}@example.cn"),
                        "store_code": STORES[i % len(STORES)],
                        "staged_at": now,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(GoldenMember),
                [
                    {
                        "seq": i + 1,
                        "member_id": f"MH{i + 1:08d}",
                        "status": "active",
                        "full_name": f"会员{i}",
                        "phone": phone(i),
                        "email": f"m{i}@example.cn",
                        "lineage": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(MemberLink),
                [
                    {
                        "staged_member_id": i + 1,
                        "member_id": f"MH{i + 1:08d}",
                        "rule": "bench",
                        "evidence": {},
                        "linked_at": now,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(LedgerEntryRow),
                [
                    {
                        "member_id": f"MH{i + 1:08d}",
                        "kind": "earn",
                        "points": rng.randint(1, 5000),
                        "store_code": STORES[i % len(STORES)],
                        "source": "pos",
                        "document": f"o{i}-{n}",
                        "payload_hash": "0" * 64,
                        "actor": "system",
                        "occurred_at": now,
                        "recorded_at": now,
                        "pending_points": 0,
                    }
                    for i in ids
                    for n in range(2)
                ],
            )
            conn.execute(
                insert(TierAssignmentRow),
                [
                    {
                        "member_id": f"MH{i + 1:08d}",
                        "tier": rng.choice(["regular", "silver", "gold"]),
                        "qualifying_amount": Decimal(rng.randint(0, 20000)),
                        "reason": "evaluation",
                        "assigned_at": now,
                        "actor": "system",
                    }
                    for i in ids
                ],
            )
    with engine.begin() as conn:
        for table in ("staged_members", "golden_members", "member_links", "ledger_entries", "tier_assignments"):
            conn.execute(text(f"ANALYZE {table}"))
    return token_for(url, role)


ASKING = {"admin": ("bench", []), "clerk": ("till", STORES)}
"""who looks members up: an admin sees every member; a till's clerk account is limited to its stores
(here every store, so every lookup finds its member, through the store-scoped statement)"""


def token_for(url: str, role: str) -> str:
    """A fresh API token of the benchmark's admin or till clerk (added on first use)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hub import accounts
    from hub.db import engine_for
    from hub.tables import Account

    name, stores = ASKING[role]
    with Session(engine_for(url)) as session, session.begin():
        if session.scalar(select(Account).where(Account.name == name)) is None:
            accounts.add_user(session, name, role, stores=stores)
        return accounts.issue_token(session, name)


def plan(url: str, role: str) -> str:
    """PostgreSQL's plan for the statement the served lookup runs (hub.search.lookup_query)."""
    from hub import search
    from hub.privacy import blind_index

    stores = ASKING[role][1]
    engine = create_engine(url)
    compiled = search.lookup_query("phone", len(stores)).compile(dialect=engine.dialect)
    params = {**compiled.params, "contact_key": blind_index("phone", phone(42))}
    params.update((f"store_{i}", code) for i, code in enumerate(stores))
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("EXPLAIN " + compiled.string, params)
        return "\n".join(row[0] for row in cursor.fetchall())
    finally:
        connection.close()
        engine.dispose()


def serve(url: str, workers: int, port: int, home: Path) -> subprocess.Popen:
    env = {**os.environ, **KEYS, "MEMBERHUB_HOME": str(home)}
    config = home / "bench.yaml"
    config.write_text(f"database_url: '{url}&application_name={APPLICATION}'\n", encoding="utf-8")
    memberhub = str(Path(sys.executable).parent / "memberhub")
    process = subprocess.Popen(
        [memberhub, "--config", str(config), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180  # each worker imports the whole hub: slow on a busy machine
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"memberhub serve exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise SystemExit(f"memberhub serve did not answer within 180 s: {process.communicate()[1]}")


def cpu_seconds(root: int, *, children: bool = True) -> float:
    """User + system CPU of a process and (``children``) its descendants (the uvicorn workers), from /proc."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    pids = [root]
    while pids:
        pid = pids.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
        if children:
            pids.extend(int(c) for c in kids)
    return total


def backend_pids(url: str) -> list[int]:
    """The PostgreSQL server processes serving the benchmark's web workers (by application name)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": APPLICATION}
        ).scalars()
        found = list(pids)
    engine.dispose()
    return found


def backend_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid, children=False) for pid in pids)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def load(port: int, token: str, members: int, seconds: int, connections: int, threads: int) -> dict[str, float]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"members": members})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script.name,
            "-H",
            f"Authorization: Bearer {token}",
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.unlink(script.name)
    out = result.stdout
    figures = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "75", "90", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M).groups()
        figures[f"p{pct}_ms"] = _ms(value, unit)
    figures["requests"] = float(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    figures["socket_errors"] = socket_errors.group(1) if socket_errors else "none"  # type: ignore[assignment]
    figures["wrk_cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--database-url", default=POSTGRES)
    parser.add_argument("--role", choices=sorted(ASKING), default="clerk", help="who asks (a till is a clerk)")
    parser.add_argument("--keep", action="store_true", help="keep the schema (and print its name)")
    parser.add_argument("--schema", help="reuse a schema kept by an earlier --keep run (kept again)")
    args = parser.parse_args()

    os.environ.update(KEYS)
    schema = args.schema or f"bench_lookup_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
    if not args.schema:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{args.database_url}?options=-csearch_path%3D{schema}"
    home = Path(tempfile.mkdtemp(prefix="memberhub-bench-"))
    server = None
    try:
        started = time.perf_counter()
        if args.schema:
            from hub.db import upgrade

            upgrade(url)  # a schema kept by an older version
            token = token_for(url, args.role)
            args.members = int(create_engine(url).connect().scalar(text("SELECT count(*) FROM golden_members")))
            print(f"reusing {args.members:,} members in schema {schema}")
        else:
            token = seed(url, args.members, args.role)
            print(f"seeded {args.members:,} members on PostgreSQL in {time.perf_counter() - started:.1f} s")
        print("phone lookup plan:\n  " + plan(url, args.role).replace("\n", "\n  "))
        server = serve(url, args.workers, args.port, home)
        sample = httpx.get(
            f"http://127.0.0.1:{args.port}/api/v1/members/lookup",
            params={"phone": "13900000042"},
            headers={"Authorization": f"Bearer {token}"},
        )
        print(f"sample answer ({sample.status_code}): {sample.text}")
        # warm-up, not counted: every worker started, connected and its statement prepared
        load(args.port, token, args.members, WARM_UP_SECONDS, args.connections, args.threads)
        backends = backend_pids(url)
        cpu_before, db_before = cpu_seconds(server.pid), backend_cpu(backends)
        figures = load(args.port, token, args.members, args.seconds, args.connections, args.threads)
        per_request = 1000 / max(figures["requests"], 1)
        server_cpu_ms = (cpu_seconds(server.pid) - cpu_before) * per_request
        db_cpu_ms = (backend_cpu(backends) - db_before) * per_request
        wrk_cpu_ms = figures["wrk_cpu_s"] * per_request
        print(
            f"lookup by phone as {args.role}, {args.workers} uvicorn workers, wrk {args.threads} threads × "
            f"{args.connections} connections, {args.seconds} s: {figures['requests']:.0f} requests"
        )
        print(
            f"  {figures['requests_per_s']:.0f} requests/s; latency p50 {figures['p50_ms']:.1f} ms, "
            f"p90 {figures['p90_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms; non-2xx {figures['non_2xx']:.0f}; "
            f"socket errors {figures['socket_errors']}"
        )
        total_ms = server_cpu_ms + db_cpu_ms + wrk_cpu_ms
        print(
            f"  CPU per request: web workers {server_cpu_ms:.2f} ms, PostgreSQL {db_cpu_ms:.2f} ms "
            f"({len(backends)} server processes), wrk {wrk_cpu_ms:.2f} ms; together {total_ms:.2f} ms, so "
            f"{os.cpu_count()} idle CPUs would serve about {1000 * (os.cpu_count() or 1) / total_ms:.0f} requests/s"
        )
        print(
            f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
            "(1, 5, 15 min; other work on the machine shares them)"
        )
        ok = figures["requests_per_s"] >= 1000 and figures["p99_ms"] <= 50 and figures["non_2xx"] == 0
        print(f"  target ≥ 1,000 requests/s at p99 ≤ 50 ms: {'met' if ok else 'NOT met'}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        from hub.db import dispose_engines

        dispose_engines()
        shutil.rmtree(home, ignore_errors=True)
        if args.keep or args.schema:
            print(f"kept: schema {schema} (--schema {schema} reuses it)")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
