"""Clustering that does not chain unrelated people through one bad link.

Within one connected component of the match graph, links are taken strongest first (Kruskal order,
ties broken by record key so the result never depends on arrival order). Two groups join only if
no steward said two of their records are different people (cannot-link) and no pair across them is
a conflict: a pair the model finds this unlikely (settings ``thresholds.conflict``) — two birthdays
years apart, two different ID numbers. A steward's must-link joins records before anything else.

The result of a component depends only on the component: incremental runs that re-cluster the
components they touch give the same clusters as a full run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

PairWeights = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Effective match weights of pairs of positions (deterministic rules included)."""


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes and edges (a, b): a label per node (its smallest node)."""
    labels = np.arange(n)
    if not len(a):
        return labels
    while True:  # pointer jumping over edge lists: a few passes for the small components of people
        la, lb = labels[a], labels[b]
        low = np.minimum(la, lb)
        changed = (la != low) | (lb != low)
        if not changed.any():
            break
        np.minimum.at(labels, la, low)
        np.minimum.at(labels, lb, low)
        labels = labels[labels]
        while True:
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt
    return labels


class _Groups:
    def __init__(self, nodes: Iterable[int]) -> None:
        self.parent = {n: n for n in nodes}
        self.members = {n: [n] for n in self.parent}

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))
        return ra


def cluster_component(
    nodes: Sequence[int],
    edges: Sequence[tuple[float, int, int]],
    *,
    order_key: Callable[[int], object],
    weights: PairWeights,
    conflict: float,
    must: dict[int, set[int]],
    cannot: dict[int, set[int]],
    known: dict[tuple[int, int], float] | None = None,
) -> list[list[int]]:
    """Clusters of one component. ``edges``: (weight, a, b) of links at or above the merge weight."""
    groups = _Groups(nodes)
    known = dict(known or {})

    def cross_ok(ra: int, rb: int) -> bool:
        left, right = groups.members[ra], groups.members[rb]
        for x in left:
            bad = cannot.get(x)
            if bad and any(y in bad for y in right):
                return False
        xs = np.repeat(np.array(left), len(right))
        ys = np.tile(np.array(right), len(left))
        lo, hi = np.minimum(xs, ys), np.maximum(xs, ys)
        missing = [i for i, k in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)) if k not in known]
        if missing:
            idx = np.array(missing)
            computed = weights(lo[idx], hi[idx])
            for i, w in zip(missing, computed.tolist(), strict=True):
                known[(int(lo[i]), int(hi[i]))] = w
        return all(known[k] > conflict for k in zip(lo.tolist(), hi.tolist(), strict=True))

    for x in sorted(must, key=order_key):  # people outrank the algorithm: must-links first, always
        if x in groups.parent:
            for y in sorted(must[x], key=order_key):
                if y in groups.parent:
                    groups.union(x, y)
    ordered = sorted(edges, key=lambda e: (-e[0], *sorted((order_key(e[1]), order_key(e[2])))))
    for _, a, b in ordered:
        ra, rb = groups.find(a), groups.find(b)
        if ra != rb and cross_ok(ra, rb):
            groups.union(ra, rb)
    return [sorted(m) for m in groups.members.values()]
