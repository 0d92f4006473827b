"""Staging in several processes at once, with the same results as one process.

The calling process hands out the pending source records in rounds: the next ``workers × BATCH``
pending ids in id order, cut into one contiguous slice per worker. Each worker (its own process,
connection and transaction per round) reads its slice, maps, validates and normalises it and
sends back only the (source, source_id) each row would take. The calling process settles those
claims in source record id order, exactly as one process staging the records in id order would
(``hub.staging.Claims``), and tells each worker which of its records lost; the worker then writes
its staged rows, quarantine entries and staged marks and commits. A record is marked staged only
in the transaction that writes its staged row, as in one process; a round a worker could not
finish is rolled back and its records stay pending.

Workers compile the mapping files themselves (compiled mappings cannot be pickled) and must find
the same file versions the caller loaded. They read committed records only: records stored by the
caller's own open transaction would be invisible to them, so a caller that has written anything in
its transaction is staged in one process (PostgreSQL tells: ``pg_current_xact_id_if_assigned``), and
so is a run of one batch or less (starting workers would cost more than it saves).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import traceback
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import staging
from hub.db import dispose_engines
from hub.drift import Discovery, FieldsSeen
from hub.tables import QuarantineRow, SourceRecordRow, StagedMember, StagedOrder
from mappings import Mapping, load_mapping

log = logging.getLogger(__name__)
TABLES = {model.__tablename__: model for model in (StagedMember, StagedOrder)}


def stage_parallel(
    session: Session,
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    options: staging.StageOptions,
    workers: int,
    on_batch: Callable[[int], None] | None = None,
) -> staging.StageCounts:
    """``hub.staging.stage`` over ``workers`` processes (see the module's docstring)."""
    if session.connection().exec_driver_sql("SELECT pg_current_xact_id_if_assigned()").scalar() is not None:
        log.info("staging in one process: this transaction has written records the workers could not see")
        return staging.stage(session, mappings, kinds, options=_one_process(options), on_batch=on_batch)
    beyond_one_batch = select(SourceRecordRow.id).where(staging.PENDING).order_by(SourceRecordRow.id)
    if session.scalar(beyond_one_batch.offset(staging.BATCH).limit(1)) is None:  # nothing to share out
        return staging.stage(session, mappings, kinds, options=_one_process(options), on_batch=on_batch)
    url = session.get_bind().url.render_as_string(hide_password=False)
    paths = {key: (str(mapping.path), mapping.fingerprint) for key, mapping in mappings.items()}
    tables = staging.Claims()  # which tables were empty before any worker wrote (hub.staging._existing)
    for model in (StagedMember, StagedOrder, QuarantineRow):
        tables.table_was_empty(session, model)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pipes, processes = [], []
    for _ in range(workers):
        ours, theirs = context.Pipe()
        process = context.Process(target=_work, args=(theirs, url, paths, kinds, options, tables), daemon=True)
        process.start()
        theirs.close()
        pipes.append(ours)
        processes.append(process)
    try:
        counts, discovery = _coordinate(session, pipes, on_batch)
    except BaseException:
        for process in processes:  # their open rounds are rolled back when their connections drop
            process.kill()
        raise
    finally:
        for pipe in pipes:
            pipe.close()
        for process in processes:
            process.join()
    discovery.save(session)
    return counts


def _one_process(options: staging.StageOptions) -> staging.StageOptions:
    return replace(options, workers=1)


def _coordinate(
    session: Session, pipes: list[Connection], on_batch: Callable[[int], None] | None
) -> tuple[staging.StageCounts, Discovery]:
    """Hand out rounds and settle their claims slice by slice in id order: a worker whose claims
    are settled writes while the next slice's are, and goes on to its next round while the others
    still write (a round is reported to ``on_batch`` once every slice of it is committed)."""
    claims = staging.Claims()
    pending = select(SourceRecordRow.id).where(staging.PENDING).order_by(SourceRecordRow.id)
    last_id = 0
    writing: list[Connection] = []  # the workers still writing the previous round
    written = 0  # records of the previous round
    while True:
        ids = list(session.scalars(pending.where(SourceRecordRow.id > last_id).limit(len(pipes) * staging.BATCH)))
        if not ids:
            break
        last_id = ids[-1]
        size = -(-len(ids) // len(pipes))
        busy = [(pipe, ids[i * size : (i + 1) * size]) for i, pipe in enumerate(pipes) if ids[i * size :]]
        for pipe, part in busy:
            _send(pipe, ("round", part))
        for pipe, _part in busy:
            if pipe in writing:
                _receive(pipe)  # its previous slice is committed
                writing.remove(pipe)
            if not writing and written:
                _report(on_batch, written)
                written = 0
            wanted = _receive(pipe)  # table -> [(record id, source, source_id)]
            taken: dict[int, tuple[str, int]] = {}
            for table, model in TABLES.items():
                claimed = sorted(wanted.get(table, ()))
                claims.look_up(session, model, [(source, source_id) for _, source, source_id in claimed])
                taken.update(claims.settle(table, claimed))
            _send(pipe, ("settled", taken))
        for pipe in writing:  # idle workers (a short last round) finished the previous round too
            _receive(pipe)
        if written:
            _report(on_batch, written)
        writing, written = [pipe for pipe, _ in busy], len(ids)
    for pipe in writing:
        _receive(pipe)
    if written:
        _report(on_batch, written)
    counts = staging.StageCounts()
    seen: list[FieldsSeen] = []
    for pipe in pipes:
        _send(pipe, ("end", None))
        part_counts, part_seen = _receive(pipe)
        counts.add(part_counts)
        seen.append(part_seen)
    return counts, FieldsSeen.merged(seen)


def _report(on_batch: Callable[[int], None] | None, records: int) -> None:
    if on_batch:
        on_batch(records)


def _send(pipe: Connection, message: tuple[str, Any]) -> None:
    try:
        pipe.send(message)
    except OSError:  # the worker is gone: say why, if it could
        _receive(pipe)
        raise


def _receive(pipe: Connection) -> Any:
    try:
        kind, value = pipe.recv()
    except EOFError:
        raise RuntimeError("a staging worker exited without a word") from None
    if kind == "error":
        raise RuntimeError(f"a staging worker failed:\n{value}")
    return value


# ------------------------------------------------------------------------------ one worker
def _work(
    pipe: Connection,
    url: str,
    paths: dict[tuple[str, str], tuple[str, str]],
    kinds: dict[str, str],
    options: staging.StageOptions,
    tables: staging.Claims,
) -> None:
    try:
        dispose_engines(close=False)
        mappings = _compile(paths)
        engine = sa.create_engine(url, pool_size=1)  # its own connection, never one of the caller's pool
        with Session(engine) as session:
            _serve(pipe, session, mappings, kinds, options, tables)
        engine.dispose()
    except Exception:
        with contextlib.suppress(OSError):  # the caller may have gone already
            pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def _compile(paths: dict[tuple[str, str], tuple[str, str]]) -> dict[tuple[str, str], Mapping]:
    mappings = {}
    for key, (path, fingerprint) in paths.items():
        mapping = mappings[key] = load_mapping(Path(path))
        if mapping.fingerprint != fingerprint:
            raise RuntimeError(f"{path} changed while staging started: stage again")
    return mappings


def _serve(
    pipe: Connection,
    session: Session,
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    options: staging.StageOptions,
    tables: staging.Claims,  # only which tables were empty: the caller settles the claims
) -> None:
    counts = staging.StageCounts()
    seen = FieldsSeen()
    while True:
        kind, ids = pipe.recv()
        if kind == "end":
            pipe.send(("done", (counts, seen)))
            return
        with session.begin():
            rows = session.execute(
                select(*staging._RECORD_COLUMNS).where(SourceRecordRow.id.in_(ids)).order_by(SourceRecordRow.id)
            ).all()
            for row in rows:
                seen.observe(row)
            members, orders, failed = staging.prepare_rows(session, rows, mappings, kinds, options)
            pipe.send(
                ("claims", {"staged_members": staging.claimed(members), "staged_orders": staging.claimed(orders)})
            )
            kind, taken = pipe.recv()
            for staged in (members, orders):  # in the order one process quarantines them
                staging.drop_taken(staged, taken, rows, failed)
            staging.write_rows(session, rows, members, orders, failed, counts, tables)
        pipe.send(("written", len(rows)))


__all__ = ["stage_parallel"]
