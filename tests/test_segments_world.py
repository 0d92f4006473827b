"""A small chain written straight into the hub tables (no simulators), and the member view computed
from it in plain Python: the reference the segment, RFM, churn and report tests compare against."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hub import ledger
from hub.tables import (
    GoldenMember,
    MemberLink,
    SourceRecordRow,
    StagedMember,
    StagedOrder,
    TierAssignmentRow,
)
from schemas import EntryKind, LedgerEntry

AS_OF = datetime(2025, 7, 1, 4, 0, tzinfo=UTC)
STORES = {"SH01": "上海市", "BJ01": "北京市", "GZ01": "广州市", "ONLINE": "上海市"}
CITIES = ["上海市", "北京市", "广州市", "杭州市", None]


@dataclass
class World:
    members: list[str] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)  # member_id, store, channel, status, net, at
    staged: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    golden: dict[str, dict] = field(default_factory=dict)
    tiers: dict[str, str] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)
    tier_rows: dict[str, int] = field(default_factory=dict)
    flows: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # earned at, spent at


def build(session, *, members: int = 60, seed: int = 5) -> World:
    rng = random.Random(seed)
    world = World()
    record = 0

    def source_record(source: str, stream: str, external: str) -> int:
        nonlocal record
        record += 1
        row = SourceRecordRow(source=source, stream=stream, external_id=external, payload={}, content_hash="x")
        session.add(row)
        session.flush()
        return row.id

    for n in range(1, members + 1):
        member_id = f"MH{n:08d}"
        world.members.append(member_id)
        city = rng.choice(CITIES)
        created = AS_OF - timedelta(days=rng.randint(5, 900), seconds=rng.randint(0, 86399))
        birthday = date(1980 + n % 20, 1 + n % 12, 1 + n % 27)
        session.add(
            GoldenMember(
                seq=n,
                member_id=member_id,
                status="active",
                city=city,
                birthday=birthday,
                created_at=AS_OF,
                updated_at=AS_OF,
            )
        )
        world.golden[member_id] = {"city": city, "birthday": birthday, "created": created}
        session.flush()
        for source in rng.sample(["shopify", "square", "sheet"], rng.randint(1, 2)):
            source_id = f"{source}-{n}"
            consent = rng.choice([True, False, None, True])
            store = rng.choice([None, None, "SH01", "BJ01"]) if source == "sheet" else None
            staged = StagedMember(
                source_record_id=source_record(source, "members", source_id),
                source=source,
                source_id=source_id,
                channel="pos",
                marketing_consent=consent,
                store_code=store,
                created_at=created + timedelta(days=rng.randint(0, 30)),
            )
            session.add(staged)
            session.flush()
            session.add(MemberLink(staged_member_id=staged.id, member_id=member_id, rule="test"))
            world.staged[member_id].append(
                {
                    "source": source,
                    "source_id": source_id,
                    "consent": consent,
                    "store": store,
                    "created": staged.created_at,
                }
            )
            for k in range(rng.choice([0, 1, 1, 2, 3, 5, 8])):
                store_code = rng.choice(list(STORES))
                channel = "online" if store_code == "ONLINE" else "pos"
                status = rng.choice(["paid"] * 6 + ["partially_refunded", "refunded", "cancelled"])
                total = Decimal(rng.randint(500, 90000)) / 100
                refunded = {"partially_refunded": (total / 3).quantize(Decimal("0.01")), "refunded": total}.get(
                    status, Decimal(0)
                )
                at = AS_OF - timedelta(days=rng.randint(0, 400), seconds=rng.randint(0, 86399))
                order_id = f"{source_id}-o{k}"
                session.add(
                    StagedOrder(
                        source_record_id=source_record(source, "orders", order_id),
                        source=source,
                        source_id=order_id,
                        member_source_id=source_id,
                        store_code=store_code,
                        channel=channel,
                        status=status,
                        currency="CNY",
                        total_amount=total,
                        refunded_amount=refunded,
                        ordered_at=at,
                    )
                )
                world.orders.append(
                    {
                        "member_id": member_id,
                        "store": store_code,
                        "channel": channel,
                        "status": status,
                        "net": total - refunded,
                        "at": at,
                    }
                )
        for step, tier in enumerate(rng.sample(["regular", "silver", "gold"], rng.randint(0, 2))):
            reason = "upgrade" if step else "initial"
            session.add(
                TierAssignmentRow(
                    member_id=member_id, tier=tier, qualifying_amount=Decimal(0), reason=reason, assigned_at=AS_OF
                )
            )
            session.flush()
            world.tiers[member_id] = tier
            world.tier_rows[member_id] = step + 1
        balance = rng.randint(0, 3000)
        if balance:  # earned at one store through the real ledger; some spent at another, some expiring soon
            store = rng.choice(["SH01", "BJ01", "GZ01"])
            expires = AS_OF + timedelta(days=rng.choice([10, 20, 400]))
            earned_at = AS_OF - timedelta(days=rng.randint(20, 90))
            ledger.post(session, LedgerEntry(member_id=member_id, kind=EntryKind.earn, points=balance,
                                             store_code=store, source="test", document=f"seed:{member_id}",
                                             occurred_at=earned_at, expires_at=expires), now=earned_at)  # fmt: skip
            if n % 3 == 0:
                spent, at_store = rng.randint(1, balance), rng.choice(["SH01", "BJ01", "ONLINE"])
                ledger.redeem(session, member_id, spent, source="test", document=f"spend:{member_id}",
                              store_code=at_store, at=earned_at + timedelta(days=5))  # fmt: skip
                world.flows[(store, at_store)] += spent
                balance -= spent
            world.points[member_id] = balance
    session.flush()
    return world


def quintiles(values: dict[str, object]) -> dict[str, int]:
    """The view's RFM score, computed directly: 1 + floor(5 × (members with a lower value) / members),
    so equal values share a score."""
    ordered = sorted(values.values())
    return {member: 1 + 5 * bisect_left(ordered, value) // len(ordered) for member, value in values.items()}


def _money(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def days(later: datetime, earlier: datetime) -> int:
    return int((int(later.timestamp()) - int(earlier.timestamp())) / 86400)  # the fraction dropped, as SQL does


def expected_view(world: World, as_of: datetime = AS_OF) -> dict[str, dict]:
    """Every column of the member view, computed from ``world`` without SQL."""
    counted = defaultdict(list)
    for order in world.orders:
        if order["status"] in ("paid", "partially_refunded"):
            counted[order["member_id"]].append(order)
    view = {}
    for member_id in world.members:
        orders = counted[member_id]
        staged = world.staged[member_id]
        said = [s["consent"] for s in staged if s["consent"] is not None]
        consent = False if False in said else (True if said else None)
        enrolled = min(s["created"] for s in staged)
        per_store = defaultdict(list)
        for o in orders:
            per_store[o["store"]].append(o)
        favourite = None
        if per_store:
            favourite = sorted(
                per_store, key=lambda s: (-len(per_store[s]), -max(o["at"] for o in per_store[s]).timestamp(), s)
            )[0]
        enrolled_store = min((s["store"] for s in staged if s["store"]), default=None)
        home = enrolled_store or favourite
        row = {
            "tier": world.tiers.get(member_id, "regular"),
            "city": world.golden[member_id]["city"],
            "home_store": home,
            "home_store_city": STORES.get(home) if home else None,
            "marketing_consent": consent,
            "orders": len(orders),
            "spend": _money(sum((o["net"] for o in orders), Decimal(0))),
            "store_orders": sum(1 for o in orders if o["channel"] == "pos"),
            "online_orders": sum(1 for o in orders if o["channel"] != "pos"),
            "stores": len(per_store),
            "points": world.points.get(member_id, 0),
            "tenure_days": days(as_of, enrolled),
            "first_order_at": min((o["at"] for o in orders), default=None),
            "last_order_at": max((o["at"] for o in orders), default=None),
        }
        net = sum((o["net"] for o in orders), Decimal(0))
        row["avg_order_value"] = _money(net / len(orders)) if orders else None
        row["days_since_first_order"] = days(as_of, row["first_order_at"]) if orders else None
        row["days_since_last_order"] = days(as_of, row["last_order_at"]) if orders else None
        row["own_interval"] = (
            (int(row["last_order_at"].timestamp()) - int(row["first_order_at"].timestamp())) / 86400 / (len(orders) - 1)
            if len(orders) > 1
            else None
        )
        view[member_id] = row
    own = [r["own_interval"] for r in view.values() if r["own_interval"] is not None]
    chain = sum(own) / len(own) if own else None
    buyers = [m for m in world.members if view[m]["orders"] > 0]
    for column, key in (
        ("r_score", lambda m: view[m]["last_order_at"]),
        ("f_score", lambda m: view[m]["orders"]),
        ("m_score", lambda m: view[m]["spend_exact"]),
        ("aov_score", lambda m: view[m]["aov_exact"]),
    ):
        for m in buyers:
            net = sum((o["net"] for o in counted[m]), Decimal(0))
            view[m]["spend_exact"], view[m]["aov_exact"] = net, net / len(counted[m])
        scores = quintiles({m: key(m) for m in buyers})
        for m in world.members:
            view[m][column] = scores.get(m)
    for row in view.values():
        gap = (row["own_interval"] if row["own_interval"] is not None else chain) if row["orders"] else None
        row["typical_interval_days"] = gap
        row["churn_risk"] = (
            min(1.0, max(0.0, (row["days_since_last_order"] / max(gap, 1.0) - 1) / 2)) if gap is not None else None
        )
    return view


def store_rfm(world: World) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(store, member) -> (orders, r, f, m) among each store's buyers."""
    per = defaultdict(list)
    for o in world.orders:
        if o["status"] in ("paid", "partially_refunded"):
            per[(o["store"], o["member_id"])].append(o)
    result = {}
    for store in {s for s, _ in per}:
        members = [m for s, m in per if s == store]
        facts = {
            m: (
                len(per[(store, m)]),
                sum((o["net"] for o in per[(store, m)]), Decimal(0)),
                max(o["at"] for o in per[(store, m)]),
            )
            for m in members
        }
        r = quintiles({m: facts[m][2] for m in members})
        f = quintiles({m: facts[m][0] for m in members})
        mm = quintiles({m: facts[m][1] for m in members})
        for m in members:
            result[(store, m)] = (facts[m][0], r[m], f[m], mm[m])
    return result
