"""The resolver: records in, clusters out, incrementally.

``Resolver.add`` takes new and changed records and re-decides only what they can affect:

1. the records themselves, and any record whose pairs change because of them: holders of a value
   whose term-frequency step changed, members of a block that grew past (or fell under) its size
   limit or a deterministic rule's holder limit — these are the *dirty* records;
2. the candidate pairs of dirty records are generated and scored again; their old links are dropped;
3. every component of the match graph that contains a dirty record or one of its old neighbours is
   clustered again, from scratch (cluster.py).

Scores depend only on the records, the model and the counts' steps; clusters depend only on their
component. So any sequence of ``add`` calls ends in the same clusters as one ``add`` of everything
(tests/test_resolution_incremental.py checks it on shuffled arrivals). A full run is that one add.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hub.resolution.blocking import BlockIndex, candidate_pairs
from hub.resolution.cluster import cluster_component, components
from hub.resolution.comparisons import levels_matrix
from hub.resolution.frame import Frame, join_name, prepare_column, split_name
from hub.resolution.model import Model, compute_tf_reference, estimate_u, expectation_maximisation, tf_bucket
from hub.resolution.settings import Settings, load_settings

FULL_PAIRS_LIMIT = 40
"""Components up to this size have every pair scored once for the conflict checks; larger ones
score pairs as merges need them."""
DETERMINISTIC_MARGIN = 1.0


@dataclass
class Link:
    """Why two records are linked: the deterministic rule, or the model's weight."""

    a: Any
    b: Any
    weight: float
    rule: str


