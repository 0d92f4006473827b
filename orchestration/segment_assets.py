"""Segments after every ledger and tier update: the member view, RFM, churn risk and segment
membership (with history), the marketing events due, then tags to each write-back system and the
trigger webhooks. Bodies are a line or two: the work lives in ``hub/``."""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from orchestration.assets import CONNECTOR_RETRY, _result, _talk_to
from schemas import HubConfig


def segment_assets(config: HubConfig) -> list[AssetsDefinition]:
    @asset(
        key=AssetKey("segments"),
        deps=[AssetKey("ledger"), AssetKey("tiers")],
        group_name="hub",
        required_resource_keys={"hub"},
        description="Member view (RFM, churn risk), segment membership with history, marketing events due.",
    )
    def segments(context: AssetExecutionContext) -> MaterializeResult:
        from hub.segments import refresh

        figures = refresh(context.resources.hub.hub())
        return MaterializeResult(
            metadata={
                "members": figures["members"],
                "entered": figures["entered"],
                "left": figures["left"],
                **{f"segment/{k}": v for k, v in figures["sizes"].items()},
                **{f"event/{k}": v for k, v in figures["events"].items()},
            }
        )

    @asset(
        key=AssetKey(["triggers", "webhooks"]),
        deps=[segments],
        group_name="writeback",
        retry_policy=CONNECTOR_RETRY,
        required_resource_keys={"hub"},
        description="Marketing events posted, signed, to the configured webhook URL (retried; logged).",
    )
    def trigger_webhooks(context: AssetExecutionContext) -> MaterializeResult:
        from hub import triggers
        from hub.segments import load_segments

        counts = triggers.deliver(context.resources.hub.hub().session, load_segments().triggers)
        return _result(dict(counts.__dict__))

    tags = [tags_asset(n) for n, c in config.connectors.items() if c.enabled and c.writeback]
    return [segments, trigger_webhooks, *tags]


def tags_asset(name: str) -> AssetsDefinition:
    @asset(
        key=AssetKey(["tags", name]),
        group_name="writeback",
        deps=[AssetKey("segments")],
        retry_policy=CONNECTOR_RETRY,
        required_resource_keys={"hub"},
        pool=f"api-{name}",
        description=f"Segment and event tags written back to {name} (only changes).",
    )
    def _tags(context: AssetExecutionContext) -> MaterializeResult:
        from hub.segment_writeback import push_destination
        from hub.segments import load_segments

        hub = context.resources.hub.hub()
        counts = _talk_to(name, lambda: push_destination(hub, name, load_segments()))
        counts["errors"] = len(counts["errors"])
        return _result(counts)

    return _tags
