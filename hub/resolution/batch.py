"""``memberhub match``: de-duplicate one CSV file or link two, with the hub's own resolver and its
default settings, without a database — for a steward cleaning a legacy spreadsheet before import,
and for benchmarks."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.resolution.engine import Resolver
from hub.resolution.settings import FIELDS, Settings, closest, load_settings
from schemas.errors import ConfigError

ID = "id"


def parse_columns(spec: str) -> dict[str, str]:
    """``id=rec_id,given_name=first`` → {canonical field: column}. ``id`` names the record id column."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        field, eq, column = part.partition("=")
        field, column = field.strip(), column.strip()
        if not eq or not field or not column:
            raise ConfigError(f"--columns: {part!r} is not FIELD=COLUMN")
        if field != ID and field not in FIELDS:
            raise ConfigError(f"--columns: unknown field {field!r}{closest(field, (ID, *FIELDS))}")
        out[field] = column
    if ID not in out:
        raise ConfigError("--columns must say which column holds the record id, e.g. id=rec_id")
    if len(out) < 2:
        raise ConfigError("--columns maps no field to compare; e.g. given_name=first_name,family_name=surname")
    return out


def read_csv(path: Path, columns: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        for field, column in columns.items():
            if column not in header:
                raise ConfigError(f"{path.name}: no column {column!r} (for {field}){closest(column, header)}")
        ids, records, seen = [], [], set()
        for line, row in enumerate(reader, start=2):
            rid = (row.get(columns[ID]) or "").strip()
            if not rid:
                raise ConfigError(f"{path.name}, line {line}: empty record id in column {columns[ID]!r}")
            if rid in seen:
                raise ConfigError(f"{path.name}, line {line}: record id {rid!r} appears twice")
            seen.add(rid)
            ids.append(rid)
            records.append({f: (row.get(c) or "").strip() or None for f, c in columns.items() if f != ID})
    return ids, records


@dataclass
class MatchResult:
    records: int
    clusters: int
    duplicates: int  # records that joined another record
    pairs_scored: int
    merged_pairs: int
    review_pairs: int
    seconds: float


def match_files(
    file: Path,
    *,
    columns: dict[str, str],
    out: Path,
    link: Path | None = None,
    pairs: Path | None = None,
    settings: Settings | None = None,
) -> MatchResult:
    """Resolve ``file`` (or link it with ``link``) and write ``out`` (record_id,cluster_id[,file]) and
    optionally ``pairs`` (every pair at or above the review threshold, with its evidence)."""
    started = time.perf_counter()
    ids, records = read_csv(file, columns)
    source = [0] * len(ids)
    names = [file.name]
    if link is not None:
        more_ids, more = read_csv(link, columns)
        ids, records, source = ids + more_ids, records + more, source + [1] * len(more_ids)
        names.append(link.name)
    keys = list(zip(source, ids, strict=True))
    base = settings or load_settings()
    present = {f for f in columns if f != ID}
    if {"family_name", "given_name"} & present or "full_name" in present:
        present |= {"full_name", "family_name", "given_name"}
    resolver = Resolver(base.restricted_to(present), link=link is not None)
    update = resolver.add(keys, records, source=source, train=True)
    clusters = resolver.clusters()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "cluster_id", "file"] if link else ["record_id", "cluster_id"])
        for key in keys:
            head = clusters[key]
            row = [key[1], head[1]]
            writer.writerow([*row, names[key[0]]] if link else row)
    merged, review = 0, 0
    rows = _pair_rows(resolver, clusters)
    for row in rows:
        merged += row["decision"] == "merged"
        review += row["decision"] == "review"
    if pairs is not None:
        _write_pairs(pairs, rows, names if link else None)
    sizes: dict[Any, int] = {}
    for head in clusters.values():
        sizes[head] = sizes.get(head, 0) + 1
    return MatchResult(
        records=len(keys),
        clusters=len(sizes),
        duplicates=len(keys) - len(sizes),
        pairs_scored=update.pairs,
        merged_pairs=merged,
        review_pairs=review,
        seconds=round(time.perf_counter() - started, 3),
    )


def _pair_rows(resolver: Resolver, clusters: dict[Any, Any]) -> list[dict[str, Any]]:
    rows = []
    keys = resolver.frame.keys
    for p, nbrs in resolver.adj.items():
        for q, weight in nbrs.items():
            if p >= q:
                continue
            a, b = keys[p], keys[q]
            same = clusters[a] == clusters[b]
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "weight": weight,
                    "decision": "merged" if same else "review",
                }
            )
    rows.sort(key=lambda r: (-r["weight"], str(r["a"]), str(r["b"])))
    for row in rows:
        evidence = resolver.explain(row["a"], row["b"])
        row["probability"] = evidence["probability"]
        row["rule"] = evidence["rule"]
        row["evidence"] = "; ".join(
            f"{c['label']}: {c['level']} ({c['weight'] + c.get('tf_adjustment', 0):+.1f})"
            for c in evidence["comparisons"]
        )
    return rows


def _write_pairs(path: Path, rows: Sequence[dict[str, Any]], names: list[str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        head = ["record_id_a", "record_id_b", "match_weight", "match_probability", "decision", "rule", "evidence"]
        writer.writerow([*head, "file_a", "file_b"] if names else head)
        for r in rows:
            line = [
                r["a"][1],
                r["b"][1],
                f"{r['weight']:.3f}",
                f"{r['probability']:.6f}",
                r["decision"],
                r["rule"],
                r["evidence"],
            ]
            writer.writerow([*line, names[r["a"][0]], names[r["b"][0]]] if names else line)
