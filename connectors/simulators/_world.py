"""The people behind the simulators: one seeded population, each person held by several systems
with the differences real systems have (phone formats, email case, traditional characters, typos,
missing fields), and the ground truth of who is who kept beside it for tests and benchmarks."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from faker import Faker
from opencc import OpenCC

SYSTEMS = ("shopify", "square", "hubspot", "odoo")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Generated times lie in the year before this fixed instant, so the same seed gives the same data
whatever day it is run; a re-run of the demo then finds nothing new."""


@dataclass(frozen=True)
class ChainStore:
    """A store of the chain and the code each system knows it by (see mappings/stores.yaml)."""

    code: str
    name: str
    city: str
    square_location: str | None  # Square location id (13 characters)
    odoo_name: str  # Odoo pos.config name (POS) or warehouse name (online orders)


STORES = (
    ChainStore("SH01", "上海南京路店", "上海", "LSH01A7KQ2XPM", "SH01 南京路店 POS"),
    ChainStore("SH02", "上海徐汇店", "上海", "LSH02B8LR3YQN", "SH02 徐汇店 POS"),
    ChainStore("BJ01", "北京王府井店", "北京", "LBJ01C9MS4ZRP", "BJ01 王府井店 POS"),
    ChainStore("BJ02", "北京三里屯店", "北京", "LBJ02D1NT5ASQ", "BJ02 三里屯店 POS"),
    ChainStore("GZ01", "广州天河店", "广州", "LGZ01E2PU6BTR", "GZ01 天河店 POS"),
    ChainStore("ONLINE", "线上商城", "上海", None, "WH-ONLINE 电商仓"),
)
STORE_BY_CODE = {store.code: store for store in STORES}

PRODUCTS = (
    ("SKU-TEA-01", "龙井茶礼盒", Decimal("268.00")),
    ("SKU-MUG-02", "骨瓷马克杯", Decimal("59.00")),
    ("SKU-BAG-03", "帆布托特包", Decimal("129.00")),
    ("SKU-SCF-04", "真丝围巾", Decimal("459.00")),
    ("SKU-CAN-05", "香薰蜡烛", Decimal("88.50")),
    ("SKU-NTB-06", "手账本", Decimal("35.90")),
    ("SKU-PEN-07", "钢笔", Decimal("199.00")),
    ("SKU-COF-08", "挂耳咖啡", Decimal("45.00")),
)


@dataclass
class Person:
    """Who someone really is: the values every system's copy is derived from."""

    person_id: int
    locale: str
    family_name: str
    given_name: str
    phone: str  # E.164
    email: str
    birthday: date | None
    gender: str
    city: str
    home_store: str
    consent: bool


@dataclass
class MemberCopy:
    """One person as one system holds them, noise included."""

    person_id: int
    system: str
    family_name: str | None
    given_name: str | None
    phone: str | None
    email: str | None
    birthday: date | None
    gender: str | None
    city: str | None
    consent: bool
    created_at: datetime
    updated_at: datetime


@dataclass
class OrderCopy:
    person_id: int
    system: str
    store_code: str  # the chain's store code; each simulator turns it into its own location id
    ordered_at: datetime
    updated_at: datetime
    lines: list[tuple[str, str, int, Decimal]]  # sku, title, quantity, unit price
    status: str  # paid | cancelled | refunded
    refunded: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return sum((qty * price for _, _, qty, price in self.lines), Decimal(0))


@dataclass
class World:
    seed: int
    people: list[Person]
    members: dict[str, list[MemberCopy]] = field(default_factory=dict)
    orders: dict[str, list[OrderCopy]] = field(default_factory=dict)

    def systems_of(self, person_id: int) -> list[str]:
        return [s for s in SYSTEMS if any(m.person_id == person_id for m in self.members.get(s, []))]


_T2S = OpenCC("s2t")  # we generate simplified text and turn some copies traditional
_ORDER_SYSTEMS = {"shopify": ("ONLINE",), "square": ("SH01", "SH02", "BJ01", "BJ02", "GZ01"), "odoo": None}
_TYPO_SWAPS = {"伟": "玮", "静": "婧", "丽": "莉", "强": "蔷", "敏": "珉", "军": "君", "杰": "洁", "涛": "韬"}


