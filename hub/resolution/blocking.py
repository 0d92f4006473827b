"""Candidate pairs from blocking rules (settings.yaml): two records are compared when they share the
key of at least one rule. Each rule keeps a sorted array of (key, position) for the records it has
seen, plus a small dict of recent additions, so a new record finds its candidates with a binary
search, and a full run is one vectorised sort per rule.

A key held by more than the rule's ``max_block_size`` records generates no pairs: that bounds the
pairs per record, so the work stays near-linear in the number of records.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from hub.resolution.frame import Frame
from hub.resolution.settings import BlockingRule

_MIX = np.uint64(0x9E3779B97F4A7C15)


class _ValueHashes:
    """int64 hashes of a view's distinct values, by code, extended as the vocabulary grows."""

    def __init__(self) -> None:
        self.hashes = np.zeros(0, dtype=np.uint64)

    def get(self, values: list) -> np.ndarray:
        if len(self.hashes) < len(values):
            new = np.array([hash(v) & 0x7FFFFFFFFFFFFFFF for v in values[len(self.hashes) :]], dtype=np.uint64)
            self.hashes = np.concatenate([self.hashes, new])
        return self.hashes


class BlockIndex:
    """One blocking rule's keys for every record, and the records by key."""

    REBUILD_AFTER = 50_000

    def __init__(self, rule: BlockingRule, frame: Frame) -> None:
        self.rule, self.frame = rule, frame
        self._keys = np.zeros(0, dtype=np.int64)
        self.keys = self._keys  # by position; -1: no key (a view of the first n of ``_keys``)
        self.base_keys = np.zeros(0, dtype=np.int64)
        self.base_pos = np.zeros(0, dtype=np.int64)
        self.stale: dict[int, int] = defaultdict(int)  # key -> base entries that no longer hold it
        self.delta: dict[int, list[int]] = defaultdict(list)
        self.delta_size = 0
        self._hashes = {(p.field, p.view): _ValueHashes() for p in rule.keys}

    @property
    def cap(self) -> int:
        return self.rule.max_block_size

    def compute(self, pos: np.ndarray) -> np.ndarray:
        parts = []
        valid = np.ones(len(pos), dtype=bool)
        for part in self.rule.keys:
            codes = self.frame.vcodes(part.field, part.view, pos)
            vocab = (
                self.frame.text[part.field] if part.view == "text" else self.frame.view_vocab[(part.field, part.view)]
            )
            hashes = self._hashes[(part.field, part.view)].get(vocab.values)
            valid &= codes >= 0
            parts.append(hashes[np.maximum(codes, 0)] if len(hashes) else np.zeros(len(pos), np.uint64))
        if self.rule.unordered and len(parts) == 2:
            parts = [np.minimum(parts[0], parts[1]), np.maximum(parts[0], parts[1])]
        key = np.zeros(len(pos), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i, h in enumerate(parts):
                key = (key ^ (h + np.uint64(i + 1) * _MIX)) * _MIX
        out = (key >> np.uint64(1)).astype(np.int64)
        out[~valid] = -1
        return out

    def grow(self, n: int) -> None:
        if len(self._keys) < n:  # capacity doubles: appending one record at a time stays cheap
            grown = np.full(max(n, 2 * len(self._keys), 16), -1, dtype=np.int64)
            grown[: len(self._keys)] = self._keys
            self._keys = grown
        self.keys = self._keys[: max(n, len(self.keys))]

    # ----------------------------------------------------------------------------- maintenance
    def assign(self, pos: np.ndarray, keys: np.ndarray) -> None:
        """Record that positions now hold ``keys`` (new records, changed records, removals with -1)."""
        self.grow(int(pos.max(initial=-1)) + 1)
        old = self.keys[pos]
        changed = old != keys
        pos, keys, old = pos[changed], keys[changed], old[changed]
        if not len(pos):
            return
        if len(pos) > 1000 and not (old >= 0).any() and len(self.base_keys):
            self.keys[pos] = keys  # new records only: merge them into the sorted arrays, no re-sort
            fresh = keys >= 0
            order = np.argsort(keys[fresh], kind="stable")
            add_keys, add_pos = keys[fresh][order], pos[fresh][order]
            at = np.searchsorted(self.base_keys, add_keys, "right")
            self.base_keys = np.insert(self.base_keys, at, add_keys)
            self.base_pos = np.insert(self.base_pos, at, add_pos)
            return
        if len(pos) > 1000 or self.delta_size + len(pos) > self.REBUILD_AFTER:
            self.keys[pos] = keys
            self._rebuild()
            return
        in_base = self._in_base(pos, old)
        for p, k, was_base in zip(pos.tolist(), old.tolist(), in_base.tolist(), strict=True):
            if k < 0:
                continue
            if was_base:
                self.stale[k] += 1
            else:
                members = self.delta.get(k)
                if members is not None and p in members:
                    members.remove(p)
                    self.delta_size -= 1
        self.keys[pos] = keys
        for p, k in zip(pos.tolist(), keys.tolist(), strict=True):
            if k >= 0:
                self.delta[k].append(p)
                self.delta_size += 1

    def _in_base(self, pos: np.ndarray, keys: np.ndarray) -> np.ndarray:
        if not len(self.base_keys):
            return np.zeros(len(pos), dtype=bool)
        left = np.searchsorted(self.base_keys, keys, "left")
        right = np.searchsorted(self.base_keys, keys, "right")
        out = np.zeros(len(pos), dtype=bool)
        for i in np.nonzero(right > left)[0]:
            out[i] = pos[i] in self.base_pos[left[i] : right[i]]
        return out

    def _rebuild(self) -> None:
        live = np.nonzero(self.keys >= 0)[0]
        order = np.argsort(self.keys[live], kind="stable")
        self.base_keys = self.keys[live][order]
        self.base_pos = live[order]
        self.stale.clear()
        self.delta.clear()
        self.delta_size = 0

    # ----------------------------------------------------------------------------- lookups
    def counts(self, keys: np.ndarray) -> np.ndarray:
        """Live records holding each key."""
        out = np.searchsorted(self.base_keys, keys, "right") - np.searchsorted(self.base_keys, keys, "left")
        if self.stale or self.delta:
            out = out + np.array(
                [len(self.delta.get(k, ())) - self.stale.get(k, 0) for k in keys.tolist()], dtype=np.int64
            )
        return out

    def members(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``keys``, position) for every live record holding one of ``keys``."""
        left = np.searchsorted(self.base_keys, keys, "left")
        right = np.searchsorted(self.base_keys, keys, "right")
        sizes = right - left
        which = np.repeat(np.arange(len(keys)), sizes)
        offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        pos = self.base_pos[np.repeat(left, sizes) + offsets]
        if self.stale:
            keep = self.keys[pos] == keys[which]
            which, pos = which[keep], pos[keep]
        if self.delta:
            extra_w, extra_p = [], []
            for i, k in enumerate(keys.tolist()):
                for p in self.delta.get(k, ()):
                    extra_w.append(i)
                    extra_p.append(p)
            if extra_w:
                which = np.concatenate([which, np.array(extra_w, dtype=np.int64)])
                pos = np.concatenate([pos, np.array(extra_p, dtype=np.int64)])
        return which, pos


def pairs_in_groups(group: np.ndarray, pos: np.ndarray, fresh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs within each group that involve at least one ``fresh`` member. ``group`` labels each
    (position, fresh) entry; the output pairs are (smaller position, larger position)."""
    if not len(group):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    order = np.lexsort((~fresh, group))  # within a group, fresh members first
    group, pos, fresh = group[order], pos[order], fresh[order]
    starts = np.r_[0, np.nonzero(np.diff(group))[0] + 1]
    sizes = np.diff(np.r_[starts, len(group)])
    run = np.repeat(np.arange(len(starts)), sizes)
    local = np.arange(len(group)) - starts[run]
    partners = np.where(fresh, sizes[run] - 1 - local, 0)
    left = np.repeat(np.arange(len(group)), partners)
    offsets = np.arange(partners.sum()) - np.repeat(np.cumsum(partners) - partners, partners) + 1
    right = left + offsets
    a, b = pos[left], pos[right]
    return np.minimum(a, b), np.maximum(a, b)


def candidate_pairs(
    blocks: list[BlockIndex], batch: np.ndarray, in_batch: np.ndarray, *, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b, by position) with at least one record in ``batch``, from every rule, each pair
    once; and for each the first rule that found it. ``in_batch`` is a mask over all positions.
    With ``source`` only pairs across sources are kept (linking two files)."""
    all_a, all_b, all_rule = [], [], []
    for r, block in enumerate(blocks):
        keys = block.keys[batch]
        ok = keys >= 0
        bpos, bkeys = batch[ok], keys[ok]
        if not len(bkeys):
            continue
        uniq, inverse, batch_counts = np.unique(bkeys, return_inverse=True, return_counts=True)
        which, epos = block.members(uniq)
        outside = ~in_batch[epos]
        which, epos = which[outside], epos[outside]
        total = batch_counts + np.bincount(which, minlength=len(uniq))
        small = (total >= 2) & (total <= block.cap)
        keep_b = small[inverse]
        keep_e = small[which]
        group = np.concatenate([inverse[keep_b], which[keep_e]])
        pos = np.concatenate([bpos[keep_b], epos[keep_e]])
        fresh = np.concatenate([np.ones(keep_b.sum(), bool), np.zeros(keep_e.sum(), bool)])
        a, b = pairs_in_groups(group, pos, fresh)
        if source is not None and len(a):
            across = source[a] != source[b]
            a, b = a[across], b[across]
        all_a.append(a)
        all_b.append(b)
        all_rule.append(np.full(len(a), r, dtype=np.int16))
    if not all_a:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.int16)
    a, b, rule = np.concatenate(all_a), np.concatenate(all_b), np.concatenate(all_rule)
    n = int(max(a.max(initial=0), b.max(initial=0))) + 1
    combined = a * n + b
    _, first = np.unique(combined, return_index=True)
    return a[first], b[first], rule[first]
