"""``memberhub match``: the resolver on CSV files, without the hub database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(soft_wrap=True)


def match_command(
    file: Annotated[Path, typer.Argument(help="CSV file of member records (UTF-8, with a header row)")],
    columns: Annotated[
        str,
        typer.Option(
            "--columns",
            help="FIELD=COLUMN pairs, comma-separated; id=COLUMN is the record id. Fields: given_name, "
            "family_name, full_name, birthday, phone, email, id_number, loyalty_card, gender, city, postcode, "
            "address, street_number, state",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="where to write record_id,cluster_id")],
    link: Annotated[
        Path | None, typer.Option("--link", help="a second file: link the two instead of de-duplicating one")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="also write the scored pairs with their evidence here")
    ] = None,
    settings: Annotated[
        Path | None, typer.Option("--settings", help="resolution settings YAML (default: the hub's own)")
    ] = None,
) -> None:
    """De-duplicate one member file, or link two, with the hub's resolver and default settings."""
    from hub.resolution.batch import match_files, parse_columns
    from hub.resolution.settings import load_settings

    result = match_files(
        file,
        columns=parse_columns(columns),
        out=out,
        link=link,
        pairs=pairs,
        settings=load_settings(settings) if settings else None,
    )
    what = "linked" if link else "de-duplicated"
    console.print(
        f"{what} {result.records} records into {result.clusters} members "
        f"({result.duplicates} duplicates; {result.merged_pairs} pairs merged, {result.review_pairs} to review; "
        f"{result.pairs_scored} pairs scored) in {result.seconds} s → {out}" + (f", pairs → {pairs}" if pairs else "")
    )
