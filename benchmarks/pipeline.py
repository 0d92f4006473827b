"""Time the whole pipeline on the embedded default against the simulators and print figures.

    .venv/bin/python benchmarks/pipeline.py --members 2000

Not part of the test run: machines are shared and noisy, so figures belong in notes, not asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance

from connectors.simulators import start_simulators
from hub.demo import write_demo_config
from hub.service import Hub
from orchestration.runner import run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_simulators(members=args.members, seed=args.seed) as cluster:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'hub.db'}"
        config = Path(tmp) / "hub.yaml"
        write_demo_config(config, cluster.connector_configs(), url)
        Hub(config_path=config).upgrade()
        records = sum(len(v) for v in cluster.world.members.values()) + sum(
            len(v) for v in cluster.world.orders.values()
        )
        for label in ("first run", "re-run (nothing changed)"):
            started = time.perf_counter()
            figures = run_pipeline(str(config), database_url=url, instance=DagsterInstance.ephemeral())
            seconds = time.perf_counter() - started
            sent = sum(v.get("sent", 0) for k, v in figures.items() if k.startswith("writeback/"))
            print(f"{label:26} {seconds:7.2f} s  {records / seconds:9.0f} source records/s  write-backs sent {sent}")


if __name__ == "__main__":
    main()
