"""Comparison levels, evaluated for many pairs at once.

A comparison is an ordered list of levels (settings.yaml); a pair's level on it is the first level
whose condition holds, after the implicit "missing" level 0. Each level kind is one small function
over numpy arrays of codes, registered by name in ``LEVEL_FUNCTIONS``: add a kind there and in
``settings.LEVEL_KINDS``. String similarities are computed once per distinct pair of values (names
repeat), with rapidfuzz.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein

from hub.resolution.frame import Frame
from hub.resolution.settings import Comparison, Level, Settings

MISSING = 0


def _distinct_pairs(ca: np.ndarray, cb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (code a, code b) pairs, order-free, and the inverse index back to the input pairs."""
    lo, hi = np.minimum(ca, cb).astype(np.int64), np.maximum(ca, cb).astype(np.int64)
    combined = lo * (int(hi.max(initial=0)) + 1) + hi
    uniq, inverse = np.unique(combined, return_inverse=True)
    first = np.zeros(len(uniq), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(combined))[::-1]
    return lo[first], hi[first], inverse


def _string_metric(scorer: Any) -> Callable[[Frame, Level, str, np.ndarray, np.ndarray], np.ndarray]:
    def metric(frame: Frame, level: Level, field: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ca, cb = frame.vcodes(field, level.view, a), frame.vcodes(field, level.view, b)
        ok = (ca >= 0) & (cb >= 0)
        out = np.full(len(a), np.nan)
        if not ok.any():
            return out
        lo, hi, inverse = _distinct_pairs(ca[ok], cb[ok])
        values = frame.vvalues(field, level.view)
        scores = process.cpdist(list(values[lo]), list(values[hi]), scorer=scorer, workers=1)
        out[ok] = np.asarray(scores, dtype=np.float64)[inverse]
        return out

    return metric


_SIMILARITY = {
    "jaro_winkler": _string_metric(JaroWinkler.similarity),
    "levenshtein": _string_metric(Levenshtein.distance),
    "damerau_levenshtein": _string_metric(DamerauLevenshtein.distance),
}


def _exact(frame: Frame, level: Level, field: str, a: np.ndarray, b: np.ndarray, cache: dict) -> np.ndarray:
    ca, cb = frame.vcodes(field, level.view, a), frame.vcodes(field, level.view, b)
    return (ca == cb) & (ca >= 0)


def _swapped(frame: Frame, level: Level, field: str, a: np.ndarray, b: np.ndarray, cache: dict) -> np.ndarray:
    other = level.other_field or field
    fa, fb = frame.vhash(field, "text", a), frame.vhash(field, "text", b)
    oa, ob = frame.vhash(other, "text", a), frame.vhash(other, "text", b)
    return (fa == ob) & (oa == fb) & (fa != 0) & (fb != 0)


def _same_as(frame: Frame, level: Level, field: str, a: np.ndarray, b: np.ndarray, cache: dict) -> np.ndarray:
    other = level.other_view or "text"
    va, vb = frame.vhash(field, level.view, a), frame.vhash(field, level.view, b)
    oa, ob = frame.vhash(field, other, a), frame.vhash(field, other, b)
    return ((va == ob) & (va != 0)) | ((oa == vb) & (vb != 0))


def _within_days(frame: Frame, level: Level, field: str, a: np.ndarray, b: np.ndarray, cache: dict) -> np.ndarray:
    ca, cb = frame.vcodes(field, "days", a), frame.vcodes(field, "days", b)
    values = frame.vvalues(field, "days")
    ok = (ca >= 0) & (cb >= 0)
    out = np.zeros(len(a), dtype=bool)
    if ok.any():
        da = values[ca[ok]].astype(np.int64)
        db = values[cb[ok]].astype(np.int64)
        out[ok] = np.abs(da - db) <= (level.threshold or 0)
    return out


# String-similarity kinds live in _SIMILARITY (their scores are shared between a comparison's levels).
LEVEL_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "exact": _exact,
    "swapped": _swapped,
    "same_as": _same_as,
    "within_days": _within_days,
}


def comparison_levels(frame: Frame, comparison: Comparison, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The level (0 = missing, 1.. = the comparison's levels in order) of each pair on one comparison."""
    ta, tb = frame.codes[comparison.field].a[a], frame.codes[comparison.field].a[b]
    out = np.full(len(a), -1, dtype=np.int8)
    out[(ta < 0) | (tb < 0)] = MISSING
    undecided = np.nonzero(out < 0)[0]
    cache: dict[Any, Any] = {}
    for k, level in enumerate(comparison.levels, start=1):
        if not len(undecided):
            break
        if level.kind == "else":
            out[undecided] = k
            break
        if level.kind in _SIMILARITY:
            key = (level.kind, level.view)
            if key not in cache:
                cache[key] = (
                    undecided,
                    _SIMILARITY[level.kind](frame, level, comparison.field, a[undecided], b[undecided]),
                )
            computed_for, scores = cache[key]
            # ``undecided`` only shrinks, so it is a sorted subset of ``computed_for``
            scores = scores[np.searchsorted(computed_for, undecided)]
            with np.errstate(invalid="ignore"):
                hit = scores >= level.threshold if level.kind == "jaro_winkler" else scores <= level.threshold
        else:
            hit = LEVEL_FUNCTIONS[level.kind](frame, level, comparison.field, a[undecided], b[undecided], cache)
        out[undecided[hit]] = k
        undecided = undecided[~hit]
    return out


def levels_matrix(frame: Frame, settings: Settings, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Levels of each pair on each comparison: an int8 array of shape (pairs, comparisons)."""
    out = np.zeros((len(a), len(settings.comparisons)), dtype=np.int8)
    for j, comparison in enumerate(settings.comparisons):
        out[:, j] = comparison_levels(frame, comparison, a, b)
    return out
