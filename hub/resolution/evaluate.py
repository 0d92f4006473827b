"""Accuracy against ground truth: pairwise precision, recall and F1 over the pairs a clustering puts
together, and cluster-level F1 (the share of clusters reproduced exactly)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class Accuracy:
    precision: float
    recall: float
    f1: float
    cluster_precision: float
    cluster_recall: float
    cluster_f1: float
    true_pairs: int
    predicted_pairs: int

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _groups(labels: Mapping[Hashable, Hashable]) -> list[frozenset[Hashable]]:
    out: dict[Hashable, set[Hashable]] = defaultdict(set)
    for record, label in labels.items():
        out[label].add(record)
    return [frozenset(g) for g in out.values()]


def _pairs(groups: Iterable[frozenset[Hashable]], side: Mapping[Hashable, int] | None) -> set[tuple]:
    out = set()
    for g in groups:
        for a, b in combinations(sorted(g, key=str), 2):
            if side is None or side[a] != side[b]:
                out.add((a, b))
    return out


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def accuracy(
    predicted: Mapping[Hashable, Hashable],
    truth: Mapping[Hashable, Hashable],
    *,
    side: Mapping[Hashable, int] | None = None,
) -> Accuracy:
    """Both mappings: record -> cluster label, over the same records. With ``side`` (record -> file),
    only pairs across files count (linking two files)."""
    pred_groups, true_groups = _groups(predicted), _groups(truth)
    pred_pairs, true_pairs = _pairs(pred_groups, side), _pairs(true_groups, side)
    hit = len(pred_pairs & true_pairs)
    precision = hit / len(pred_pairs) if pred_pairs else 1.0
    recall = hit / len(true_pairs) if true_pairs else 1.0
    exact = len(set(pred_groups) & set(true_groups))
    cp, cr = exact / len(pred_groups), exact / len(true_groups)
    return Accuracy(precision, recall, _f1(precision, recall), cp, cr, _f1(cp, cr), len(true_pairs), len(pred_pairs))