def generate_world(
    members: int = 200,
    seed: int = 7,
    *,
    systems: tuple[str, ...] = SYSTEMS,
    difficulty: float = 0.0,
    orders: bool = True,
) -> World:
    """``members`` people, each held by one to four of ``systems``; the same seed gives the same world.

    ``difficulty`` (0 to 1) adds the noise that makes identity resolution hard, on top of the default
    world and from a random stream of its own, so ``difficulty=0`` is exactly the default output:
    pinyin-keyboard homophones and typos in names, copies that keep neither phone nor email, shared
    family phones, mistyped birthdays and emails. ``orders=False`` skips orders (large benchmarks)."""
    rng = random.Random(seed)
    fakers = {"zh_CN": Faker("zh_CN"), "en_US": Faker("en_US")}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed * 31 + i)
    people = [_person(pid, rng, fakers) for pid in range(1, members + 1)]
    world = World(seed=seed, people=people, members={s: [] for s in systems}, orders={s: [] for s in systems})
    for person in people:
        held_by = _systems_for(rng, systems)
        for position, system in enumerate(held_by):
            world.members[system].append(_copy(person, system, rng, exact=position == 0))
            if orders and system in _ORDER_SYSTEMS:
                world.orders[system].extend(_orders(person, system, rng))
    if difficulty > 0:
        _harden(world, random.Random(f"harder-{seed}"), min(difficulty, 1.0))
    return world


# Characters a pinyin keyboard offers for the same syllable: picking the wrong one is the commonest
# typo in Chinese names (伟 / 卫 / 维 are all "wei").
_HOMOPHONES = (
    "伟卫维玮薇为", "静婧敬靖晶", "丽莉力立俐", "强蔷墙", "敏珉闽", "军君均钧", "杰洁婕捷", "涛韬滔",
    "芳方芬", "娜纳", "秀修", "英瑛莹", "华桦骅", "明铭鸣", "磊蕾", "洋阳杨", "勇涌咏", "艳燕雁",
    "玲琳林霖", "平萍苹", "刚钢纲", "辉晖慧", "鹏朋", "飞菲霏", "鑫欣新馨", "波博柏", "斌彬滨",
    "宇雨玉羽", "浩昊皓", "凯锴楷", "健建剑", "俊骏峻", "帆凡", "旭煦", "宁凝", "龙隆", "超潮",
    "红宏虹鸿", "霞侠", "梅玫媚", "兰岚蓝", "桂贵", "芳舫", "琴勤", "云芸昀", "莲连", "秀绣",
    "王汪", "李黎", "张章", "刘柳", "陈晨", "杨阳", "黄皇", "吴伍", "赵召", "周舟", "徐许", "孙荪",
)  # fmt: skip
_HOMOPHONE_OF = {ch: group for group in _HOMOPHONES for ch in group}


def _homophone(text: str, rng: random.Random) -> str:
    spots = [i for i, ch in enumerate(text) if ch in _HOMOPHONE_OF]
    if not spots:
        return text
    i = rng.choice(spots)
    others = [c for c in _HOMOPHONE_OF[text[i]] if c != text[i]]
    return text[:i] + rng.choice(others) + text[i + 1 :]


def _typo(text: str, rng: random.Random) -> str:
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.random()
    if kind < 0.3:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]  # transposition
    if kind < 0.6:
        return text[:i] + text[i + 1 :]  # deletion
    if kind < 0.8:
        return text[:i] + text[i] + text[i:]  # doubled letter
    return text[:i] + rng.choice("aeiourstnl") + text[i + 1 :]  # substitution


def _harden(world: World, rng: random.Random, level: float) -> None:
    """The harder cases, applied to the default world's copies (see ``generate_world``)."""
    people = {p.person_id: p for p in world.people}
    copies = [c for system in world.members for c in world.members[system]]
    first_seen: set[int] = set()
    # shared family phones: a share of people get a relative's phone on every copy that has one
    families = list(world.people)
    rng.shuffle(families)
    family_phone: dict[int, str] = {}
    for a, b in zip(families[::2], families[1::2], strict=False):
        if rng.random() < 0.08 * level and a.locale == b.locale:
            family_phone[b.person_id] = a.phone
    for copy in copies:
        person = people[copy.person_id]
        faithful = copy.person_id not in first_seen
        first_seen.add(copy.person_id)
        if copy.person_id in family_phone and copy.phone is not None and rng.random() < 0.7:
            copy.phone = family_phone[copy.person_id]
        if faithful:
            continue
        if copy.given_name and rng.random() < 0.25 * level:
            if person.locale == "zh_CN":
                copy.given_name = _homophone(copy.given_name, rng)
            else:
                copy.given_name = _typo(copy.given_name, rng)
        if copy.family_name and rng.random() < 0.1 * level:
            if person.locale == "zh_CN":
                copy.family_name = _homophone(copy.family_name, rng)
            else:
                copy.family_name = _typo(copy.family_name, rng)
        if rng.random() < 0.15 * level:
            copy.phone = copy.email = None  # neither contact: only names and birthday are left
        if copy.email and rng.random() < 0.05 * level:
            local, _, domain = copy.email.partition("@")
            copy.email = f"{_typo(local, rng)}@{domain}"
        if copy.birthday and rng.random() < 0.08 * level:
            b = copy.birthday
            if b.day <= 12 and b.day != b.month and rng.random() < 0.5:
                copy.birthday = b.replace(month=b.day, day=b.month)
            else:
                copy.birthday = b.replace(day=min(28, max(1, b.day + rng.choice([-10, -1, 1, 10]))))


