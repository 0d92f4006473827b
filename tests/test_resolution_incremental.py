"""Incremental resolution equals a full run on the same data, whatever the arrival order: records
arriving one by one or in batches, some changed later and some removed, with a fixed model."""

from __future__ import annotations

import random

import pytest

from connectors.simulators._world import generate_world
from hub.resolution import Resolver


def world_records(people: int, seed: int) -> dict[str, dict]:
    world = generate_world(people, seed, difficulty=1.0, orders=False)
    out = {}
    for system, copies in world.members.items():
        for i, c in enumerate(copies):
            out[f"{system}:{i}"] = {
                "family_name": c.family_name,
                "given_name": c.given_name,
                "phone": c.phone,
                "email": c.email,
                "birthday": c.birthday,
                "gender": c.gender,
                "city": c.city,
                "person": c.person_id,
            }
    return out


@pytest.fixture(scope="module")
def data():
    records = world_records(350, 5)
    trainer = Resolver()
    trainer.add(list(records), list(records.values()), train=True)
    return records, trainer.model


def full_run(model, records):
    resolver = Resolver(model=model)
    resolver.add(list(records), list(records.values()))
    return resolver.partition()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_equals_full_for_any_arrival_order(data, seed):
    records, model = data
    rng = random.Random(seed)
    keys = list(records)
    rng.shuffle(keys)
    resolver = Resolver(model=model)
    i = 0
    while i < len(keys):
        size = rng.choice([1, 1, 1, 2, 5, 17, 60])
        batch = keys[i : i + size]
        resolver.add(batch, [records[k] for k in batch])
        i += size
    assert resolver.partition() == full_run(model, records)


def test_changed_and_removed_records_end_where_a_full_run_would(data):
    records, model = data
    rng = random.Random(9)
    resolver = Resolver(model=model)
    resolver.add(list(records), list(records.values()))
    final = dict(records)
    changed = rng.sample(list(records), 40)
    for k in changed[:20]:  # a contact typed in later, a typo fixed, a phone dropped
        final[k] = {**final[k], "phone": None, "email": final[k]["email"] or "new-" + k.replace(":", "") + "@qq.com"}
    for k in changed[20:30]:
        other = final[rng.choice(list(records))]
        final[k] = {**final[k], "given_name": other["given_name"], "birthday": other["birthday"]}
    removed = changed[30:]
    for k in changed[:30]:
        resolver.add([k], [final[k]])
    resolver.remove(removed)
    for k in removed:
        del final[k]
    assert resolver.partition() == full_run(model, final)


def test_rerunning_with_the_same_records_changes_nothing(data):
    records, model = data
    resolver = Resolver(model=model)
    resolver.add(list(records), list(records.values()))
    before = resolver.partition()
    update = resolver.add(list(records), list(records.values()))
    assert (update.added, update.changed, update.unchanged, update.moved) == (0, 0, len(records), [])
    assert resolver.partition() == before


def test_generated_members_are_resolved_accurately(data):
    records, model = data
    resolver = Resolver(model=model)
    resolver.add(list(records), list(records.values()))
    from hub.resolution import accuracy

    acc = accuracy(resolver.clusters(), {k: r["person"] for k, r in records.items()})
    assert acc.precision > 0.98 and acc.recall > 0.93
