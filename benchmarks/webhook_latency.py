"""Seconds from a purchase's webhook to the member's points, in the hub and back in the shop.

    .venv/bin/python benchmarks/webhook_latency.py --members 500 --purchases 5 --poll 5

The path is the production one, minus the daemon's process launch: the simulated Shopify shop
takes an order (``place_order``) and sends its signed ``orders/create`` webhook over HTTP to the
hub's router (uvicorn on 127.0.0.1); a loop standing in for the Dagster daemon evaluates the
``webhook_events`` sensor every ``--poll`` seconds and executes each run it asks for in-process; the
script watches the member's ledger balance and the shop's loyalty metafield until the points show.
A daemon that launches each run in a fresh process (the default run launcher) adds that
process's start-up.

Not part of the test run: machines are shared and noisy, so figures belong in notes, not asserts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
import yaml
from dagster import DagsterInstance, SensorResult, build_sensor_context
from fastapi import FastAPI
from sqlalchemy import select

from connectors.simulators import start_simulators
from connectors.simulators._world import PRODUCTS
from hub import ledger
from hub.demo import write_demo_config
from hub.resolve import active_member_id
from hub.service import Hub
from hub.tables import MemberLink, StagedMember
from hub.web import webhooks
from orchestration.definitions import build_definitions
from orchestration.resources import HubResource
from orchestration.runner import run_pipeline


def member_of(hub: Hub, customer_id: int) -> str:
    with hub.session() as session:
        member = session.scalar(
            select(MemberLink.member_id)
            .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
            .where(StagedMember.source == "shopify", StagedMember.source_id == str(customer_id))
        )
        return active_member_id(session, member)


class Daemon(threading.Thread):
    """Ticks the webhook sensor every ``poll`` seconds and runs what it asks for, in-process."""

    def __init__(self, config: str, database_url: str, poll: float) -> None:
        super().__init__(daemon=True)
        self.defs = build_definitions(config, database_url)
        self.sensor = self.defs.resolve_sensor_def("webhook_events")
        self.job = self.defs.resolve_job_def("webhook_sync")
        self.resources = {"hub": HubResource(config_path=config, database_url=database_url)}
        self.instance = DagsterInstance.ephemeral()
        self.poll, self.cursor, self.stop, self.runs = poll, None, threading.Event(), []

    def run(self) -> None:
        while not self.stop.wait(self.poll):
            context = build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources)
            result = self.sensor(context)
            if not isinstance(result, SensorResult):
                continue
            self.cursor = result.cursor
            for request in result.run_requests:
                started = time.perf_counter()
                self.job.execute_in_process(
                    instance=self.instance,
                    asset_selection=request.asset_selection,
                    tags=request.tags,
                    run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
                )
                self.runs.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--purchases", type=int, default=5)
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between sensor ticks (event_poll_seconds)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    random.seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp, start_simulators(members=args.members, seed=args.seed) as cluster:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'hub.db'}"
        config = Path(tmp) / "hub.yaml"
        write_demo_config(config, cluster.connector_configs(), url)
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        shop = cluster.simulators["shopify"]
        data["connectors"]["shopify"]["webhook_secret"] = shop.webhook_secret
        config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        hub = Hub(config_path=config)
        hub.upgrade()
        started = time.perf_counter()
        run_pipeline(str(config), database_url=url, instance=DagsterInstance.ephemeral())
        print(f"first full run: {time.perf_counter() - started:.1f} s for {args.members} people")

        app = FastAPI()
        app.state.hub = hub
        app.include_router(webhooks.router)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/webhooks/shopify"
        daemon = Daemon(str(config), url, args.poll)
        daemon.start()

        rows = []
        customers = random.sample([c["id"] for c in shop.customers()], args.purchases)
        for n, customer_id in enumerate(customers, start=1):
            member = member_of(hub, customer_id)
            with hub.session() as session:
                before = ledger.balance(session, member)
            order_id = shop.place_order(customer_id, [(random.choice(PRODUCTS)[0], random.randint(1, 3))])["id"]
            t0 = time.perf_counter()
            answer = shop.send_webhook(endpoint, "orders/create", order_id)
            acked = time.perf_counter() - t0
            assert answer.status_code == 200, answer.text
            in_hub = in_shop = None
            while in_shop is None and time.perf_counter() - t0 < 120:
                with hub.session() as session:
                    now_balance = ledger.balance(session, member)
                if in_hub is None and now_balance > before:
                    in_hub = time.perf_counter() - t0
                if in_hub is not None and shop.loyalty()[str(customer_id)][0] == now_balance:
                    in_shop = time.perf_counter() - t0
                time.sleep(0.05)
            rows.append((acked, in_hub, in_shop))
            print(
                f"purchase {n}: webhook answered in {acked * 1000:.0f} ms; points in the hub after {in_hub:.2f} s, "
                f"in the shop after {in_shop:.2f} s"
            )
            time.sleep(random.uniform(0, args.poll))  # the next purchase lands anywhere in the tick
        daemon.stop.set()
        daemon.join()
        server.should_exit = True

    def line(label: str, values: list[float]) -> str:
        return f"{label:<34} median {statistics.median(values):6.2f}  max {max(values):6.2f}"

    print(f"\n{args.purchases} purchases, sensor tick every {args.poll:g} s, {args.members} people (seconds):")
    print(line("webhook answered", [r[0] for r in rows]))
    print(line("points in the hub's ledger", [r[1] for r in rows]))
    print(line("points written back to the shop", [r[2] for r in rows]))
    print(line("one webhook_sync run", daemon.runs))


if __name__ == "__main__":
    main()
