"""The Fellegi–Sunter model: for each comparison level, m (how often true matches fall on it) and u
(how often other pairs do); a pair's match weight is the sum over comparisons of log2(m/u) at its
levels, plus term-frequency adjustments; with the prior it gives the probability of a match.

Training needs no labels: u starts from random pairs of records (almost all non-matches), then EM
re-estimates m, u and the prior on the candidate pairs. Steward decisions, when there are some,
enter EM as labelled pairs whose probability is fixed at 1 or 0.

Thresholds are probabilities (settings.yaml); the model turns them into weights with its own prior,
so the defaults work on any data set without tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hub.resolution.comparisons import MISSING, levels_matrix
from hub.resolution.frame import Frame
from hub.resolution.settings import Settings, Thresholds

TF_CLAMP = (-12.0, 3.0)
"""Bounds of a term-frequency adjustment in bits: a very common value can cost up to 12 bits; a rare
one gains at most 3, so that one rare shared surname cannot outweigh everything else."""
MAX_WEIGHT = 20.0
"""Bound of one level's weight in bits, so that no single comparison is proof on its own."""


TF_RARE = 4
"""Values held by fewer than this many records are all equally rare for term-frequency purposes."""


def tf_bucket(counts: np.ndarray) -> np.ndarray:
    """Counts rounded down to a power of two, and at least ``TF_RARE``. Adjustments change only when a
    value's count crosses one of these steps, so incremental matching knows exactly which pairs to
    look at again (and a phone seen twice instead of once changes nothing)."""
    counts = np.maximum(np.asarray(counts, dtype=np.int64), 1)
    return np.maximum(TF_RARE, np.left_shift(1, np.floor(np.log2(counts)).astype(np.int64)))


