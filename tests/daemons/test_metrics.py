"""metrics.serve: the unauthenticated /metrics endpoint of the milter and the LMTP listener."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from bouncekeeper.daemons import metrics
from tests.support.prometheus import samples, scrape


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    servers = []

    def start(listen: str = "127.0.0.1:0", refresh: Callable[[], None] | None = None) -> str:
        server = metrics.serve(listen, refresh)
        servers.append(server)
        host, port = server.server_address[:2]
        return f"http://{'[' + str(host) + ']' if ':' in str(host) else str(host)}:{port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_serves_the_registry_and_404_for_any_other_path(serve: Callable[..., str]) -> None:
    base = serve()
    metrics.DECISIONS.labels("lmtp", "accept").inc()
    status, content_type, text = scrape(base + "/metrics")
    assert status == 200
    assert content_type == metrics.CONTENT_TYPE
    assert samples(text)['bouncekeeper_decisions_total{source="lmtp",decision="accept"}'] >= 1
    # The same registry (but the open-connection gauge: the scrape's own connection is counted while it
    # is served, and the first scrape's may still be, until the server has seen its client close).
    scraped, rendered = samples(scrape(base + "/metrics?x=1")[2]), samples(metrics.REGISTRY.render())
    gauge = 'bouncekeeper_http_connections{server="metrics"}'
    assert scraped.pop(gauge) in {1, 2}
    rendered.pop(gauge)
    assert scraped == rendered
    for path in ("/", "/metrics/", "/openapi.json"):
        assert scrape(base + path)[0] == 404, path


def test_a_failing_refresh_still_serves_this_process_counts(serve: Callable[..., str]) -> None:
    calls = []

    def refresh() -> None:
        calls.append(1)
        raise ConnectionError("redis down")

    status, _, text = scrape(serve(refresh=refresh) + "/metrics")
    assert status == 200
    assert calls == [1]
    assert "# TYPE bouncekeeper_bounces_total counter" in text


def test_binds_where_configured_including_ipv6_loopback(serve: Callable[..., str]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        base = serve("[::1]:0")
    except OSError:
        pytest.skip("::1 not configured here")
    assert base.startswith("http://[::1]:")
    assert scrape(base + "/metrics")[0] == 200


def test_a_bound_counter_counts_in_the_counter_it_came_from() -> None:
    registry = metrics.Registry()
    counter = registry.counter("x_total", "help", ("a", "b"))
    bound = counter.labels("p", "q")
    bound.inc()
    bound.inc()
    assert counter.value("p", "q") == 2
    assert 'x_total{a="p",b="q"} 2' in registry.render()
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("only-one")
