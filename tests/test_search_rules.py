"""Search reads a typed phone or e-mail the way staging read the stored ones (memberhub.yaml's
``default_region`` and ``email_rewrite``): with Gmail addresses folded, any variant of one finds
the member, and without the switch the variants stay different people."""

import pytest

from connectors import Page
from hub.ingest import store_page
from hub.privacy.requests import find_member
from hub.search import ContactRules, contact_key, find_members
from hub.service import Hub


def test_contact_keys_follow_the_rules():
    folded = ContactRules(email_rewrite=frozenset({"gmail.com"}))
    assert contact_key("email", "J.Smith+work@Gmail.com", folded) == contact_key("email", "jsmith@gmail.com")
    assert contact_key("email", "J.Smith+work@Gmail.com") != contact_key("email", "jsmith@gmail.com")
    assert contact_key("phone", "020 1234 5678", ContactRules(region="GB")) == contact_key("phone", "+44 20 1234 5678")
    assert contact_key("phone", "020 1234 5678") != contact_key("phone", "+44 20 1234 5678")


@pytest.mark.parametrize("rewrite", [False, True])
def test_search_finds_a_folded_address_by_any_variant(tmp_path, database_url, monkeypatch, rewrite):
    monkeypatch.setenv("MEMBERHUB_HASH_KEY", "test-key-of-32-characters-long!!")
    path = tmp_path / "memberhub.yaml"
    path.write_text("programme:\n  default_region: CN\n" + ("  email_rewrite: [gmail.com]\n" if rewrite else ""))
    hub = Hub(config_path=path, database_url=database_url)
    customer = {"id": 7, "first_name": "Jane", "last_name": "Smith", "email": "J.Smith+shop@gmail.com"}
    with hub.session() as session, session.begin():
        store_page(session, "shopify", "customers", "id", Page([customer]))
    hub.stage()
    hub.resolve()
    rules = ContactRules.of(hub.config.programme)
    with hub.session() as session:
        by_variant = [hit.member_id for hit in find_members(session, "J.Smith+x@GMAIL.com", rules=rules)]
        by_same = [hit.member_id for hit in find_members(session, "j.smith+shop@gmail.com", rules=rules)]
        assert len(by_same) == 1
        assert by_variant == (by_same if rewrite else [])
        if rewrite:
            assert find_member(session, "JSmith@googlemail.com", rules=rules) == by_same[0]