@dataclass
class Update:
    """What one ``add`` changed."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    dirty: int = 0  # records whose pairs were generated and scored again
    pairs: int = 0  # candidate pairs scored
    region: int = 0  # records clustered again
    moved: list[Any] = field(default_factory=list)  # keys whose cluster changed
    touched: list[Any] = field(default_factory=list)  # keys clustered again (not filled by a full run)


def _views(settings: Settings) -> dict[str, set[str]]:
    views: dict[str, set[str]] = defaultdict(set)
    for comparison in settings.comparisons:
        views[comparison.field].add("text")
        for level in comparison.levels:
            views[comparison.field].add(level.view)
            if level.other_view:
                views[comparison.field].add(level.other_view)
            if level.other_field:
                views[level.other_field].add("text")
            if level.kind == "within_days":
                views[comparison.field].add("days")
    for rule in settings.blocking:
        for part in rule.keys:
            views[part.field].add(part.view)
    for det in settings.deterministic:
        for f in det.fields:
            views[f].add("text")
    return views


class Resolver:
    """An incremental resolver over records identified by keys (staged member ids, CSV row ids)."""

    def __init__(self, settings: Settings | None = None, model: Model | None = None, *, link: bool = False) -> None:
        self.settings = settings or load_settings()
        self.model = model.fit_settings(self.settings) if model else Model.from_settings(self.settings)
        self.link = link
        self.frame = Frame(_views(self.settings))
        self.blocks = [BlockIndex(rule, self.frame) for rule in self.settings.blocking]
        self.adj: dict[int, dict[int, float]] = defaultdict(dict)  # links at or above the review weight
        self.det_rule: dict[tuple[int, int], int] = {}  # pair -> deterministic rule index
        self.label = np.zeros(0, dtype=np.int64)  # cluster of each position: its smallest position
        self.must: dict[int, set[int]] = defaultdict(set)
        self.cannot: dict[int, set[int]] = defaultdict(set)
        self._tf: dict[str, np.ndarray] | None = None
        self._levels_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.train_seconds = 0.0
        self._edge_dirty: set[int] = set()  # records whose kept links must be re-scored
        self._det = self._deterministic_plan()
        self._refresh_thresholds()

    # ------------------------------------------------------------------------------------ set-up
    def _refresh_thresholds(self) -> None:
        self.merge_w, self.review_w, self.conflict_w = self.model.thresholds(self.settings.thresholds)
        self._tf = None

    def _deterministic_plan(self) -> list[tuple[int, int | None, list[tuple[int, set[int]]]]]:
        """Per deterministic rule: (its block index, max holders, [(comparison, vetoing levels)])."""
        plan = []
        for rule in self.settings.deterministic:
            block = next(
                i for i, b in enumerate(self.settings.blocking) if tuple(k.field for k in b.keys) == rule.fields
            )
            unless = []
            for comp_field, labels in rule.unless.items():
                j = next(i for i, c in enumerate(self.settings.comparisons) if c.field == comp_field)
                unless.append((j, {self.settings.comparisons[j].level_labels.index(lb) for lb in labels}))
            plan.append((block, rule.max_holders, unless))
        return plan

    @property
    def tf(self) -> dict[str, np.ndarray]:
        if self._tf is None:
            self._tf = self.model.tf_adjustments(self.frame, self.settings)
        return self._tf

    def columns_of(self, records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Prepared columns of records given as dicts of canonical fields. A missing ``full_name`` is
        made from the family and given names; missing family and given names from ``full_name``."""
        fields = self.frame.fields
        columns = {f: prepare_column(f, [r.get(f) for r in records]) for f in fields}
        if {"full_name", "family_name", "given_name"} <= set(fields):
            full, family, given = columns["full_name"], columns["family_name"], columns["given_name"]
            for i in range(len(records)):
                if full[i] is None and (family[i] or given[i]):
                    full[i] = join_name(family[i], given[i])
                elif full[i] is not None and family[i] is None and given[i] is None:
                    family[i], given[i] = split_name(full[i])
        return columns

    # ------------------------------------------------------------------------------------ public
    def add(
        self,
        keys: Sequence[Any],
        records: Sequence[Mapping[str, Any]] | None = None,
        *,
        columns: Mapping[str, list[Any]] | None = None,
        source: Sequence[int] | None = None,
        train: bool = False,
        labels: Iterable[tuple[Any, Any, bool]] = (),
    ) -> Update:
        """Add new records and replace changed ones (by key); re-decide what they affect.

        ``train``: estimate the model from all records first (then everything is matched again).
        ``labels``: steward decisions (key a, key b, same person?) that EM takes as known."""
        if columns is None:
            columns = self.columns_of(records or [])
        update = Update()
        keys = list(keys)
        position = self.frame.position
        new_idx = [i for i, k in enumerate(keys) if k not in position]
        old_idx = [i for i, k in enumerate(keys) if k in position]
        first_load = len(self.frame) == 0
        changed_pos, changed_idx = [], []
        for i in old_idx:
            p = position[keys[i]]
            current = self.frame.record(p)
            if not self.frame.alive.a[p] or any(current.get(f) != columns[f][i] for f in self.frame.fields):
                changed_pos.append(p)
                changed_idx.append(i)
        update.unchanged = len(old_idx) - len(changed_idx)
        touched_old = {f: self.frame.codes[f].a[np.array(changed_pos, dtype=np.int64)] for f in self.frame.fields}
        before_counts = self._block_counts_before(np.array(changed_pos, dtype=np.int64))
        if changed_pos:
            cpos = np.array(changed_pos, dtype=np.int64)
            self.frame.set_values(cpos, {f: [columns[f][i] for i in changed_idx] for f in self.frame.fields})
            self.frame.alive.a[cpos] = True
        if new_idx:
            sub = {f: [columns[f][i] for i in new_idx] for f in self.frame.fields}
            src = None if source is None else np.array([source[i] for i in new_idx])
            self.frame.append([keys[i] for i in new_idx], sub, src)
        update.added, update.changed = len(new_idx), len(changed_pos)
        n = len(self.frame)
        if len(self.label) < n:
            self.label = np.concatenate([self.label, np.arange(len(self.label), n)])
        batch = np.array(changed_pos + [position[keys[i]] for i in new_idx], dtype=np.int64)
        if not len(batch):
            return update
        dirty = self._reindex(batch, touched_old, before_counts)
        if train:
            self.train(labels=labels)
            dirty = np.nonzero(self.frame.alive.a)[0]
        self._rematch(dirty, update, full=first_load or train)
        return update

    def remove(self, keys: Iterable[Any]) -> Update:
        """Forget records (a source deleted them); the clusters they held together are re-decided."""
        pos = np.array([self.frame.position[k] for k in keys if k in self.frame.position], dtype=np.int64)
        update = Update()
        if not len(pos):
            return update
        touched_old = {f: self.frame.codes[f].a[pos] for f in self.frame.fields}
        before_counts = self._block_counts_before(pos)
        self.frame.kill(pos)
        dirty = self._reindex(pos, touched_old, before_counts)
        self._rematch(dirty, update, full=False)
        return update

    def constrain(self, a: Any, b: Any, *, same: bool) -> Update:
        """A steward's decision about two records: same person (must-link) or not (cannot-link)."""
        pa, pb = self.frame.position[a], self.frame.position[b]
        (self.must if same else self.cannot)[pa].add(pb)
        (self.must if same else self.cannot)[pb].add(pa)
        (self.cannot if same else self.must)[pa].discard(pb)
        (self.cannot if same else self.must)[pb].discard(pa)
        update = Update()
        self._rematch(np.array([pa, pb], dtype=np.int64), update, full=False, rescore=False)
        return update

    def unconstrain(self, a: Any, b: Any) -> Update:
        """Withdraw a steward's decision about two records; the resolver decides them again."""
        pa, pb = self.frame.position[a], self.frame.position[b]
        for table in (self.must, self.cannot):
            table[pa].discard(pb)
            table[pb].discard(pa)
        update = Update()
        self._rematch(np.array([pa, pb], dtype=np.int64), update, full=False, rescore=False)
        return update

    def clusters(self) -> dict[Any, Any]:
        """key -> cluster id (the key of the cluster's earliest-added record) for live records.
        Which record names a cluster depends on arrival order; which records share one does not."""
        keys = self.frame.keys
        alive = self.frame.alive.a
        return {keys[p]: keys[int(self.label[p])] for p in np.nonzero(alive)[0].tolist()}

    def partition(self) -> set[frozenset[Any]]:
        groups: dict[int, set[Any]] = defaultdict(set)
        keys = self.frame.keys
        for p in np.nonzero(self.frame.alive.a)[0].tolist():
            groups[int(self.label[p])].add(keys[p])
        return {frozenset(g) for g in groups.values()}

    def cluster_members(self, key: Any) -> list[Any]:
        p = self.frame.position[key]
        mates = np.nonzero((self.label == self.label[p]) & self.frame.alive.a)[0]
        return [self.frame.keys[q] for q in mates.tolist()]

    def links(self, key: Any) -> list[Link]:
        """The scored links of one record at or above the review weight."""
        p = self.frame.position[key]
        out = []
        for q, w in sorted(self.adj.get(p, {}).items(), key=lambda kv: -kv[1]):
            rule = self.det_rule.get((min(p, q), max(p, q)))
            out.append(
                Link(
                    key, self.frame.keys[q], w, self.settings.deterministic[rule].name if rule is not None else "score"
                )
            )
        return out

    def explain(self, a: Any, b: Any) -> dict[str, Any]:
        """Per-comparison evidence for a pair, with the deterministic rule that linked it, if any."""
        return self.explain_many([(a, b)])[0]

    def explain_many(self, pairs: Sequence[tuple[Any, Any]]) -> list[dict[str, Any]]:
        """``explain`` for many pairs, scored in one vectorised pass: a run that writes the evidence
        of thousands of links or review items spent most of its time scoring them one at a time."""
        if not pairs:
            return []
        position = self.frame.position
        pa = np.array([position[a] for a, _ in pairs], dtype=np.int64)
        pb = np.array([position[b] for _, b in pairs], dtype=np.int64)
        found = self.model.explain_many(self.frame, self.settings, pa, pb, self.tf)
        weights, rules = self._effective(np.minimum(pa, pb), np.maximum(pa, pb))
        for i, evidence in enumerate(found):
            rule = int(rules[i])
            evidence["rule"] = self.settings.deterministic[rule].name if rule >= 0 else "score"
            evidence["effective_weight"] = round(float(weights[i]), 3)
            evidence["probability"] = round(float(self.model.probability(weights[i])), 6)
        return found

    def review_pairs(self, involving: Iterable[Any] | None = None) -> list[tuple[Any, Any, float]]:
        """Pairs in different clusters whose weight is at or above the review weight, strongest first
        (excluding pairs a steward already declared different); only those with a record among
        ``involving`` when given."""
        out = []
        keys = self.frame.keys
        at: set[int] | None = None
        if involving is None:
            rows: Iterable[tuple[int, dict[int, float]]] = self.adj.items()
        else:
            position = self.frame.position
            at = {position[k] for k in involving if k in position}
            rows = ((p, self.adj[p]) for p in sorted(at) if p in self.adj)
        for p, nbrs in rows:
            for q, w in nbrs.items():
                if q < p and (at is None or q in at):  # the pair is met from q's side (adjacency is symmetric)
                    continue
                if self.label[p] == self.label[q] or q in self.cannot.get(p, ()):
                    continue
                out.append((keys[min(p, q)], keys[max(p, q)], w))
        return sorted(out, key=lambda t: (-t[2], str(t[0]), str(t[1])))

    def stats(self) -> dict[str, Any]:
        alive = int(self.frame.alive.a.sum())
        links = sum(len(v) for v in self.adj.values()) // 2
        return {"records": alive, "links": links, "clusters": len(self.partition())}

    # ------------------------------------------------------------------------------------ training
    def train(self, *, labels: Iterable[tuple[Any, Any, bool]] = (), seed: int = 0) -> Model:
        """Estimate u from random pairs, then m, u and the prior by EM over all candidate pairs.

        With fewer candidate pairs than ``training.min_pairs`` the data cannot say much: the model
        keeps its starting values (a small sample would make every name look rare)."""
        started = time.perf_counter()
        alive = np.nonzero(self.frame.alive.a)[0]
        mask = np.zeros(len(self.frame), dtype=bool)
        mask[alive] = True
        a, b, _ = candidate_pairs(self.blocks, alive, mask, source=self._source())
        if len(a) < self.settings.training.min_pairs:
            self.train_seconds = time.perf_counter() - started
            return self.model
        model = Model.from_settings(self.settings, prior=self.model.prior)
        estimate_u(self.frame, self.settings, model, alive, pairs=self.settings.training.u_sample_pairs, seed=seed)
        compute_tf_reference(self.frame, self.settings, model)
        known = {}
        for ka, kb, same in labels:
            pa, pb = self.frame.position.get(ka), self.frame.position.get(kb)
            if pa is not None and pb is not None:
                known[(min(pa, pb), max(pa, pb))] = 1 if same else 0
        extra = list(known)
        if extra:
            ea, eb = np.array([k[0] for k in extra]), np.array([k[1] for k in extra])
            a, b = np.concatenate([a, ea]), np.concatenate([b, eb])
            combined = a * len(self.frame) + b
            _, first = np.unique(combined, return_index=True)
            a, b = a[first], b[first]
        levels = levels_matrix(self.frame, self.settings, a, b)
        if not extra:  # the same pairs the full run scores next: keep their levels
            self._levels_cache = (a, b, levels)
        lab = np.array([known.get((x, y), -1) for x, y in zip(a.tolist(), b.tolist(), strict=True)], np.int8)
        expectation_maximisation(model, levels, labels=lab, max_iterations=self.settings.training.max_iterations)
        self.model = model
        self._refresh_thresholds()
        self.train_seconds = time.perf_counter() - started
        return model

    # ------------------------------------------------------------------------------------ internals
    def _source(self) -> np.ndarray | None:
        return self.frame.source.a if self.link else None

    def _block_counts_before(self, pos: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for block in self.blocks:
            block.grow(len(self.frame))
            keys = block.keys[pos] if len(pos) else np.zeros(0, np.int64)
            keys = np.unique(keys[keys >= 0])
            out.append((keys, block.counts(keys)))
        return out

    def _reindex(
        self, batch: np.ndarray, touched_old: dict[str, np.ndarray], before: list[tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        """Update block keys and find every record made dirty by the batch."""
        n = len(self.frame)
        in_batch = np.zeros(n, dtype=bool)
        in_batch[batch] = True
        dirty = [batch]
        alive = self.frame.alive.a
        # blocks: counts crossing a block size limit or a deterministic holder limit
        limits_of: dict[int, list[int]] = defaultdict(list)
        for r, block in enumerate(self.blocks):
            limits_of[r].append(block.cap)
        for block_index, max_holders, _ in self._det:
            if max_holders is not None:
                limits_of[block_index].append(max_holders)
        first_load = not any(len(b.base_keys) or b.delta_size for b in self.blocks)
        for r, block in enumerate(self.blocks):
            block.grow(n)
            old_keys, old_counts = before[r]
            prior_counts = {}
            new_keys_all = block.compute(batch)
            new_keys_all = np.where(alive[batch], new_keys_all, -1)
            if not first_load:
                fresh = np.unique(new_keys_all[new_keys_all >= 0])
                fresh = fresh[~np.isin(fresh, old_keys)]
                prior_counts = dict(zip(fresh.tolist(), block.counts(fresh).tolist(), strict=True))
                prior_counts.update(zip(old_keys.tolist(), old_counts.tolist(), strict=True))
            block.assign(batch, new_keys_all)
            if first_load or not prior_counts:
                continue
            touched = np.array(list(prior_counts), dtype=np.int64)
            after = block.counts(touched)
            before_arr = np.array([prior_counts[k] for k in touched.tolist()], dtype=np.int64)
            crossed = np.zeros(len(touched), dtype=bool)
            for limit in limits_of[r]:
                crossed |= (before_arr <= limit) != (after <= limit)
            if crossed.any():
                _, members = block.members(touched[crossed])
                dirty.append(members[~in_batch[members]])
        # term frequencies: values whose step changed
        if not first_load:
            for comparison in self.settings.comparisons:
                if not comparison.tf:
                    continue
                f = comparison.field
                codes_new = self.frame.codes[f].a[batch]
                codes_old = touched_old.get(f, np.zeros(0, np.int32))
                touched = np.unique(np.concatenate([codes_new, codes_old]))
                touched = touched[touched >= 0]
                if not len(touched):
                    continue
                counts_now = self.frame.text[f].counts.a[touched]
                added = np.array([np.count_nonzero(codes_new == c) for c in touched.tolist()])
                removed = np.array([np.count_nonzero(codes_old == c) for c in touched.tolist()])
                counts_before = counts_now - added + removed
                step_before, step_now = tf_bucket(counts_before), tf_bucket(counts_now)
                # A value got rarer: pairs agreeing on it gain weight, and some that were never kept
                # may now count, so its holders are matched again from scratch. A value got more
                # common: its pairs only lose weight, so re-scoring the links kept is enough.
                rarer, commoner = step_now < step_before, step_now > step_before
                if rarer.any():
                    holders = np.nonzero(np.isin(self.frame.codes[f].a, touched[rarer]))[0]
                    dirty.append(holders[~in_batch[holders]])
                if commoner.any():
                    holders = np.nonzero(np.isin(self.frame.codes[f].a, touched[commoner]))[0]
                    self._edge_dirty.update(p for p in holders.tolist() if p in self.adj)
                self._touch_tf(f, touched)
        else:
            self._tf = None
        out = np.unique(np.concatenate(dirty))
        return out[alive[out] | in_batch[out]]

    def _touch_tf(self, f: str, codes: np.ndarray) -> None:
        """Keep the cached adjustments of one field current for new and re-counted values."""
        if self._tf is None or f not in self._tf:
            return
        counts = self.frame.text[f].counts.a
        current = self._tf[f]
        if len(current) < len(counts):
            current = np.concatenate([current, self.model.tf_values(f, counts[len(current) :])])
        if len(codes):
            current[codes] = self.model.tf_values(f, counts[codes])
        self._tf[f] = current

    def _effective(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Effective weights of pairs (a < b): the model's weight, raised to the merge weight when a
        deterministic rule holds. Also the index of the rule (-1: none)."""
        levels, weights = self.model.score(self.frame, self.settings, a, b, self.tf)
        return self._apply_rules(a, b, levels, weights)

    def _apply_rules(
        self, a: np.ndarray, b: np.ndarray, levels: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        rules = np.full(len(a), -1, dtype=np.int16)
        for r, (block_index, max_holders, unless) in enumerate(self._det):
            block = self.blocks[block_index]
            ka, kb = block.keys[a], block.keys[b]
            hit = (ka == kb) & (ka >= 0) & (rules < 0)
            if not hit.any():
                continue
            idx = np.nonzero(hit)[0]
            if max_holders is not None:
                uniq, inverse = np.unique(ka[idx], return_inverse=True)
                idx = idx[(block.counts(uniq) <= max_holders)[inverse]]
            for j, vetoing in unless:
                idx = idx[~np.isin(levels[idx, j], list(vetoing))]
            rules[idx] = r
        det = rules >= 0
        weights = weights.copy()
        weights[det] = np.maximum(weights[det], self.merge_w + DETERMINISTIC_MARGIN)
        return weights, rules

    def _rematch(self, dirty: np.ndarray, update: Update, *, full: bool, rescore: bool = True) -> None:
        n = len(self.frame)
        alive = self.frame.alive.a
        seeds = set(dirty.tolist())
        if rescore and len(dirty):
            in_dirty = np.zeros(n, dtype=bool)
            in_dirty[dirty] = True
            for p in dirty.tolist():  # drop the old links of dirty records, remembering their ends
                for q in list(self.adj.get(p, ())):
                    seeds.add(q)
                    self.adj[q].pop(p, None)
                    self.det_rule.pop((min(p, q), max(p, q)), None)
                self.adj.pop(p, None)
            live_dirty = dirty[alive[dirty]]
            a, b, _ = candidate_pairs(self.blocks, live_dirty, in_dirty, source=self._source())
            update.dirty, update.pairs = len(live_dirty), len(a)
            if len(a):
                cached, self._levels_cache = self._levels_cache, None
                if (
                    cached is not None
                    and len(cached[0]) == len(a)
                    and np.array_equal(cached[0], a)
                    and np.array_equal(cached[1], b)
                ):
                    levels = cached[2]
                    weights = self.model.weights(self.frame, self.settings, a, levels, self.tf)
                else:
                    levels, weights = self.model.score(self.frame, self.settings, a, b, self.tf)
                weights, rules = self._apply_rules(a, b, levels, weights)
                keep = weights >= self.review_w
                for p, q, w, r in zip(
                    a[keep].tolist(), b[keep].tolist(), weights[keep].tolist(), rules[keep].tolist(), strict=True
                ):
                    self.adj[p][q] = w
                    self.adj[q][p] = w
                    if r >= 0:
                        self.det_rule[(p, q)] = r
        if self._edge_dirty:
            stale = {(min(p, q), max(p, q)) for p in self._edge_dirty for q in self.adj.get(p, ())}
            self._edge_dirty.clear()
            if stale:
                a = np.array([x for x, _ in sorted(stale)], dtype=np.int64)
                b = np.array([y for _, y in sorted(stale)], dtype=np.int64)
                weights, rules = self._effective(a, b)
                for p, q, w, r in zip(a.tolist(), b.tolist(), weights.tolist(), rules.tolist(), strict=True):
                    seeds.update((p, q))
                    self.det_rule.pop((p, q), None)
                    if w >= self.review_w:
                        self.adj[p][q] = self.adj[q][p] = w
                        if r >= 0:
                            self.det_rule[(p, q)] = r
                    else:
                        self.adj[p].pop(q, None)
                        self.adj[q].pop(p, None)
        if full:
            region = np.nonzero(alive)[0]
            self._cluster_all(region, update)
            return
        # A cluster is held together by its links (or must-links): when a dirty record's links were
        # dropped, their other ends became seeds, so walking the links from the seeds reaches every
        # record of every cluster that may change, and every record that may join one.
        region = sorted(self._reach(seeds))
        self._cluster_region(region, update)
        keys, alive = self.frame.keys, self.frame.alive.a
        update.touched = [keys[p] for p in region if alive[p]]

    def _linked(self, p: int) -> Iterable[int]:
        merge_w = self.merge_w
        for q, w in self.adj.get(p, {}).items():
            if w >= merge_w:
                yield q
        yield from self.must.get(p, ())

    def _reach(self, seeds: set[int]) -> set[int]:
        seen = set(seeds)
        queue = deque(seeds)
        while queue:
            p = queue.popleft()
            for q in self._linked(p):
                if q not in seen:
                    seen.add(q)
                    queue.append(q)
        return seen

    def _cluster_all(self, region: np.ndarray, update: Update) -> None:
        """Cluster every live record (a full run): components with numpy, then each component."""
        a_list, b_list = [], []
        for p, nbrs in self.adj.items():
            for q, w in nbrs.items():
                if p < q and w >= self.merge_w:
                    a_list.append(p)
                    b_list.append(q)
        for p, qs in self.must.items():
            for q in qs:
                if p < q:
                    a_list.append(p)
                    b_list.append(q)
        n = len(self.frame)
        comp = components(n, np.array(a_list, dtype=np.int64), np.array(b_list, dtype=np.int64))
        self._assign(region, comp[region], update)

    def _cluster_region(self, region: list[int], update: Update) -> None:
        if not region:
            return
        index = {p: i for i, p in enumerate(region)}
        a_list, b_list = [], []
        for p in region:
            for q in self._linked(p):
                if q in index and p < q:
                    a_list.append(index[p])
                    b_list.append(index[q])
        local = components(len(region), np.array(a_list, dtype=np.int64), np.array(b_list, dtype=np.int64))
        arr = np.array(region, dtype=np.int64)
        self._assign(arr, arr[local], update)

    def _assign(self, region: np.ndarray, region_comp: np.ndarray, update: Update) -> None:
        """Cluster each component of ``region`` (``region_comp``: the component of each record) and
        label its records (label = the cluster's smallest position). Components whose every pair is
        free of conflicts and cannot-links are one cluster as they stand (checked with numpy); only
        the others go through the greedy constrained clustering, one by one."""
        alive = self.frame.alive.a
        if len(region):
            keep = alive[region]
            region, region_comp = region[keep], region_comp[keep]
        update.region = len(region)
        if not len(region):
            return
        before = self.label[region].copy()
        new_label = self.label
        order = np.argsort(region_comp, kind="stable")
        members_sorted = region[order]
        comp_sorted = region_comp[order]
        by_position = np.argsort(region)
        region_by_position, comp_by_position = region[by_position], region_comp[by_position]

        def comp_of(positions: np.ndarray) -> np.ndarray:
            return comp_by_position[np.searchsorted(region_by_position, positions)]

        starts = np.r_[0, np.nonzero(np.diff(comp_sorted))[0] + 1]
        sizes = np.diff(np.r_[starts, len(members_sorted)])
        heads = np.minimum.reduceat(members_sorted, starts)
        new_label[members_sorted] = np.repeat(heads, sizes)  # first guess: one cluster per component
        constrained = {p for p, qs in self.cannot.items() if qs}
        multi = np.nonzero(sizes >= 2)[0]
        small = multi[sizes[multi] <= FULL_PAIRS_LIMIT]
        large = multi[sizes[multi] > FULL_PAIRS_LIMIT]
        # every pair inside each small component, scored in one pass
        in_small = np.repeat(np.isin(np.arange(len(starts)), small), sizes)
        from hub.resolution.blocking import pairs_in_groups

        ga, gb = pairs_in_groups(
            comp_sorted[in_small], members_sorted[in_small], np.ones(int(in_small.sum()), dtype=bool)
        )
        weights = self._effective(ga, gb)[0] if len(ga) else np.zeros(0)
        pair_comp = comp_of(ga)
        bad_comps = set(pair_comp[weights <= self.conflict_w].tolist())
        if constrained:
            cons = np.array(sorted(constrained), dtype=np.int64)
            at = np.minimum(np.searchsorted(region_by_position, cons), len(region_by_position) - 1)
            inside = region_by_position[at] == cons
            bad_comps.update(comp_by_position[at[inside]].tolist())
        known: dict[tuple[int, int], float] = {}
        slow = [int(c) for c in large] + [int(c) for c in small if int(comp_sorted[starts[c]]) in bad_comps]
        if slow:
            wanted = {int(comp_sorted[starts[c]]) for c in slow}
            pick = np.isin(pair_comp, list(wanted))
            known = dict(
                zip(zip(ga[pick].tolist(), gb[pick].tolist(), strict=True), weights[pick].tolist(), strict=True)
            )
        keys = self.frame.keys

        def order_key(p: int) -> str:
            return _sortable(keys[p])

        def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return self._effective(a, b)[0]

        for c in slow:
            members = members_sorted[starts[c] : starts[c] + sizes[c]].tolist()
            inside = set(members)
            edges = [
                (w, p, q)
                for p in members
                for q, w in self.adj.get(p, {}).items()
                if p < q and w >= self.merge_w and q in inside
            ]
            clusters = cluster_component(
                members,
                edges,
                order_key=order_key,
                weights=score,
                conflict=self.conflict_w,
                must=self.must,
                cannot=self.cannot,
                known=known,
            )
            for cluster in clusters:
                head = min(cluster)
                for p in cluster:
                    new_label[p] = head
        moved = np.nonzero(new_label[region] != before)[0]
        if len(moved):
            update.moved = [keys[p] for p in region[moved].tolist()]


def _sortable(key: Any) -> str:
    """A total order over record keys of any type: integers by value, then text."""
    if isinstance(key, int):
        return f"0{key:020d}"
    return f"1{key}"
