"""Identity resolution: which source members are one person.

    settings.py     comparisons, blocking and deterministic rules, thresholds, survivorship (YAML)
    text.py         views of a value: normalised text, pinyin, initials, dates
    frame.py        records held column-wise, values coded once
    comparisons.py  comparison levels evaluated for many pairs at once
    blocking.py     candidate pairs, near-linear
    model.py        Fellegi–Sunter weights, EM training, term-frequency adjustment, thresholds
    cluster.py      clustering that does not chain unrelated people, constraints honoured
    engine.py       the incremental resolver (full run = one batch)
    survivorship.py golden values by rule, with lineage
    steward.py      merge, reject, split, pin: decisions that survive every run
    rows.py         links and golden members as plain rows, written in bulk (for hub.resolve)
    batch.py        ``memberhub match``: one file de-duplicated or two files linked, no database

hub.resolve turns clusters into golden members with stable ids.
"""

from hub.resolution.engine import Link, Resolver, Update
from hub.resolution.evaluate import Accuracy, accuracy
from hub.resolution.model import Model
from hub.resolution.settings import Settings, load_settings, parse_settings

__all__ = [
    "Accuracy",
    "Link",
    "Model",
    "Resolver",
    "Settings",
    "Update",
    "accuracy",
    "load_settings",
    "parse_settings",
]
