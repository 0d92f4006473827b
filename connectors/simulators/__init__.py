"""Faithful local fakes of the source systems, seeded from one shared population of people.

``start_simulators`` starts them on 127.0.0.1 and returns a ``SimulatorCluster`` that knows their
base URLs, the connector settings the hub needs to reach them, the ground truth of who is who, and
what each system now shows for every member's points and tier.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from connectors.simulators._server import Faults, Simulator
from connectors.simulators._world import STORES, SYSTEMS, World, generate_world
from schemas import ConnectorConfig

_SIMULATORS = {
    "shopify": "connectors.simulators.shopify:ShopifySimulator",
    "square": "connectors.simulators.square:SquareSimulator",
    "hubspot": "connectors.simulators.hubspot:HubSpotSimulator",
    "odoo": "connectors.simulators.odoo:OdooSimulator",
}
SHOP_PLUS = {"bucket_size": 400, "leak_rate": 20.0}
"""The simulated chain's shop is on Shopify Plus (a 400-request bucket draining 20 a second, ten times
the standard plan), as a chain of this size would be; the standard limits stay each simulator's default."""
OPTIONS: dict[str, dict[str, Any]] = {"shopify": SHOP_PLUS}

TOKENS = {
    "shopify": "shpat_memberhub_simulator",
    "square": "EAAAl_memberhub_simulator",
    "hubspot": "pat-na1-memberhub-simulator",
    "odoo": "odoo_memberhub_simulator_key",
}


class SimulatorCluster:
    def __init__(self, world: World, simulators: dict[str, Simulator]) -> None:
        self.world = world
        self.simulators = simulators

    @property
    def base_urls(self) -> dict[str, str]:
        return {name: sim.base_url for name, sim in self.simulators.items()}

    def connector_configs(self) -> dict[str, ConnectorConfig]:
        """Settings for the hub's connectors, one per simulator, named after the system."""
        return {
            name: ConnectorConfig(kind=name, base_url=sim.base_url, token=sim.token, **sim.connector_settings())
            for name, sim in self.simulators.items()
        }

    def truth(self) -> dict[tuple[str, str], int]:
        """(system, member id in that system) -> the person it really is."""
        return {(name, ext): pid for name, sim in self.simulators.items() for ext, pid in sim.truth().items()}

    def loyalty(self) -> dict[tuple[str, str], tuple[int | None, str | None]]:
        """(system, member id) -> (points, tier) as that system now shows them (None: nothing written)."""
        return {(name, ext): shown for name, sim in self.simulators.items() for ext, shown in sim.loyalty().items()}

    def request_counts(self) -> dict[str, dict[str, int]]:
        return {name: dict(sim.requests) for name, sim in self.simulators.items()}

    def stop(self) -> None:
        for sim in self.simulators.values():
            sim.stop()

    def __enter__(self) -> SimulatorCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulators(
    systems: tuple[str, ...] | list[str] = SYSTEMS,
    *,
    members: int = 200,
    seed: int = 7,
    base_port: int = 0,
    state_dir: Path | None = None,
) -> SimulatorCluster:
    """Start one simulator per system on 127.0.0.1 (ports base_port, base_port+1, … or free ones)."""
    unknown = [s for s in systems if s not in _SIMULATORS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; valid: {', '.join(_SIMULATORS)}")
    world = generate_world(members, seed, systems=tuple(systems))
    simulators: dict[str, Any] = {}
    for offset, system in enumerate(systems):
        module, cls = _SIMULATORS[system].split(":")
        sim = getattr(import_module(module), cls)(
            world, token=TOKENS[system], state_dir=state_dir, **OPTIONS.get(system, {})
        )
        sim.start(base_port + offset if base_port else 0)
        simulators[system] = sim
    return SimulatorCluster(world, simulators)


__all__ = [
    "STORES",
    "SYSTEMS",
    "Faults",
    "Simulator",
    "SimulatorCluster",
    "World",
    "generate_world",
    "start_simulators",
]
