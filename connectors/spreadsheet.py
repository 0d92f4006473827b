"""Member spreadsheets (会员表): .csv and .xlsx files as shops keep them, read as one stream.

Declared in the connector's configuration::

    member_sheet:
      kind: spreadsheet
      path: /data/members/*.csv          # a file, or a glob of files
      header: {会员卡号: card_no, 姓名: name, 手机号: mobile}
      id_column: card_no

CSV files come in whatever encoding the program that saved them chose: UTF-8, UTF-8 with a BOM
(Excel's "CSV UTF-8"), GBK (Excel and WPS on a Chinese Windows), UTF-16 (Excel's "Unicode text",
tab-separated). Unless ``encoding`` is set, a BOM decides; otherwise the whole file is tried as
UTF-8, then GBK, then GB18030, and ``check`` says which one was used. The delimiter is the one of
``, TAB ; |`` the first lines use most. An .xlsx is read with openpyxl in read-only mode (values, not
formulas), from ``sheet`` or the first sheet.

The header row is the first of the first rows that holds a column of the ``header`` map (a title
line such as 2023年会员名单 above it is skipped), else the first non-empty row. Titles are renamed by
``header``; columns it does not list keep their titles. Every record carries ``_file`` and ``_row``
(the row number a person sees when opening the file), so a quarantined record can be found in it.
Fully empty rows are skipped; a row without an id is still yielded, and the hub quarantines it.

A spreadsheet has no cursor: every sync reads the files whole, and the hub's content hashes make an
unchanged row cost nothing. Read only: nothing is written back.
"""

from __future__ import annotations

import codecs
import csv
import glob
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from connectors.base import CheckStep, Connector, Page, Stream, WritebackResult, WritebackUpdate
from schemas import Channel, ConnectorConfig
from schemas.errors import FatalError, closest

DEFAULT_PAGE = 1000
ENCODINGS = ("utf-8", "gbk", "gb18030")
"""Tried in this order on a CSV file without a BOM; the first that decodes the whole file wins."""
BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
DELIMITERS = ",\t;|"
HEADER_SCAN = 20
"""How many rows from the top may come before the header row (titles, notes, blank lines)."""
CHUNK = 1 << 20

Row = tuple[int, list[Any]]  # (1-based row number, cell values)


@dataclass
class Sheet:
    """What reading one file found out: how it was decoded and where its header is."""

    path: Path
    encoding: str | None = None  # CSV only
    delimiter: str | None = None  # CSV only
    header_row: int | None = None
    titles: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # the titles after the header map


