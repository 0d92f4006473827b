"""Records held column-wise for the resolver: each field's values are coded once (a vocabulary of
distinct values with their counts), and each view (pinyin, initials, date...) is computed once per
distinct value. A million records cost a few int32 arrays and the distinct strings, not a million
dicts; comparisons and blocking work on the codes with numpy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from functools import lru_cache
from itertools import islice
from typing import Any

import numpy as np

from hub.normalise import phone_e164
from hub.resolution.text import VIEWS, date_key, has_han, normalise, surname_tables


class GrowArray:
    """A numpy array that grows by appending, in amortised constant time."""

    def __init__(self, dtype: Any, fill: Any = 0) -> None:
        self._data = np.full(16, fill, dtype=dtype)
        self._fill = fill
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self._data):
            grown = np.full(max(need, 2 * len(self._data)), self._fill, dtype=self._data.dtype)
            grown[: self.n] = self._data[: self.n]
            self._data = grown
        self._data[self.n : need] = values
        self.n = need

    @property
    def a(self) -> np.ndarray:
        return self._data[: self.n]


class Vocab:
    """Distinct values of one field or view, each with a code and the number of live records holding it."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {None: -1}
        self.values: list[Any] = []
        self.counts = GrowArray(np.int64)
        self._array: GrowArray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def encode(self, values: Iterable[Any], *, count: bool = True) -> np.ndarray:
        values = values if isinstance(values, list) else list(values)
        index = self.index
        before = len(index)
        setdefault = index.setdefault
        # one dict operation per value: a new value gets the next code (len - 1: None holds -1)
        codes = np.fromiter((setdefault(v, len(index) - 1) for v in values), dtype=np.int32, count=len(values))
        added = len(index) - before
        if added:
            new = list(islice(reversed(index), added))  # the newest keys, without walking the dict
            new.reverse()
            self.values.extend(new)
            self.counts.extend(np.zeros(added, dtype=np.int64))
        if count:
            self.add_counts(codes, 1)
        return codes

    def add_counts(self, codes: np.ndarray, delta: int) -> None:
        codes = codes[codes >= 0]
        if len(codes) > 10_000:
            counts = self.counts.a
            counts += delta * np.bincount(codes, minlength=len(counts))[: len(counts)]
        elif len(codes):
            np.add.at(self.counts.a, codes, delta)

    def array(self) -> np.ndarray:
        """The values as an object array indexed by code, extended as the vocabulary grows."""
        if self._array is None:
            self._array = GrowArray(object, None)
        arr = self._array
        if arr.n < len(self.values):
            chunk = np.empty(len(self.values) - arr.n, dtype=object)
            chunk[:] = self.values[arr.n :]
            arr.extend(chunk)
        return arr.a


