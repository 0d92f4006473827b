"""hub.ingest.read_ahead: pages in order, a read error after the pages before it, and a reader that
stops (and closes the connector's page generator) when the caller stops early."""

from __future__ import annotations

import threading

import pytest

from connectors import Page
from hub.ingest import read_ahead


def pages(count: int, *, fail_after: int | None = None, closed: list[bool] | None = None):
    try:
        for n in range(count):
            if fail_after is not None and n == fail_after:
                raise RuntimeError(f"page {n} failed")
            yield Page([{"id": str(n)}], cursor=f"2024-01-01T00:00:{n:02d}Z")
    finally:
        if closed is not None:
            closed.append(True)


def test_pages_come_out_in_order_and_complete():
    got = [page.cursor for page in read_ahead(pages(30))]
    assert got == [f"2024-01-01T00:00:{n:02d}Z" for n in range(30)]


def test_a_read_error_comes_after_the_pages_read_before_it():
    seen = []
    with pytest.raises(RuntimeError, match="page 3 failed"):
        for page in read_ahead(pages(10, fail_after=3)):
            seen.append(page.records[0]["id"])
    assert seen == ["0", "1", "2"]


def test_stopping_early_closes_the_source_and_ends_the_reader():
    closed: list[bool] = []
    before = threading.active_count()
    with pytest.raises(ValueError):
        for page in read_ahead(pages(1000, closed=closed)):
            if page.records[0]["id"] == "2":
                raise ValueError("storing failed")
    assert closed == [True]
    assert threading.active_count() == before
