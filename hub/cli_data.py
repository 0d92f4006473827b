"""``memberhub mappings validate | preview | drift`` and ``memberhub quarantine list | show | retry``.

Registered on the main app by hub/cli.py. Everything here calls into ``mappings``, ``hub.drift``,
``hub.quarantine`` and ``hub.staging``; the main CLI module is imported lazily (it imports this one).
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mappings import load_mappings
from schemas.errors import HubError

mappings_app = typer.Typer(help="Mapping files: validate, preview, drift.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Records that failed mapping or validation: list, show, retry.", no_args_is_help=True)

console = Console()
err = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, ensure_ascii=False, default=str))


def _config_path() -> Path | None:
    from hub import cli

    return cli._state.get("config")


def _hub(*, migrate: bool = True):  # type: ignore[no-untyped-def]
    from hub.service import Hub

    hub = Hub(config_path=_config_path())
    if migrate:
        hub.upgrade()
    return hub


def _kinds(hub: Any) -> dict[str, str]:
    """Connector name -> the source its mapping files name (the same rule staging uses)."""
    return hub.mapping_sources(load_mappings())


def _actor() -> str:
    try:
        return os.environ.get("MEMBERHUB_ACTOR") or getpass.getuser()
    except OSError:
        return "unknown"


def _options(hub: Any) -> Any:
    from hub.staging import StageOptions

    return StageOptions.of(hub.config.programme)


# ------------------------------------------------------------------------------------- mappings
def _discovery(hub: Any) -> tuple[dict[tuple[str, str], dict[str, set[str]]], dict[tuple[str, str], int], str | None]:
    """What discovery has seen, without creating or migrating a database to find out."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from hub.db import engine_for
    from hub.drift import discovered_fields, discovered_records

    url = make_url(hub.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return {}, {}, "no hub database yet"
    try:
        if "stream_fields" not in inspect(engine_for(hub.database_url)).get_table_names():
            return {}, {}, "the hub database has no discovery table yet (memberhub db upgrade)"
        with hub.session() as session:
            return discovered_fields(session), discovered_records(session), None
    except SQLAlchemyError as exc:
        return {}, {}, f"the hub database is not reachable ({type(exc).__name__})"


@mappings_app.command("validate")
def mappings_validate(as_json: JsonOption = False) -> None:
    """Check every mapping file: syntax, functions, canonical fields, types, store codes, and each
    source field against the fields discovered in that stream's stored records."""
    from mappings import load_stores, mapping_files
    from mappings.engine import check_mapping

    hub = _hub(migrate=False)
    kinds = _kinds(hub)
    fields, records, unavailable = _discovery(hub)
    load_stores()
    reports: list[dict[str, Any]] = []
    owners: dict[tuple[str, str], Path] = {}
    for path in mapping_files():
        mapping, problems = check_mapping(path)
        report: dict[str, Any] = {"file": f"{path.parent.name}/{path.name}", "problems": [str(p) for p in problems]}
        if mapping is not None:
            key = (mapping.source, mapping.stream)
            if key in owners:
                report["problems"].append(f"{path}:1:1: {key[0]}.{key[1]} is already mapped by {owners[key]}")
            owners.setdefault(key, path)
            connectors = sorted({n for n, k in kinds.items() if k == mapping.source} | {mapping.source})
            checked = []
            for connector in connectors:
                known = fields.get((connector, mapping.stream))
                if known is None:
                    continue
                label = f"{connector}.{mapping.stream}"
                _, found = check_mapping(path, fields=known, fields_label=label)
                report["problems"].extend(str(p) for p in found)
                checked.append(f"{label} ({records.get((connector, mapping.stream), 0)} records)")
            report["fields_checked_against"] = checked
            if not checked:
                report["note"] = (
                    f"source fields not checked: {unavailable}"
                    if unavailable
                    else f"source fields not checked: nothing discovered for {mapping.source}.{mapping.stream} yet "
                    "(sync and stage it first)"
                )
        reports.append(report)
    unmapped = sorted(f"{c}.{s}" for c, s in fields if (kinds.get(c, c), s) not in owners)
    problems = sum(len(r["problems"]) for r in reports)
    if as_json:
        _print_json({"files": reports, "unmapped_streams": unmapped, "problems": problems})
    else:
        for report in reports:
            if report["problems"]:
                console.print(f"[red]error[/] {report['file']}")
                for problem in report["problems"]:
                    console.print(f"  {escape(problem)}", soft_wrap=True)
            else:
                checked = report.get("fields_checked_against")
                detail = f"source fields checked against {', '.join(checked)}" if checked else report.get("note", "")
                console.print(f"[green]ok[/] {report['file']}  [dim]{escape(detail)}[/]")
        for stream in unmapped:
            console.print(f"[yellow]warning[/] {stream}: records are stored but no mapping file maps them")
        if not reports:
            console.print("no mapping files under mappings/")
    if problems:
        raise typer.Exit(1)


def _split_stream(text: str) -> tuple[str, str]:
    source, dot, stream = text.partition(".")
    if not dot or not source or not stream:
        raise HubError(f"say SOURCE.STREAM, e.g. shopify.customers (got {text!r})")
    return source, stream


def _show(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, dict | list) else str(value)


@mappings_app.command("preview")
def mappings_preview(
    target: Annotated[str, typer.Argument(metavar="SOURCE.STREAM", help="connector (or system kind) and stream")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="records to show, newest first")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Source values beside the canonical ones for the newest stored records of one stream, and
    what staging would do with each (stage, with normalised values, or quarantine, and why)."""
    from sqlalchemy import select

    from hub.staging import Rejected, member_values, order_values
    from hub.tables import SourceRecordRow
    from mappings import load_mappings

    source, stream = _split_stream(target)
    hub = _hub()
    kinds = _kinds(hub)
    mapping = load_mappings().get((kinds.get(source, source), stream))
    if mapping is None:
        kind = kinds.get(source, source)
        raise HubError(f"no mapping for {source}.{stream}: mappings/{kind}/{stream}.yaml does not exist")
    with hub.session() as session:
        rows = list(
            session.execute(
                select(SourceRecordRow.id, SourceRecordRow.external_id, SourceRecordRow.payload)
                .where(SourceRecordRow.source == source, SourceRecordRow.stream == stream)
                .order_by(SourceRecordRow.id.desc())
                .limit(limit)
            )
        )
    if not rows:
        raise HubError(f"no stored records for {source}.{stream}; run `memberhub connectors sync {source}` first")
    options = _options(hub)
    previews = []
    for record_id, external_id, payload in rows:
        fields = mapping.explain(payload if isinstance(payload, dict) else {})
        outcome: dict[str, Any]
        try:
            if mapping.target == "member":
                staged = member_values(mapping, payload, source, options)
            else:
                staged = order_values(mapping, payload, source)
            outcome = {"result": "staged", "values": staged}
        except Rejected as exc:
            outcome = {"result": "quarantined", "field": exc.field, "reason": exc.reason}
        previews.append({"source_record_id": record_id, "external_id": external_id, "fields": fields, **outcome})
    if as_json:
        _print_json({"mapping": str(mapping.path), "records": previews})
        return
    for preview in previews:
        table = Table(
            "canonical field",
            "expression",
            "source values",
            "canonical value",
            title=f"{source}.{stream} record {preview['external_id']} — {mapping.path.parent.name}/{mapping.path.name}",
            title_justify="left",
        )
        for row in preview["fields"]:
            value = f"[red]{escape(row['error'])}[/]" if "error" in row else escape(_show(row["value"]))
            sources = ", ".join(f"{k}={_show(v)}" for k, v in row["source"].items()) or "(constant)"
            table.add_row(row["target"], escape(row["expression"]), escape(sources), value)
        console.print(table)
        if preview["result"] == "staged":
            values = preview["values"]
            shown = {k: v for k, v in values.items() if v not in (None, {}, "") and k not in ("source",)}
            console.print("[green]would stage[/]: " + escape(", ".join(f"{k}={_show(v)}" for k, v in shown.items())))
        else:
            console.print(f"[red]would quarantine[/] ({preview['field']}): {escape(preview['reason'])}")
        console.print()


@mappings_app.command("drift")
def mappings_drift(
    accept: Annotated[bool, typer.Option("--accept", help="make the current shape the known one")] = False,
    connector: Annotated[str | None, typer.Option(help="only this connector")] = None,
    stream: Annotated[str | None, typer.Option(help="only this stream")] = None,
    as_json: JsonOption = False,
) -> None:
    """Source fields that appeared, disappeared or changed type since the streams' shapes were
    accepted (exit code 1 when a field a mapping reads is affected, unless --accept)."""
    from hub.drift import accept_drift, mapping_reader, schema_drift
    from mappings import load_mappings

    hub = _hub()
    reads = mapping_reader(load_mappings(), _kinds(hub))
    with hub.session() as session, session.begin():
        changes = schema_drift(session, reads=reads)
        changes = [c for c in changes if (connector in (None, c.connector)) and (stream in (None, c.stream))]
        if accept:
            accept_drift(session, connector=connector, stream=stream)
    if as_json:
        _print_json({"accepted": accept, "changes": [c.as_dict() for c in changes]})
    else:
        if not changes:
            console.print("no schema drift: every stream looks as accepted")
        for change in changes:
            colour = "red" if change.severity == "error" else "yellow"
            console.print(f"[{colour}]{change.severity}[/] {escape(change.describe())}")
        if accept and changes:
            console.print(f"accepted {len(changes)} change(s)")
    if not accept and any(c.severity == "error" for c in changes):
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------- quarantine
@quarantine_app.command("list")
def quarantine_list(
    source: Annotated[str | None, typer.Option(help="only this connector")] = None,
    stream: Annotated[str | None, typer.Option(help="only this stream")] = None,
    field: Annotated[str | None, typer.Option(help="only records failing on this canonical field")] = None,
    limit: Annotated[int, typer.Option(min=1, help="rows to show")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Quarantined records with their reasons, and how many per source, stream and field."""
    from hub import quarantine

    hub = _hub()
    with hub.session() as session:
        counts = quarantine.summary(session)
        entries = quarantine.list_entries(session, source=source, stream=stream, field=field, limit=limit)
    if as_json:
        _print_json({"summary": counts, "entries": entries})
        return
    if not counts:
        console.print("quarantine is empty")
        return
    overview = Table("source", "stream", "field", "records", title="隔离区 / quarantine", title_justify="left")
    for row in counts:
        overview.add_row(row["source"], row["stream"], row["field"] or "-", str(row["count"]))
    console.print(overview)
    table = Table("id", "source.stream", "external id", "field", "reason", "attempts", "last attempt")
    for entry in entries:
        table.add_row(
            str(entry["id"]),
            f"{entry['source']}.{entry['stream']}",
            entry["external_id"] or "[dim](none)[/]",
            entry["field"] or "-",
            escape(entry["reason"][:100]),
            str(entry["attempts"]),
            (entry["last_attempt_at"] or entry["created_at"] or "")[:19],
        )
    console.print(table)
    console.print("[dim]memberhub quarantine show ID · memberhub quarantine retry ID | --all[/]")


@quarantine_app.command("show")
def quarantine_show(entry_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonOption = False) -> None:
    """One quarantined record: the reason, the failing field and the raw payload (audited)."""
    from hub import quarantine
    from mappings import load_mappings

    hub = _hub()
    try:
        mappings = load_mappings()
    except HubError:
        mappings = {}
    with hub.session() as session, session.begin():
        entry = quarantine.show(session, entry_id, actor=_actor(), mappings=mappings, kinds=_kinds(hub))
    if as_json:
        _print_json(entry)
        return
    console.print(
        f"[bold]quarantine {entry['id']}[/]: {entry['source']}.{entry['stream']} "
        f"record {entry['external_id'] or '(no id)'}"
    )
    console.print(f"field:    {entry['field'] or '-'}")
    console.print(f"reason:   {escape(entry['reason'])}", soft_wrap=True)
    console.print(f"attempts: {entry['attempts']}, first {entry['created_at']}, last {entry['last_attempt_at']}")
    if entry.get("mapping"):
        changed = " (changed since: a retry may help)" if entry.get("mapping_changed_since") else ""
        console.print(f"mapping:  {entry['mapping']}{changed}")
    if not entry["replayable"]:
        console.print(
            "[yellow]not replayable[/]: the hub never stored this record (no usable id or not JSON); "
            "it is stored when the source sends it correctly"
        )
    console.print_json(json.dumps(entry["payload"], ensure_ascii=False, default=str))


@quarantine_app.command("retry")
def quarantine_retry(
    ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...", help="quarantine ids")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="every quarantined record (or of --source/--stream)")
    ] = False,
    source: Annotated[str | None, typer.Option(help="with --all: only this connector")] = None,
    stream: Annotated[str | None, typer.Option(help="with --all: only this stream")] = None,
    as_json: JsonOption = False,
) -> None:
    """Map quarantined records again with the current mapping files: those that now succeed are
    staged and leave quarantine; the others keep an up-to-date reason."""
    from hub import quarantine
    from mappings import load_mappings

    if not ids and not everything:
        raise HubError("say which records to retry: one or more quarantine ids, or --all")
    hub = _hub()
    mappings = load_mappings()
    with hub.session() as session, session.begin():
        result = quarantine.retry(
            session,
            mappings,
            _kinds(hub),
            ids=ids or (),
            everything=everything,
            source=source,
            stream=stream,
            options=_options(hub),
            actor=_actor(),
        )
    if as_json:
        _print_json(result.as_dict())
        return
    console.print(
        f"retried {result.retried}: [green]{result.released} staged[/] and out of quarantine, "
        f"{len(result.still_failing)} still failing"
        + (f", {len(result.not_replayable)} not replayable (never stored)" if result.not_replayable else "")
    )
    for entry in result.still_failing[:20]:
        console.print(
            f"  {entry['id']} {entry['source']}.{entry['stream']} {entry['external_id']}: {escape(entry['reason'])}",
            soft_wrap=True,
        )
    if len(result.still_failing) > 20:
        console.print(f"  … and {len(result.still_failing) - 20} more (memberhub quarantine list)")
