"""Odoo's external API (JSON-RPC): partners, online and till orders in; loyalty cards and tier out.

Every call is ``object.execute_kw`` with the uid that ``common.authenticate`` gave for the configured
database, login and API key. Odoo answers errors inside HTTP 200: "Access Denied" and AccessError
stop the connector with what to fix; an expired session signs in again once and repeats the call;
any other server error stops the connector with the server's own message.

Reading: ``search_read`` ordered ``write_date asc, id asc``, paged by offset inside a window that
moves with the data: each page asks for ``write_date >= <last write_date read>`` skipping the
records already read at exactly that second. A record edited while we page jumps to the end and is
read again, instead of shifting an unread record into the part already passed, as a plain offset
would; and the window only compares whole seconds, which is all Odoo shows of ``write_date``.
Each page's cursor is its last record's ``write_date``.

Orders carry their goods lines under ``"lines"`` (one ``search_read`` on the line model per page;
section and note lines are left out; on ``pos.order``, whose own ``lines`` field holds the line ids,
the ids are replaced by the lines themselves), each line with its product's ``default_code`` and
``name`` under ``"product"`` (products are read once and cached). A POS refund names its original in
``refunded_order_ids``; the original's ``is_refunded`` is computed, so its ``write_date`` does not
move: the page holding a refund also carries the originals it names that this read has not yielded.

Write-back: points go on the partner's card in the chain's loyalty programme (the first active
``loyalty.card`` programme of type ``loyalty``), created when the partner has none; its id is
returned in ``remote["card_id"]``. The tier goes in the partner's custom ``x_loyalty_tier`` field.
Writes are grouped by value; when a group fails, its rows are retried one by one so one bad partner
fails alone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from connectors._http import ApiClient
from connectors.base import CheckStep, Connector, Page, Stream, WritebackResult, WritebackUpdate
from connectors.tags import TagUpdate
from schemas import Channel, ConnectorConfig
from schemas.errors import ConfigError, ConnectorError, FatalError

log = logging.getLogger(__name__)

ORDER = "write_date asc, id asc"
PAGE_SIZE = 500
TIER_FIELD = "x_loyalty_tier"
_STAMP = "%Y-%m-%d %H:%M:%S"
_SYSTEM_ERRORS = {
    "odoo.exceptions.AccessDenied",
    "odoo.exceptions.AccessError",
    "psycopg2.OperationalError",
}
"""Server errors that are about the connection or the API user, not about one record."""


@dataclass(frozen=True)
class _Lines:
    model: str
    via: str  # the order's one2many field holding the line ids
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Model:
    model: str
    fields: tuple[str, ...]
    lines: _Lines | None = None
    refunds: str | None = None  # many2many naming the orders a refund refunds


_STAMPS = ("create_date", "write_date")
MODELS = {
    "partners": _Model(
        "res.partner",
        ("id", "name", "email", "phone", "mobile", "ref", "city", "active", "category_id", *_STAMPS),
    ),
    "sale_orders": _Model(
        "sale.order",
        (
            "id",
            "name",
            "partner_id",
            "date_order",
            "state",
            "amount_untaxed",
            "amount_total",
            "currency_id",
            "warehouse_id",
            "order_line",
            "client_order_ref",
            *_STAMPS,
        ),
        lines=_Lines(
            "sale.order.line",
            "order_line",
            (
                "id",
                "order_id",
                "product_id",
                "name",
                "product_uom_qty",
                "price_unit",
                "price_subtotal",
                "currency_id",
                "display_type",
            ),
        ),
    ),
    "pos_orders": _Model(
        "pos.order",
        (
            "id",
            "name",
            "pos_reference",
            "partner_id",
            "date_order",
            "state",
            "amount_total",
            "amount_paid",
            "currency_id",
            "config_id",
            "session_id",
            "lines",
            "is_refunded",
            "refund_orders_count",
            "refunded_order_ids",
            *_STAMPS,
        ),
        lines=_Lines(
            "pos.order.line",
            "lines",
            (
                "id",
                "order_id",
                "product_id",
                "full_product_name",
                "qty",
                "price_unit",
                "price_subtotal_incl",
                "currency_id",
                "refunded_orderline_id",
            ),
        ),
        refunds="refunded_order_ids",
    ),
}


class OdooServerError(FatalError):
    """An exception the Odoo server reported inside a 200 answer; ``name`` is its Python class."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class _SessionExpired(ConnectorError):
    pass