class SpreadsheetConnector(Connector):
    kind: ClassVar[str] = "spreadsheet"
    channel: ClassVar[Channel] = Channel.spreadsheet
    streams: ClassVar[tuple[Stream, ...]] = ()  # per instance: the configured stream name and id column

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        super().__init__(name, config)
        self.header = {title.strip(): name for title, name in config.header.items()}
        self.id_field = self.header.get(config.id_column or "", config.id_column or "")
        self.streams = (Stream(config.stream or "members", "members", self.id_field),)  # type: ignore[misc]
        self.zone = ZoneInfo(config.timezone)
        self.readers: dict[str, Callable[[Sheet], Iterator[Row]]] = {
            ".csv": self._csv_rows,
            ".txt": self._csv_rows,
            ".tsv": self._csv_rows,
            ".xlsx": self._xlsx_rows,
            ".xlsm": self._xlsx_rows,
        }

    # ------------------------------------------------------------------------- files
    def files(self) -> list[Path]:
        pattern = str(Path(self.config.path or "").expanduser())
        found = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        files = [Path(p) for p in found if Path(p).is_file()]
        if not files:
            raise FatalError(f"{self.name}: no file matches {self.config.path!r} (from {Path.cwd()})")
        return files

    def read(self, stream: str, since: str | None) -> Iterator[Page]:
        self.stream(stream)
        size = self.config.page_size or DEFAULT_PAGE
        for path in self.files():
            records = self.records(Sheet(path))
            while batch := list(itertools.islice(records, size)):
                yield Page(batch)

    def records(self, sheet: Sheet) -> Iterator[dict[str, Any]]:
        """The file's rows as records, header applied; ``sheet`` learns the encoding and header."""
        reader = self.readers.get(sheet.path.suffix.lower())
        if reader is None:
            old = "; save an old .xls as .xlsx or .csv" if sheet.path.suffix.lower() == ".xls" else ""
            raise FatalError(f"{self.name}: cannot read {sheet.path.name}: not one of {', '.join(self.readers)}{old}")
        rows = reader(sheet)
        rest = self._find_header(sheet, rows)
        if sheet.header_row is None:
            return
        if self.id_field not in sheet.fields:
            wanted = [t for t, n in self.header.items() if n == self.id_field] or [self.id_field]
            close = closest(wanted[0], sheet.titles)
            hint = f"did you mean {close!r}? " if close else ""
            raise FatalError(
                f"{self.name}: {sheet.path.name} has no id column {wanted[0]!r} in its header (row "
                f"{sheet.header_row}); {hint}its columns: {', '.join(sheet.titles)}"
            )
        for number, values in rest:
            cells = [self._value(v) for v in values]
            if all(v is None for v in cells):
                continue
            record: dict[str, Any] = {"_file": sheet.path.name, "_row": number}
            for index, value in enumerate(cells):
                name = sheet.fields[index] if index < len(sheet.fields) else f"column {index + 1}"
                if index < len(sheet.fields) or value is not None:
                    record[name] = value
            yield record

    def _find_header(self, sheet: Sheet, rows: Iterator[Row]) -> Iterator[Row]:
        """Fill in the sheet's header; return the rows below it."""
        top = list(itertools.islice(rows, HEADER_SCAN))
        filled = [(i, row) for i, row in enumerate(top) if any(self._value(v) is not None for v in row[1])]
        if not filled:
            return iter(())
        known = {*self.header, self.id_field}
        at = next((i for i, row in filled if known & set(_titles(row[1]))), filled[0][0])
        sheet.header_row, values = top[at]
        sheet.titles = _titles(values)
        sheet.fields = _unique([self.header.get(t, t) if t else f"column {i + 1}" for i, t in enumerate(sheet.titles)])
        return itertools.chain(top[at + 1 :], rows)

    # ------------------------------------------------------------------------- formats
    def _csv_rows(self, sheet: Sheet) -> Iterator[Row]:
        sheet.encoding = self.config.encoding or self.detect_encoding(sheet.path)
        try:
            with sheet.path.open(encoding=sheet.encoding, newline="") as handle:
                sheet.delimiter = _delimiter(list(itertools.islice(handle, 5)))
                handle.seek(0)
                yield from enumerate(csv.reader(handle, delimiter=sheet.delimiter), start=1)
        except UnicodeDecodeError as exc:
            raise FatalError(
                f"{self.name}: {sheet.path.name} is not {sheet.encoding} text ({exc.reason} at byte {exc.start}); "
                "set the connector's `encoding`"
            ) from None
        except csv.Error as exc:
            raise FatalError(f"{self.name}: {sheet.path.name} is not readable CSV: {exc}") from None

    def detect_encoding(self, path: Path) -> str:
        with path.open("rb") as handle:
            head = handle.read(4)
        for bom, encoding in BOMS:
            if head.startswith(bom):
                return encoding
        for encoding in ENCODINGS:
            if _decodes(path, encoding):
                return encoding
        raise FatalError(
            f"{self.name}: {path.name} is neither UTF-8 nor GBK/GB18030 text; set the connector's `encoding`"
        )

    def _xlsx_rows(self, sheet: Sheet) -> Iterator[Row]:
        import openpyxl  # only for .xlsx files
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            book = openpyxl.load_workbook(sheet.path, read_only=True, data_only=True)
        except (InvalidFileException, OSError, KeyError, ValueError) as exc:
            raise FatalError(f"{self.name}: {sheet.path.name} is not a readable .xlsx workbook: {exc}") from None
        try:
            wanted = self.config.sheet
            if wanted is not None and wanted not in book.sheetnames:
                close = closest(wanted, book.sheetnames, cutoff=0.4)
                hint = f"did you mean {close!r}? " if close else ""
                sheets = ", ".join(book.sheetnames)
                raise FatalError(f"{self.name}: {sheet.path.name} has no sheet {wanted!r}; {hint}sheets: {sheets}")
            worksheet = book[wanted] if wanted is not None else book.worksheets[0]
            for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
                yield number, list(values)
        finally:
            book.close()

    def _value(self, value: Any) -> Any:
        """A cell as a JSON value: text stripped (blank is None), whole floats as integers (a phone
        number typed into Excel), times with the connector's offset, a midnight time as a date."""
        if isinstance(value, str):
            return value.strip() or None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, datetime):
            if value.tzinfo is None and value.time() == time():
                return value.date().isoformat()
            return (value if value.tzinfo else value.replace(tzinfo=self.zone)).isoformat()
        if isinstance(value, date | time):
            return value.isoformat()
        return value

    # ------------------------------------------------------------------------- check
    def check(self) -> list[CheckStep]:
        try:
            files = self.files()
        except FatalError as exc:
            return [CheckStep("find", False, str(exc))]
        steps = [CheckStep("find", True, f"{len(files)} file(s): {', '.join(p.name for p in files)}")]
        for path in files:
            steps.append(self._check_file(Sheet(path)))
        return steps

    def _check_file(self, sheet: Sheet) -> CheckStep:
        step = f"read {sheet.path.name}"
        try:
            count, no_id, first_missing = 0, 0, None
            for record in self.records(sheet):
                count += 1
                if record.get(self.id_field) is None:
                    no_id += 1
                    first_missing = first_missing or record["_row"]
        except FatalError as exc:
            return CheckStep(step, False, str(exc))
        if sheet.header_row is None:
            return CheckStep(step, False, f"{sheet.path.name} is empty")
        how = f"encoding {sheet.encoding}, delimiter {sheet.delimiter!r}, " if sheet.encoding else ""
        missing = [t for t in self.header if t not in sheet.titles]
        parts = [f"{how}header on row {sheet.header_row}, {count} row(s)"]
        if missing:
            parts.append(f"mapped columns not in the file: {', '.join(missing)}")
        unmapped = [t for t in sheet.titles if t and t not in self.header]
        if unmapped:
            parts.append(f"kept under their own titles: {', '.join(unmapped)}")
        if no_id:
            parts.append(f"{no_id} row(s) without {self.id_field} will be quarantined (first: row {first_missing})")
        return CheckStep(step, True, "; ".join(parts))

    # ------------------------------------------------------------------------- write-back
    def push(self, updates: list[WritebackUpdate]) -> list[WritebackResult]:
        raise FatalError(
            f"{self.name}: kind spreadsheet is read only — the hub does not write points or tiers into "
            f"{self.config.path}; leave `writeback` unset for this connector"
        )


def _titles(values: list[Any]) -> list[str]:
    return [str(v).strip().lstrip("\ufeff").strip() if v is not None else "" for v in values]


def _unique(names: list[str]) -> list[str]:
    """Two columns with one title (two 备注) keep both: the second becomes 备注 (2)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _delimiter(lines: list[str]) -> str:
    counts = {d: sum(line.count(d) for line in lines) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