def _person(pid: int, rng: random.Random, fakers: dict[str, Faker]) -> Person:
    locale = "zh_CN" if rng.random() < 0.75 else "en_US"
    fake = fakers[locale]
    gender = rng.choice(["female", "male"])
    if locale == "zh_CN":
        family = fake.last_name()
        given = fake.first_name_female() if gender == "female" else fake.first_name_male()
        phone = f"+86{rng.choice(['138', '139', '150', '186', '188', '135', '177'])}{rng.randrange(10**8):08d}"
        local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 8)))
        email = f"{local}{rng.randrange(100, 9999)}@{rng.choice(['qq.com', '163.com', '126.com', 'sina.com'])}"
    else:
        family = fake.last_name()
        given = fake.first_name_female() if gender == "female" else fake.first_name_male()
        phone = f"+86{rng.choice(['136', '137', '159'])}{rng.randrange(10**8):08d}"
        email = f"{given}.{family}{rng.randrange(10, 99)}@{rng.choice(['gmail.com', 'outlook.com'])}".lower()
    store = rng.choice(STORES)
    birthday = None if rng.random() < 0.15 else date(rng.randint(1960, 2004), rng.randint(1, 12), rng.randint(1, 28))
    return Person(
        pid, locale, family, given, phone, email, birthday, gender, store.city, store.code, consent=rng.random() < 0.7
    )


def _systems_for(rng: random.Random, systems: tuple[str, ...]) -> list[str]:
    count = rng.choices([1, 2, 3, 4], weights=[40, 30, 20, 10])[0]
    return rng.sample(list(systems), k=min(count, len(systems)))


def _copy(person: Person, system: str, rng: random.Random, *, exact: bool) -> MemberCopy:
    """A system's copy. The first copy is faithful; later ones carry noise, but keep at least one of
    phone and email, so every copy of a person shares an exact contact with another after
    normalisation (harder cases belong to the resolver's own benchmark)."""
    family, given = person.family_name, person.given_name
    phone: str | None = _format_phone(person.phone, rng) if not exact else person.phone
    email: str | None = person.email
    birthday, city = person.birthday, person.city
    if not exact:
        if person.locale == "zh_CN" and rng.random() < 0.2:
            family, given = _T2S.convert(family), _T2S.convert(given)
        if rng.random() < 0.15:
            given = "".join(_TYPO_SWAPS.get(ch, ch) for ch in given)
        if rng.random() < 0.3:
            email = email.upper() if rng.random() < 0.3 else email.capitalize()
        drop = rng.random()
        if drop < 0.15:
            phone = None
        elif drop < 0.3:
            email = None
        if rng.random() < 0.2:
            birthday = None
        if rng.random() < 0.2:
            city = None
    created = EPOCH - timedelta(days=rng.randint(30, 360), seconds=rng.randrange(86400))
    updated = min(
        EPOCH - timedelta(seconds=1), created + timedelta(days=rng.randint(0, 25), seconds=rng.randrange(86400))
    )
    return MemberCopy(
        person.person_id,
        system,
        family,
        given,
        phone,
        email,
        birthday,
        person.gender,
        city,
        person.consent,
        created,
        updated,
    )


def _format_phone(e164: str, rng: random.Random) -> str:
    national = e164[3:]
    return rng.choice(
        [
            f"{national[:3]} {national[3:7]} {national[7:]}",
            f"+86-{national[:3]}-{national[3:7]}-{national[7:]}",
            f"0086 {national}",
            f"86 {national}",
            national,
            e164,
        ]
    )


def _orders(person: Person, system: str, rng: random.Random) -> list[OrderCopy]:
    stores = _ORDER_SYSTEMS[system] or tuple(s.code for s in STORES)
    orders = []
    for _ in range(rng.choices([0, 1, 2, 3, 5, 8], weights=[15, 30, 25, 15, 10, 5])[0]):
        ordered = EPOCH - timedelta(days=rng.randint(1, 300), seconds=rng.randrange(86400))
        lines = [
            (sku, title, rng.randint(1, 3), price) for sku, title, price in rng.sample(PRODUCTS, k=rng.randint(1, 3))
        ]
        status = rng.choices(["paid", "cancelled", "refunded"], weights=[90, 5, 5])[0]
        order = OrderCopy(
            person.person_id,
            system,
            rng.choice(stores),
            ordered,
            ordered + timedelta(minutes=rng.randint(0, 600)),
            lines,
            status,
        )
        if status == "refunded":
            order.refunded = order.total
        orders.append(order)
    return orders