class OdooConnector(Connector):
    kind: ClassVar[str] = "odoo"
    channel: ClassVar[Channel] = Channel.erp
    streams: ClassVar[tuple[Stream, ...]] = (
        Stream("partners", "members", echo_fields=("category_id", "write_date")),
        Stream("sale_orders", "orders"),
        Stream("pos_orders", "orders"),
    )

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        super().__init__(name, config)
        missing = [k for k in ("database", "login", "token") if not getattr(config, k)]
        if missing:
            raise ConfigError(f"connector {name!r}: Odoo needs {', '.join(missing)} (the API key goes in token)")
        self.database: str = config.database or ""
        self.login: str = config.login or ""
        self._key = config.token.get_secret_value() if config.token else ""
        self._client = ApiClient(
            f"odoo {name}", config.base_url, timeout=config.timeout_seconds, max_wait=config.max_retry_wait_seconds
        )
        self._uid: int | None = None
        self._calls = 0
        self._products: dict[int, dict[str, Any]] = {}
        self._program: int | None = None

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------------- JSON-RPC
    def _rpc(self, service: str, method: str, args: list[Any], what: str, client: ApiClient | None = None) -> Any:
        self._calls += 1
        payload = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": self._calls,
        }
        body = (client or self._client).json("POST", "/jsonrpc", json=payload)
        if not isinstance(body, dict) or ("result" not in body and "error" not in body):
            raise FatalError(f"odoo {self.name}: {what}: /jsonrpc answered something that is not JSON-RPC")
        error = body.get("error")
        if error:
            raise self._translate(error, what)
        return body["result"]

    def _translate(self, error: dict[str, Any], what: str) -> ConnectorError:
        data = error.get("data") or {}
        name = str(data.get("name") or "")
        message = str(data.get("message") or error.get("message") or "no message")
        if error.get("code") == 100 or name.endswith("SessionExpiredException"):
            return _SessionExpired(f"odoo {self.name}: the session expired during {what}")
        if name == "odoo.exceptions.AccessDenied":
            return OdooServerError(
                f"odoo {self.name}: {what} was refused (Access Denied): check the database "
                f"({self.database!r}), the login ({self.login!r}) and the API key (token) of this connector",
                name=name,
            )
        if name == "odoo.exceptions.AccessError":
            return OdooServerError(
                f"odoo {self.name}: {what} was refused: {message.splitlines()[0]} Give the API user "
                f"{self.login!r} read access to contacts, sales and POS orders and products, and write access "
                "to contacts and loyalty cards.",
                name=name,
            )
        if name == "psycopg2.OperationalError" and "does not exist" in message:
            return OdooServerError(
                f"odoo {self.name}: {what}: {message.strip()} — check the database name in this connector",
                name=name,
            )
        return OdooServerError(f"odoo {self.name}: {what} failed on the server: {name}: {message}", name=name)

    def _authenticate(self, client: ApiClient | None = None) -> int:
        uid = self._rpc(
            "common", "authenticate", [self.database, self.login, self._key, {}], "signing in", client=client
        )
        if not uid:
            raise FatalError(
                f"odoo {self.name}: login {self.login!r} on database {self.database!r} was refused; check the login "
                "and the API key (token) of this connector (Odoo: Preferences › Account Security › API Keys)"
            )
        return int(uid)

    def _execute(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        what = f"{model}.{method}"
        for attempt in (1, 2):
            if self._uid is None:
                self._uid = self._authenticate()
            try:
                return self._rpc(
                    "object",
                    "execute_kw",
                    [self.database, self._uid, self._key, model, method, list(args), kwargs],
                    what,
                )
            except _SessionExpired as exc:
                self._uid = None
                if attempt == 2:
                    raise FatalError(
                        f"{exc}, again right after signing in anew; check the Odoo server's session settings"
                    ) from exc
                log.info("odoo %s: session expired during %s; signing in again", self.name, what)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------- read
    def read(self, stream: str, since: str | None) -> Iterator[Page]:
        self.stream(stream)
        spec = MODELS[stream]
        limit = self.config.page_size or PAGE_SIZE
        anchor = _naive(since) if since else None
        skip = 0  # records already read whose write_date is exactly the anchor
        yielded: set[int] = set()
        while True:
            domain = [["write_date", ">=", anchor]] if anchor else []
            records = self._execute(
                spec.model, "search_read", domain, fields=list(spec.fields), offset=skip, limit=limit, order=ORDER
            )
            if not records:
                return
            full = len(records) == limit
            last = records[-1]["write_date"]
            if last == anchor:
                skip += len(records)
            else:
                anchor, skip = last, sum(1 for r in records if r["write_date"] == last)
            cursor = _iso(last)
            yielded.update(r["id"] for r in records)
            if spec.refunds:
                originals = sorted({i for r in records for i in r.get(spec.refunds) or [] if i not in yielded})
                if originals:
                    extra = self._execute(
                        spec.model, "search_read", [["id", "in", originals]], fields=list(spec.fields), order="id asc"
                    )
                    yielded.update(r["id"] for r in extra)
                    records = records + extra
            if spec.lines:
                self._attach_lines(spec.lines, records)
            yield Page(records, cursor=cursor)
            if not full:
                return

    def _attach_lines(self, spec: _Lines, records: list[dict[str, Any]]) -> None:
        ids = sorted({i for r in records for i in r.get(spec.via) or []})
        lines = (
            self._execute(spec.model, "search_read", [["id", "in", ids]], fields=list(spec.fields), order="id asc")
            if ids
            else []
        )
        wanted = sorted({line["product_id"][0] for line in lines if line.get("product_id")} - set(self._products))
        if wanted:
            for product in self._execute(
                "product.product",
                "search_read",
                [["id", "in", wanted], ["active", "in", [True, False]]],
                fields=["id", "default_code", "name"],
            ):
                self._products[product["id"]] = product
        by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for line in lines:
            if line.get("display_type"):
                continue  # a section or note: layout, not goods
            product = self._products.get(line["product_id"][0]) if line.get("product_id") else None
            by_order[line["order_id"][0]].append({**line, "product": product or False})
        for record in records:
            record["lines"] = by_order.get(record["id"], [])

    # ------------------------------------------------------------------------- check
    def check(self) -> list[CheckStep]:
        where = self.config.base_url
        with ApiClient(f"odoo {self.name}", where, timeout=10.0, max_attempts=2) as probe:
            try:
                version = self._rpc("common", "version", [], "asking the server version", client=probe)
            except ConnectorError as exc:
                return [CheckStep("reachable", False, f"could not reach Odoo at {where}: {exc}")]
            steps = [CheckStep("reachable", True, f"Odoo {version.get('server_version', '?')} answered at {where}")]
            try:
                self._uid = self._authenticate(client=probe)
            except ConnectorError as exc:
                return [*steps, CheckStep("authenticated", False, str(exc))]
            steps.append(CheckStep("authenticated", True, f"signed in to {self.database!r} as {self.login!r}"))
        try:
            counts = {
                label: self._execute(model, "search_count", [])
                for label, model in (
                    ("partners", "res.partner"),
                    ("sales orders", "sale.order"),
                    ("POS orders", "pos.order"),
                )
            }
            sample = self._execute("res.partner", "search_read", [], fields=["id", "write_date"], limit=1, order=ORDER)
        except ConnectorError as exc:
            return [*steps, CheckStep("sample read", False, str(exc))]
        detail = ", ".join(f"{n} {label}" for label, n in counts.items())
        if sample:
            detail += f"; oldest change: partner {sample[0]['id']} at {sample[0]['write_date']}"
        steps.append(CheckStep("sample read", True, detail))
        if self.config.writeback:
            steps.append(self._check_writeback())
        return steps

    def _check_writeback(self) -> CheckStep:
        try:
            program = self._loyalty_program()
            fields = self._execute("res.partner", "fields_get", [TIER_FIELD], attributes=["type"])
        except ConnectorError as exc:
            return CheckStep("write-back", False, str(exc))
        if TIER_FIELD not in fields:
            return CheckStep(
                "write-back", False, f"contacts have no {TIER_FIELD} field: add it (Text) with Odoo Studio or a module"
            )
        return CheckStep("write-back", True, f"points go to loyalty programme {program}, tier to {TIER_FIELD}")

    # ------------------------------------------------------------------------- write-back
    def _loyalty_program(self) -> int:
        if self._program is None:
            found = self._execute(
                "loyalty.program",
                "search_read",
                [["program_type", "=", "loyalty"], ["active", "=", True]],
                fields=["id", "name"],
                order="id asc",
                limit=1,
            )
            if not found:
                raise FatalError(
                    f"odoo {self.name}: there is no active loyalty programme to hold points; create one "
                    "(Point of Sale › Products › Discount & Loyalty, type Loyalty Cards)"
                )
            self._program = int(found[0]["id"])
        return self._program

    def push(self, updates: list[WritebackUpdate]) -> list[WritebackResult]:
        if not updates:
            return []
        program = self._loyalty_program()
        errors: dict[int, str] = {}
        partner: dict[int, int] = {}
        for position, update in enumerate(updates):
            if update.external_id.isdigit():
                partner[position] = int(update.external_id)
            else:
                errors[position] = f"{update.external_id!r} is not an Odoo partner id"
        carded = {p: pid for p, pid in partner.items() if "points" in updates[p].changed}  # only these need a card
        cards = (
            self._execute(
                "loyalty.card",
                "search_read",
                [["program_id", "=", program], ["partner_id", "in", sorted(set(carded.values()))]],
                fields=["id", "partner_id", "points"],
                order="id asc",
            )
            if carded
            else []
        )
        held: dict[int, list[int]] = defaultdict(list)
        for card in cards:
            held[card["partner_id"][0]].append(card["id"])
        card_of: dict[int, int] = {}
        to_create: dict[int, list[int]] = defaultdict(list)  # partner -> positions
        for position, pid in carded.items():
            remembered = updates[position].remote.get("card_id")
            if held.get(pid):
                card_of[position] = remembered if remembered in held[pid] else held[pid][0]
            else:
                to_create[pid].append(position)
        self._create_cards(program, updates, to_create, card_of, errors)
        created = {position for positions in to_create.values() for position in positions}  # hold their points

        by_points: dict[float, list[tuple[int, int]]] = defaultdict(list)
        for position, card in card_of.items():
            if position not in errors and position not in created:
                by_points[float(updates[position].points)].append((position, card))
        for points, members in by_points.items():
            self._write_group("loyalty.card", members, {"points": points}, errors)
        by_tier: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for position, pid in partner.items():
            if position not in errors and "tier" in updates[position].changed:
                by_tier[updates[position].tier].append((position, pid))
        for tier, members in by_tier.items():
            self._write_group("res.partner", members, {TIER_FIELD: tier}, errors)

        return [
            WritebackResult(update.external_id, ok=False, error=errors[position])
            if position in errors
            else WritebackResult(
                update.external_id,
                ok=True,
                remote={"card_id": card_of[position], "program_id": program} if position in card_of else {},
            )
            for position, update in enumerate(updates)
        ]

    def _create_cards(
        self,
        program: int,
        updates: list[WritebackUpdate],
        to_create: dict[int, list[int]],
        card_of: dict[int, int],
        errors: dict[int, str],
    ) -> None:
        """One card per partner that has none, holding its points from the start."""
        if not to_create:
            return
        partners = list(to_create)
        values = [
            {"program_id": program, "partner_id": pid, "points": float(updates[to_create[pid][-1]].points)}
            for pid in partners
        ]
        try:
            created = self._execute("loyalty.card", "create", values)
            made = dict(zip(partners, created, strict=True))
        except OdooServerError as exc:
            if exc.name in _SYSTEM_ERRORS:
                raise
            made = {}
            for pid, vals in zip(partners, values, strict=True):
                try:
                    made[pid] = self._execute("loyalty.card", "create", [vals])[0]
                except OdooServerError as row:
                    if row.name in _SYSTEM_ERRORS:
                        raise
                    for position in to_create[pid]:
                        errors[position] = f"could not create a loyalty card: {row}"
        for pid, card in made.items():
            for position in to_create[pid]:
                card_of[position] = card

    def _write_group(
        self, model: str, members: list[tuple[int, int]], values: dict[str, Any], errors: dict[int, str]
    ) -> None:
        """Write the same values to many records at once; if that fails, one by one."""
        try:
            self._execute(model, "write", sorted({rid for _, rid in members}), values)
            return
        except OdooServerError as exc:
            if exc.name in _SYSTEM_ERRORS:
                raise
            if f"'{TIER_FIELD}'" in str(exc) and "Invalid field" in str(exc):
                raise FatalError(
                    f"odoo {self.name}: contacts have no {TIER_FIELD} field to hold the tier; add it (Text) with "
                    "Odoo Studio or a module, or turn write-back off for this connector"
                ) from exc
        for position, rid in members:
            try:
                self._execute(model, "write", [rid], values)
            except OdooServerError as row:
                if row.name in _SYSTEM_ERRORS:
                    raise
                errors[position] = f"could not write {', '.join(values)} on {model} {rid}: {row}"

    # ------------------------------------------------------------------------- tags (segments, triggers)
    def push_tags(self, updates: list[TagUpdate]) -> list[WritebackResult]:
        """Contact tags (``res.partner.category``), created once by name; each partner gets link (4)
        and unlink (3) commands for the hub's tags only, so tags people set stay."""
        if not updates:
            return []
        categories = {
            c["name"]: c["id"] for c in self._execute("res.partner.category", "search_read", [], fields=["id", "name"])
        }
        for name in sorted({t for u in updates for t in u.tags} - set(categories)):
            categories[name] = self._execute("res.partner.category", "create", {"name": name})
        names = {cid: name for name, cid in categories.items()}
        partners = sorted({int(u.external_id) for u in updates if u.external_id.isdigit()})
        found = self._execute("res.partner", "read", partners, ["category_id"]) if partners else []
        held = {p["id"]: list(p.get("category_id") or []) for p in found}
        results = []
        for update in updates:
            pid = int(update.external_id) if update.external_id.isdigit() else None
            if pid not in held:
                results.append(WritebackResult(update.external_id, False, f"no Odoo partner {update.external_id!r}"))
                continue
            now = held[pid]
            drop = [[3, c] for c in now if c in names and update.managed(names[c]) and names[c] not in update.tags]
            link = [[4, categories[t]] for t in update.tags if categories[t] not in now]
            try:
                if drop or link:
                    self._execute("res.partner", "write", [pid], {"category_id": drop + link})
            except OdooServerError as exc:
                if exc.name in _SYSTEM_ERRORS:
                    raise
                results.append(WritebackResult(update.external_id, False, f"could not tag partner {pid}: {exc}"))
                continue
            results.append(WritebackResult(update.external_id, True))
        return results


def _naive(moment: str) -> str:
    """An ISO 8601 time as Odoo compares it: naive UTC, to the second (rounded down)."""
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime(_STAMP)


def _iso(stamp: str) -> str:
    """Odoo's naive UTC string as ISO 8601 with its offset."""
    return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC).isoformat()