def prepare(field: str, value: Any) -> str | None:
    """The resolver's normal form of one raw value: text normalised, dates as YYYYMMDD."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    if field == "birthday":
        if isinstance(value, datetime):
            value = value.date()
        if isinstance(value, date):
            return value.strftime("%Y%m%d")
        text = str(value).strip()
        return date_key(text) or (text if text else None)
    if field == "email":
        text = str(value).strip().lower()
        return text if "@" in text else None
    if field == "phone":
        return _phone(str(value))
    if field in ("id_number", "loyalty_card", "postcode", "street_number"):
        text = "".join(str(value).split()).upper()
        return text or None
    text = str(value)
    return normalise(text) if text.strip() else None


def prepare_column(field: str, values: list[Any]) -> list[str | None]:
    """``prepare`` over a column, computing each distinct value once (names and cities repeat)."""
    memo: dict[Any, str | None] = {None: None}
    out = []
    for v in values:
        try:
            out.append(memo[v])
        except KeyError:
            out.append(memo.setdefault(v, prepare(field, v)))
        except TypeError:  # unhashable: compute it
            out.append(prepare(field, v))
    return out


def join_name(family: str | None, given: str | None) -> str | None:
    """Prepared family and given names as one full name: 王芳, or ``mary smith``."""
    if family and given:
        return f"{family}{given}" if has_han(family) or has_han(given) else f"{given} {family}"
    return family or given


def split_name(full: str) -> tuple[str | None, str | None]:
    """(family, given) of a prepared full name: 欧阳娜娜 → (欧阳, 娜娜); ``mary jane smith`` → (smith, mary jane)."""
    if has_han(full):
        text = full.replace(" ", "")
        if len(text) < 2:
            return None, text
        _, compound = surname_tables()
        cut = 2 if len(text) >= 3 and text[:2] in compound else 1
        return text[:cut], text[cut:]
    words = full.split()
    if len(words) < 2:
        return None, full
    return words[-1], " ".join(words[:-1])


@lru_cache(maxsize=1 << 18)
def _phone(raw: str) -> str | None:
    """E.164 as staging writes it; other spellings (``138 1234 5678``, ``0086…``) are parsed like
    staging does, and a number that does not parse is kept as its digits."""
    text = raw.strip()
    if text.startswith("+") and text[1:].isdigit():
        return text
    return phone_e164(text) or ("".join(ch for ch in text if ch.isdigit()) or None)


class Frame:
    """The records the resolver knows, by position. Positions never move; a removed record stays as
    a dead row so that positions (and the index built on them) stay valid."""

    def __init__(self, views: Mapping[str, Iterable[str]]) -> None:
        self.fields = tuple(views)
        self.views = {f: tuple(sorted({"text", *v})) for f, v in views.items()}
        self.text = {f: Vocab() for f in self.fields}
        self.codes = {f: GrowArray(np.int32, -1) for f in self.fields}
        self.view_vocab = {(f, v): Vocab() for f in self.fields for v in self.views[f] if v != "text"}
        self.view_map = {key: GrowArray(np.int32, -1) for key in self.view_vocab}
        self.keys: list[Any] = []
        self.position: dict[Any, int] = {}
        self.source = GrowArray(np.int32)
        self.alive = GrowArray(np.bool_, False)
        self._hashes: dict[tuple[str, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, keys: list[Any], columns: Mapping[str, list[Any]], source: np.ndarray | None = None) -> np.ndarray:
        """Add records (``columns``: field -> prepared values, one per key). Returns their positions."""
        start = len(self.keys)
        n = len(keys)
        for key in keys:
            if key in self.position:
                raise ValueError(f"record {key!r} is already in the frame")
        for i, key in enumerate(keys):
            self.position[key] = start + i
        self.keys.extend(keys)
        for f in self.fields:
            values = columns.get(f)
            codes = self.text[f].encode(values if values is not None else [None] * n)
            self.codes[f].extend(codes)
            self._extend_views(f)
        self.source.extend(np.zeros(n, np.int32) if source is None else np.asarray(source, np.int32))
        self.alive.extend(np.ones(n, np.bool_))
        return np.arange(start, start + n)

    def set_values(self, pos: np.ndarray, columns: Mapping[str, list[Any]]) -> None:
        """Replace the values of existing records (a source record changed)."""
        for f in self.fields:
            old = self.codes[f].a[pos]
            self.text[f].add_counts(old, -1)
            values = columns.get(f)
            self.codes[f].a[pos] = self.text[f].encode(values if values is not None else [None] * len(pos))
            self._extend_views(f)

    def kill(self, pos: np.ndarray) -> None:
        for f in self.fields:
            self.text[f].add_counts(self.codes[f].a[pos], -1)
            self.codes[f].a[pos] = -1
        self.alive.a[pos] = False

    def _extend_views(self, f: str) -> None:
        vocab = self.text[f]
        for view in self.views[f]:
            if view == "text":
                continue
            mapping = self.view_map[(f, view)]
            if mapping.n < len(vocab):
                fn = VIEWS[view]
                new = vocab.values[mapping.n :]
                mapping.extend(self.view_vocab[(f, view)].encode((fn(v) for v in new), count=False))

    def vcodes(self, f: str, view: str, pos: np.ndarray) -> np.ndarray:
        """Codes of ``view`` of field ``f`` at positions (−1 where missing)."""
        codes = self.codes[f].a[pos]
        if view == "text":
            return codes
        mapped = self.view_map[(f, view)].a
        if not len(mapped):
            return np.full(len(pos), -1, dtype=np.int32)
        return np.where(codes >= 0, mapped[np.maximum(codes, 0)], -1)

    def vhash(self, f: str, view: str, pos: np.ndarray) -> np.ndarray:
        """A hash of the view's value at positions (0 where missing), comparable across fields."""
        vocab = self.text[f] if view == "text" else self.view_vocab[(f, view)]
        cached = self._hashes.get((f, view))
        if cached is None or len(cached) < len(vocab):
            start = 0 if cached is None else len(cached)
            new = np.array([(hash(v) & 0x7FFFFFFFFFFFFFFF) | 1 for v in vocab.values[start:]], dtype=np.int64)
            cached = new if cached is None else np.concatenate([cached, new])
            self._hashes[(f, view)] = cached
        codes = self.vcodes(f, view, pos)
        if not len(cached):
            return np.zeros(len(pos), dtype=np.int64)
        return np.where(codes >= 0, cached[np.maximum(codes, 0)], 0)

    def vvalues(self, f: str, view: str) -> np.ndarray:
        return self.text[f].array() if view == "text" else self.view_vocab[(f, view)].array()

    def record(self, pos: int) -> dict[str, Any]:
        """The prepared values of one record, for explanations."""
        out = {}
        for f in self.fields:
            code = self.codes[f].a[pos]
            if code >= 0:
                out[f] = self.text[f].values[code]
        return out