@dataclass
class Model:
    fields: tuple[str, ...]
    m: list[np.ndarray]  # per comparison, per level (index 0 = missing, unused)
    u: list[np.ndarray]
    prior: float  # probability that a candidate pair is a match
    tf_reference: dict[str, float] = field(default_factory=dict)  # field -> sum of squared value frequencies
    records: int = 0  # records seen when trained (the denominator of term frequencies)
    trained_pairs: int = 0
    labelled_pairs: int = 0
    iterations: int = 0

    # ---------------------------------------------------------------------------- construction
    @classmethod
    def from_settings(cls, settings: Settings, prior: float = 0.005) -> Model:
        m = [np.array([1.0, *(lv.m for lv in c.levels)]) for c in settings.comparisons]
        u = [np.array([1.0, *(lv.u for lv in c.levels)]) for c in settings.comparisons]
        return cls(tuple(c.field for c in settings.comparisons), m, u, prior)

    def to_json(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields),
            "m": [list(map(float, x)) for x in self.m],
            "u": [list(map(float, x)) for x in self.u],
            "prior": self.prior,
            "tf_reference": self.tf_reference,
            "records": self.records,
            "trained_pairs": self.trained_pairs,
            "labelled_pairs": self.labelled_pairs,
            "iterations": self.iterations,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(
            tuple(data["fields"]),
            [np.array(x) for x in data["m"]],
            [np.array(x) for x in data["u"]],
            float(data["prior"]),
            dict(data.get("tf_reference") or {}),
            int(data.get("records", 0)),
            int(data.get("trained_pairs", 0)),
            int(data.get("labelled_pairs", 0)),
            int(data.get("iterations", 0)),
        )

    def fit_settings(self, settings: Settings) -> Model:
        """This model restricted to the comparisons ``settings`` has (a file without some columns)."""
        keep = [self.fields.index(c.field) for c in settings.comparisons]
        return Model(
            tuple(self.fields[i] for i in keep),
            [self.m[i] for i in keep],
            [self.u[i] for i in keep],
            self.prior,
            {k: v for k, v in self.tf_reference.items() if k in {c.field for c in settings.comparisons}},
            self.records,
            self.trained_pairs,
            self.labelled_pairs,
            self.iterations,
        )

    # ---------------------------------------------------------------------------- weights
    def level_weights(self) -> list[np.ndarray]:
        out = []
        for m, u in zip(self.m, self.u, strict=True):
            w = np.clip(np.log2(m / u), -MAX_WEIGHT, MAX_WEIGHT)
            w[MISSING] = 0.0
            out.append(w)
        return out

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    def weight_for(self, probability: float) -> float:
        """The match weight at which a candidate pair has ``probability`` of being a match."""
        return math.log2(probability / (1 - probability)) - self.prior_weight

    def thresholds(self, thresholds: Thresholds) -> tuple[float, float, float]:
        return (
            self.weight_for(thresholds.merge),
            self.weight_for(thresholds.review),
            self.weight_for(thresholds.conflict),
        )

    def probability(self, weights: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp2(-(np.asarray(weights) + self.prior_weight)))

    def tf_adjustments(self, frame: Frame, settings: Settings) -> dict[str, np.ndarray]:
        """Per tf comparison, an adjustment in bits for each distinct value (by code), used when a pair
        agrees exactly on that value: log2(average chance of a coincidental exact match / this value's
        frequency). Common values go negative, rare ones slightly positive."""
        out = {}
        for comparison in settings.comparisons:
            if comparison.tf:
                out[comparison.field] = self.tf_values(comparison.field, frame.text[comparison.field].counts.a)
        return out

    def tf_values(self, field_name: str, counts: np.ndarray) -> np.ndarray:
        """Adjustments in bits for values held by ``counts`` records. A trained model compares each
        value's frequency with the average chance of an exact match it measured; an untrained one
        only knows counts, and takes a bit off for each doubling past ``TF_RARE`` holders."""
        ref = self.tf_reference.get(field_name)
        if ref is None:
            return np.clip(-np.log2(tf_bucket(counts) / TF_RARE), *TF_CLAMP)
        freq = tf_bucket(counts) / max(self.records, 1)
        return np.clip(np.log2(ref / freq), *TF_CLAMP)

    def score(
        self, frame: Frame, settings: Settings, a: np.ndarray, b: np.ndarray, tf: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(levels, weights) of pairs (a[i], b[i])."""
        levels = levels_matrix(frame, settings, a, b)
        return levels, self.weights(frame, settings, a, levels, tf)

    def weights(
        self, frame: Frame, settings: Settings, a: np.ndarray, levels: np.ndarray, tf: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        """Match weights of pairs whose levels are known (``a``: their first records, for TF)."""
        weights = np.zeros(len(a))
        tf = self.tf_adjustments(frame, settings) if tf is None else tf
        for j, (comparison, w) in enumerate(zip(settings.comparisons, self.level_weights(), strict=True)):
            weights = weights + w[levels[:, j]]  # summed in a fixed order: same pair, same float
            adj = tf.get(comparison.field)
            if adj is not None and comparison.levels[0].kind == "exact" and comparison.levels[0].view == "text":
                exact = levels[:, j] == 1
                if exact.any():
                    codes = frame.codes[comparison.field].a[a[exact]]
                    weights[exact] = weights[exact] + adj[codes]
        return weights

    def explain(
        self, frame: Frame, settings: Settings, a: int, b: int, tf: dict[str, np.ndarray] | None = None
    ) -> dict[str, Any]:
        """The evidence for one pair, as a steward reads it: per comparison the level's label and weight."""
        return self.explain_many(frame, settings, np.array([a]), np.array([b]), tf)[0]

    def explain_many(
        self, frame: Frame, settings: Settings, a: np.ndarray, b: np.ndarray, tf: dict[str, np.ndarray] | None = None
    ) -> list[dict[str, Any]]:
        """``explain`` for pairs (a[i], b[i]), scored in one vectorised pass (the same values)."""
        levels, weights = self.score(frame, settings, a, b, tf)
        tf = self.tf_adjustments(frame, settings) if tf is None else tf
        # each comparison's entry for each level, built once: a pair's evidence copies the ones it hit
        entries = []
        for c, w in zip(settings.comparisons, self.level_weights(), strict=True):
            labels = c.level_labels
            entries.append(
                [
                    None
                    if level == MISSING
                    else {
                        "field": c.field,
                        "label": c.label,
                        "level": labels[level],
                        "weight": round(float(w[level]), 3),
                    }
                    for level in range(len(w))
                ]
            )
        adjusted = [
            (j, c.field, tf[c.field])
            for j, c in enumerate(settings.comparisons)
            if c.field in tf and c.levels[0].kind == "exact"
        ]
        probabilities = self.probability(weights).tolist()
        out = []
        for i, row in enumerate(levels.tolist()):
            comparisons = [dict(entries[j][level]) for j, level in enumerate(row) if level != MISSING]
            if adjusted:
                at = {j: k for k, j in enumerate(j for j, level in enumerate(row) if level != MISSING)}
                for j, name, adj in adjusted:
                    if row[j] == 1:
                        code = frame.codes[name].a[a[i]]
                        comparisons[at[j]]["tf_adjustment"] = round(float(adj[code]), 3)
                        comparisons[at[j]]["holders"] = int(frame.text[name].counts.a[code])
            out.append(
                {
                    "weight": round(float(weights[i]), 3),
                    "probability": round(probabilities[i], 6),
                    "comparisons": comparisons,
                }
            )
        return out


# ------------------------------------------------------------------------------------------ training
def estimate_u(frame: Frame, settings: Settings, model: Model, alive: np.ndarray, *, pairs: int, seed: int = 0) -> None:
    """u from random pairs of live records: nearly all of them are different people."""
    rng = np.random.default_rng(seed)
    n = len(alive)
    if n < 2:
        return
    total = n * (n - 1) // 2
    if total <= pairs:
        a, b = np.triu_indices(n, k=1)
    else:
        a = rng.integers(0, n, size=pairs)
        b = rng.integers(0, n, size=pairs)
        keep = a != b
        a, b = a[keep], b[keep]
    a, b = alive[a], alive[b]
    levels = levels_matrix(frame, settings, a, b)
    for j in range(len(settings.comparisons)):
        counts = np.bincount(levels[:, j], minlength=len(model.u[j])).astype(float)
        counts[MISSING] = 0
        seen = counts.sum()
        prior = model.u[j].copy()
        prior[MISSING] = 0
        prior = prior / prior.sum()
        # a few pseudo-pairs from the settings keep unseen levels possible without drowning the data
        u = (counts + 20 * prior) / (seen + 20)
        u[MISSING] = 1.0
        model.u[j] = u


def compute_tf_reference(frame: Frame, settings: Settings, model: Model) -> None:
    model.records = int(frame.alive.a.sum())
    for comparison in settings.comparisons:
        if comparison.tf:
            counts = frame.text[comparison.field].counts.a.astype(float)
            total = counts.sum()
            if total:
                model.tf_reference[comparison.field] = float(((counts / total) ** 2).sum())


def expectation_maximisation(
    model: Model,
    levels: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    max_iterations: int = 60,
    tolerance: float = 1e-6,
    update_u: bool = True,
) -> None:
    """EM over the distinct level patterns of the candidate pairs (few, however many pairs).

    ``labels``: per pair 1 (a steward merged it), 0 (rejected) or -1 (unknown)."""
    if labels is None:
        labels = np.full(len(levels), -1, dtype=np.int8)
    keyed = np.concatenate([levels.astype(np.int64), labels.astype(np.int64)[:, None] + 1], axis=1)
    if keyed.shape[1] <= 15 and keyed.max(initial=0) < 16:
        code = np.zeros(len(keyed), dtype=np.int64)
        for j in range(keyed.shape[1]):  # one integer per pattern: levels are small, so this is exact
            code = code * 16 + keyed[:, j]
        _, first, counts = np.unique(code, return_index=True, return_counts=True)
        patterns = keyed[first]
    else:
        patterns, counts = np.unique(keyed, axis=0, return_counts=True)
    gammas, fixed = patterns[:, :-1], patterns[:, -1] - 1
    counts = counts.astype(float)
    prior = min(max(model.prior, 1e-6), 1 - 1e-6)
    for iteration in range(1, max_iterations + 1):
        log_m = np.zeros(len(patterns))
        log_u = np.zeros(len(patterns))
        for j in range(gammas.shape[1]):
            log_m += np.log(model.m[j][gammas[:, j]])
            log_u += np.log(model.u[j][gammas[:, j]])
        odds = np.exp(np.clip(np.log(prior) + log_m - np.log(1 - prior) - log_u, -700, 700))
        p = odds / (1 + odds)
        p = np.where(fixed == 1, 1.0, np.where(fixed == 0, 0.0, p))
        wm, wu = p * counts, (1 - p) * counts
        change = 0.0
        for j in range(gammas.shape[1]):
            size = len(model.m[j])
            mm = np.bincount(gammas[:, j], weights=wm, minlength=size)
            uu = np.bincount(gammas[:, j], weights=wu, minlength=size)
            mm[MISSING] = uu[MISSING] = 0
            new_m = (mm + 1e-3) / (mm.sum() + 1e-3 * (size - 1))
            new_m[MISSING] = 1.0
            change = max(change, float(np.abs(new_m - model.m[j]).max()))
            model.m[j] = new_m
            if update_u:
                new_u = (uu + 1e-3) / (uu.sum() + 1e-3 * (size - 1))
                new_u[MISSING] = 1.0
                change = max(change, float(np.abs(new_u - model.u[j]).max()))
                model.u[j] = new_u
        new_prior = float(min(max(wm.sum() / counts.sum(), 1e-6), 1 - 1e-6))
        change = max(change, abs(new_prior - prior))
        prior = new_prior
        model.iterations = iteration
        if change < tolerance:
            break
    model.prior = prior
    model.trained_pairs = int(counts.sum())
    model.labelled_pairs = int(counts[fixed >= 0].sum())
