"""The hub's own writes coming back (tags, groups and the change stamps they move) are not changes."""

from hub.ingest import record_hash


def test_echo_fields_do_not_change_the_hash_but_real_changes_do():
    before = {"id": 1, "email": "a@example.com", "tags": "", "updated_at": "2026-01-01", "properties": {"x": 1}}
    echoed = {**before, "tags": "vip", "updated_at": "2026-01-02"}
    fields = ("tags", "updated_at", "properties.memberhub_tags")
    assert record_hash(echoed, fields) == record_hash(before, fields)
    assert record_hash(echoed) != record_hash(before)  # without the declaration it is a change
    assert record_hash({**echoed, "email": "b@example.com"}, fields) != record_hash(before, fields)
    nested = {**before, "properties": {"x": 1, "memberhub_tags": "vip"}}
    assert record_hash(nested, fields) == record_hash(before, fields)
    assert record_hash({**before, "properties": {"x": 2}}, fields) != record_hash(before, fields)
