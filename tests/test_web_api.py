"""The JSON API: every role against every endpoint, clerks kept to their stores with contacts masked,
idempotency keys, one error body, paging, audited reads and decisions that survive later runs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_web_world import World, build_world

from hub.tables import AuditLog, IdempotencyRecord, LedgerEntryRow, MemberIdChange, ReviewQueueItem
from hub.web.app import create_app

pytest_plugins = ("test_web_world",)
ROLES = ("ada", "li", "chen", "sun")  # admin, steward, clerk of SH01, auditor


def client(world: World) -> TestClient:
    return TestClient(create_app(world.hub()))


def auth(world: World, user: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[user]}", **headers}


def endpoints(world: World) -> dict[str, tuple[str, str, dict | None]]:
    """name -> (method, path, json body) against members the SH01 clerk may see."""
    member, item = world.sh01_member, world.items[0]
    a1 = world.staged["pos-a1"]
    return {
        "me": ("GET", "/api/v1/me", None),
        "lookup": ("GET", "/api/v1/members/lookup?phone=13812345678", None),
        "search": ("GET", "/api/v1/members?q=ouyang", None),
        "member": ("GET", f"/api/v1/members/{member}", None),
        "points": ("GET", f"/api/v1/members/{member}/points", None),
        "adjust": ("POST", f"/api/v1/members/{member}/points/adjustments", {"delta": 50, "reason": "goodwill"}),
        "review": ("GET", "/api/v1/review", None),
        "review_item": ("GET", f"/api/v1/review/{item}", None),
        "decide": ("POST", f"/api/v1/review/{item}/decision", {"decision": "merge", "note": "same person"}),
        "split": ("POST", f"/api/v1/members/{member}/split", {"staged_member_ids": [a1]}),
        "pin": ("PUT", f"/api/v1/members/{member}/pins/city", {"value": "杭州", "reason": "moved"}),
        "unpin": ("DELETE", f"/api/v1/members/{member}/pins/city", None),
        "audit": ("GET", "/api/v1/audit", None),
        "revoke_token": ("DELETE", f"/api/v1/users/zhao/tokens/{world.tokens['zhao'][:12]}", None),
    }


# endpoint -> the roles allowed; everyone else gets 403 (and no token at all 401)
ALLOWED = {
    "me": {"ada", "li", "chen", "sun"},
    "lookup": {"ada", "li", "chen", "sun"},
    "search": {"ada", "li", "chen", "sun"},
    "member": {"ada", "li", "chen", "sun"},
    "points": {"ada", "li", "chen", "sun"},
    "adjust": {"ada", "chen"},
    "review": {"ada", "li", "sun"},
    "review_item": {"ada", "li", "sun"},
    "decide": {"ada", "li"},
    "split": {"ada", "li"},
    "pin": {"ada", "li"},
    "unpin": {"ada", "li"},
    "audit": {"ada", "sun"},
    "revoke_token": {"ada"},
}
SUCCESS = {"adjust": 201}


@pytest.mark.parametrize("endpoint", sorted(ALLOWED))
@pytest.mark.parametrize("role", (*ROLES, None))
def test_every_role_against_every_endpoint(web_world, endpoint, role):
    method, path, body = endpoints(web_world)[endpoint]
    if endpoint == "split":  # a split needs a member with two records: merge the pair first
        web_world_merge(web_world)
    headers = auth(web_world, role) if role else {}
    response = client(web_world).request(method, path, json=body, headers=headers)
    if role is None:
        expected = 401
    elif role in ALLOWED[endpoint]:
        expected = SUCCESS.get(endpoint, 200)
    else:
        expected = 403
    assert response.status_code == expected, response.text
    if expected >= 400:
        error = response.json()["error"]
        assert error["code"] in ("unauthorized", "forbidden") and error["message"]


def web_world_merge(world: World) -> None:
    response = client(world).post(
        f"/api/v1/review/{world.items[0]}/decision", json={"decision": "merge"}, headers=auth(world, "li")
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/members/{other}", None),
        ("GET", "/api/v1/members/{other}/points", None),
        ("POST", "/api/v1/members/{other}/points/adjustments", {"delta": 5, "reason": "x"}),
        ("GET", "/api/v1/members/lookup?member_id={other}", None),
        ("GET", "/api/v1/members/{gz}", None),
        ("GET", "/api/v1/members/lookup?phone=15012340001", None),
        ("GET", "/api/v1/members/MH99999999", None),
    ],
)
def test_a_clerk_asking_for_another_stores_member_gets_404_like_a_member_that_does_not_exist(
    web_world, method, path, body
):
    path = path.format(other=web_world.other_member, gz=web_world.gz01_member)
    response = client(web_world).request(method, path, json=body, headers=auth(web_world, "chen"))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    with web_world.hub().session() as session:  # nothing was written for it
        assert session.scalar(select(func.count()).where(LedgerEntryRow.actor == "clerk:chen")) == 0


def test_the_clerk_sees_own_store_members_with_contacts_masked_and_no_pii_audit(web_world):
    api = client(web_world)
    member = api.get(f"/api/v1/members/{web_world.sh01_member}", headers=auth(web_world, "chen")).json()
    phone = {f["field"]: f["value"] for f in member["fields"]}["phone"]
    assert phone == "138****5678"
    assert all(s["phone"] is None or "****" in s["phone"] for s in member["sources"])
    looked = api.get("/api/v1/members/lookup", params={"phone": "138 1234 5678"}, headers=auth(web_world, "chen"))
    assert looked.json()["items"][0] | {"balance": 0} == {
        "member_id": web_world.sh01_member,
        "name": "欧***",
        "phone": "138****5678",
        "email": None,
        "tier": None,
        "balance": 0,
        "pending": 0,
        "redirected_from": None,
    }
    with web_world.hub().session() as session:
        assert session.scalar(select(func.count()).where(AuditLog.action == "pii.read")) == 0


def test_a_person_reading_unmasked_contacts_is_audited(web_world):
    api = client(web_world)
    member = api.get(f"/api/v1/members/{web_world.sh01_member}", headers=auth(web_world, "sun")).json()
    assert {f["field"]: f["value"] for f in member["fields"]}["phone"] == "+8613812345678"
    api.get(f"/api/v1/review/{web_world.items[0]}", headers=auth(web_world, "li"))
    with web_world.hub().session() as session:
        reads = session.scalars(select(AuditLog).where(AuditLog.action == "pii.read").order_by(AuditLog.id)).all()
    assert [(r.actor, r.entity, r.entity_id) for r in reads] == [
        ("auditor:sun", "golden_member", web_world.sh01_member),
        ("steward:li", "review_item", str(web_world.items[0])),
    ]
    audit = api.get("/api/v1/audit", params={"action": "pii.read"}, headers=auth(web_world, "sun")).json()
    assert audit["total"] == 2 and audit["items"][0]["actor"] == "steward:li"


def test_an_idempotency_key_answers_a_retry_once_and_refuses_a_changed_body(web_world):
    api = client(web_world)
    path = f"/api/v1/members/{web_world.sh01_member}/points/adjustments"
    headers = auth(web_world, "chen", **{"Idempotency-Key": "till-7-0001"})
    first = api.post(path, json={"delta": 30, "reason": "birthday"}, headers=headers)
    again = api.post(path, json={"delta": 30, "reason": "birthday"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert (
        first.json()
        == again.json()
        == {"member_id": web_world.sh01_member, "delta": 30, "balance": 30, "store_code": "SH01"}
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = api.post(path, json={"delta": 31, "reason": "birthday"}, headers=headers)
    assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"
    other_key = api.post(
        path,
        json={"delta": 30, "reason": "birthday"},
        headers=auth(web_world, "chen", **{"Idempotency-Key": "till-7-0002"}),
    )
    assert other_key.json()["balance"] == 60
    with web_world.hub().session() as session:
        entries = session.scalars(select(LedgerEntryRow).where(LedgerEntryRow.actor == "clerk:chen")).all()
        assert sorted(e.points for e in entries) == [30, 30] and {e.store_code for e in entries} == {"SH01"}
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 2


def test_errors_share_one_body(web_world):
    api = client(web_world)
    cases = [
        (api.get("/api/v1/me"), 401, "unauthorized"),
        (api.get("/api/v1/me", headers={"Authorization": "Bearer mht_wrong"}), 401, "unauthorized"),
        (api.get("/api/v1/members/MH00009999", headers=auth(web_world, "li")), 404, "not_found"),
        (api.get("/api/v1/nowhere", headers=auth(web_world, "li")), 404, "not_found"),
        (api.get("/api/v1/review?per_page=500", headers=auth(web_world, "li")), 422, "invalid_request"),
        (api.get("/api/v1/members/lookup", headers=auth(web_world, "li")), 422, "one_key"),
        (
            api.post(
                f"/api/v1/review/{web_world.items[0]}/decision",
                json={"decision": "maybe"},
                headers=auth(web_world, "li"),
            ),
            422,
            "invalid_request",
        ),
        (
            api.post(
                f"/api/v1/members/{web_world.sh01_member}/split",
                json={"staged_member_ids": [web_world.staged["pos-a1"]]},
                headers=auth(web_world, "li"),
            ),
            422,
            "rejected",
        ),  # its only record: nothing would stay
        (api.patch("/api/v1/me", headers=auth(web_world, "li")), 405, "method_not_allowed"),
        (api.get("/api/v1/members/MH%0000", headers=auth(web_world, "li")), 422, "invalid_text"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]


def test_review_queue_pages_orders_and_filters(web_world):
    api, headers = client(web_world), auth(web_world, "sun")
    first = api.get("/api/v1/review", params={"per_page": 1}, headers=headers).json()
    second = api.get("/api/v1/review", params={"per_page": 1, "page": 2}, headers=headers).json()
    assert first["total"] == second["total"] == 2
    assert [first["items"][0]["id"], second["items"][0]["id"]] == web_world.items
    by_age = api.get("/api/v1/review", params={"order": "age"}, headers=headers).json()
    assert [i["id"] for i in by_age["items"]] == web_world.items
    gz = api.get("/api/v1/review", params={"store": "GZ01"}, headers=headers).json()
    assert [i["id"] for i in gz["items"]] == [web_world.items[1]]
    assert api.get("/api/v1/review", params={"source": "shopify"}, headers=headers).json()["total"] == 0
    detail = api.get(f"/api/v1/review/{web_world.items[0]}", headers=headers).json()
    levels = {c["field"]: (c["level"], c["weight"]) for c in detail["comparisons"]}
    assert levels["phone"][0] == "different" and levels["phone"][1] < 0 < levels["given_name"][1]


def test_search_by_phone_email_name_pinyin_member_id_and_source_id(web_world):
    api, headers = client(web_world), auth(web_world, "li")

    def found(q):
        return [
            (h["member_id"], h["matched"])
            for h in api.get("/api/v1/members", params={"q": q}, headers=headers).json()["items"]
        ]

    sh01, gz01 = web_world.sh01_member, web_world.gz01_member
    assert found("+86 138-1234-5678") == [(sh01, "phone")]
    assert (
        found("司马光华")
        == found("sima guanghua")
        == found("simaguang")
        == [(gz01, "name"), (web_world.member_of("pos-b2"), "name")]
    )
    assert found(sh01.lower()) == [(sh01, "member_id")]
    assert found("pos:pos-b1") == found("pos-b1") == [(gz01, "source_id")]
    with web_world.hub().session() as session:
        from hub.tables import GoldenMember

        someone = session.scalar(select(GoldenMember).where(GoldenMember.email.is_not(None)).limit(1))
        email, member_id = someone.email, someone.member_id
    assert (member_id, "email") in found(email.upper())
    clerk = api.get("/api/v1/members", params={"q": "司马光华"}, headers=auth(web_world, "chen")).json()
    assert clerk["items"] == []  # GZ01's members are not the SH01 clerk's


def test_decisions_are_audited_and_survive_later_runs(web_world):
    api, headers = client(web_world), auth(web_world, "li")
    merged = api.post(
        f"/api/v1/review/{web_world.items[0]}/decision", json={"decision": "merge", "note": "同一人"}, headers=headers
    ).json()
    survivor = web_world.sh01_member
    assert set(merged["members"].values()) == {survivor}
    rejected = api.post(
        f"/api/v1/review/{web_world.items[1]}/decision", json={"decision": "reject"}, headers=headers
    ).json()
    assert rejected["status"] == "rejected" and len(set(rejected["members"].values())) == 2
    pinned = api.put(f"/api/v1/members/{survivor}/pins/city", json={"value": "杭州"}, headers=headers).json()
    assert pinned == {"member_id": survivor, "field": "city", "value": "杭州", "pinned": True}
    hub = web_world.hub()
    hub.resolve()
    hub.resolve()
    assert web_world.member_of("pos-a1") == web_world.member_of("pos-a2") == survivor
    assert web_world.member_of("pos-b1") != web_world.member_of("pos-b2")
    detail = api.get(f"/api/v1/members/{survivor}", headers=headers).json()
    assert {f["field"]: (f["value"], f["pinned"]) for f in detail["fields"]}["city"] == ("杭州", True)
    with hub.session() as session:
        audit = session.scalar(select(AuditLog).where(AuditLog.action == "review.merge"))
        assert audit.actor == "steward:li" and audit.after["note"] == "同一人"
        assert audit.before["members"] != audit.after["members"]
        statuses = dict(session.execute(select(ReviewQueueItem.id, ReviewQueueItem.status)).all())
        assert statuses == {web_world.items[0]: "merged", web_world.items[1]: "rejected"}


def test_split_mints_a_new_member_and_redirects_are_shown(web_world):
    api, headers = client(web_world), auth(web_world, "li")
    absorbed = web_world.member_of("pos-a2")
    web_world_merge(web_world)
    redirected = api.get(f"/api/v1/members/{absorbed}", headers=headers).json()
    assert redirected["member_id"] == web_world.sh01_member and redirected["redirected_from"] == absorbed
    assert {(r["old_member_id"], r["kind"]) for r in redirected["redirects"]} == {(absorbed, "merge")}
    split = api.post(
        f"/api/v1/members/{web_world.sh01_member}/split",
        json={"staged_member_ids": [web_world.staged["pos-a2"]], "reason": "two people"},
        headers=headers,
    ).json()
    (new_id,) = split["new_member_ids"]
    assert new_id not in (web_world.sh01_member, absorbed)
    assert web_world.member_of("pos-a2") == new_id != web_world.member_of("pos-a1")
    web_world.hub().resolve()
    assert web_world.member_of("pos-a2") == new_id
    with web_world.hub().session() as session:
        change = session.scalar(select(MemberIdChange).where(MemberIdChange.kind == "split"))
        assert (change.old_member_id, change.new_member_id) == (web_world.sh01_member, new_id)
        assert session.scalar(select(AuditLog).where(AuditLog.action == "steward_split")).actor == "steward:li"


@pytest.mark.postgres
def test_the_api_on_postgresql(postgres_url, world_keys, tmp_path):
    world = build_world(tmp_path, postgres_url)
    api = client(world)
    looked = api.get("/api/v1/members/lookup", params={"phone": "13812345678"}, headers=auth(world, "chen")).json()
    assert [i["member_id"] for i in looked["items"]] == [world.sh01_member]
    queue = api.get("/api/v1/review", params={"store": "GZ01", "order": "age"}, headers=auth(world, "sun")).json()
    assert [i["id"] for i in queue["items"]] == [world.items[1]] and queue["total"] == 1
    found = api.get("/api/v1/members", params={"q": "sima guanghua"}, headers=auth(world, "li")).json()
    assert {h["member_id"] for h in found["items"]} == {world.gz01_member, world.member_of("pos-b2")}
    headers = auth(world, "li", **{"Idempotency-Key": "merge-1"})
    first = api.post(f"/api/v1/review/{world.items[0]}/decision", json={"decision": "merge"}, headers=headers)
    again = api.post(f"/api/v1/review/{world.items[0]}/decision", json={"decision": "merge"}, headers=headers)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    split = api.post(
        f"/api/v1/members/{world.sh01_member}/split",
        json={"staged_member_ids": [world.staged["pos-a2"]]},
        headers=auth(world, "ada"),
    )
    assert split.status_code == 200, split.text
    assert world.member_of("pos-a2") == split.json()["new_member_ids"][0]
    adjusted = api.post(
        f"/api/v1/members/{world.sh01_member}/points/adjustments",
        json={"delta": 20, "reason": "welcome"},
        headers=auth(world, "chen"),
    )
    assert adjusted.status_code == 201 and adjusted.json()["balance"] == 20
