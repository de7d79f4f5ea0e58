"""contrib/prometheus's alert rules and contrib/grafana's dashboard: promtool checks and unit-tests the rules,
and every metric the rules and the dashboard name is one a running daemon's `GET /metrics` serves."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest

from tests.support.exim import free_port, wait_for_port
from tests.support.lmtp import BOUNCE_DOMAIN, ListenerProcess, settings_for
from tests.support.prometheus import scrape
from tests.support.redis_server import RedisServer

ROOT = pathlib.Path(__file__).resolve().parents[1]
RULES = ROOT / "contrib" / "prometheus" / "bouncekeeper.rules.yml"
RULES_TEST = ROOT / "contrib" / "prometheus" / "bouncekeeper.rules.test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "bouncekeeper-dashboard.json"

# What PromQL spells that is not a metric: aggregations, functions (followed by "("), keywords, and the
# label names of grouping clauses (removed before the names are read).
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges: [5m], [$__range]
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana's variables
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        follows = text[match.end() :].lstrip()[:1]
        if follows == "(" or word in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def test_metric_names_reads_promql() -> None:
    expr = (
        'sum by (source) (rate(a_total{decision="tempfail", x=~"b_c"}[5m])) / '
        "histogram_quantile(0.99, sum without (le) (rate(b_bucket[$__rate_interval]))) > 0.05"
    )
    assert metric_names(expr) == {"a_total", "b_bucket"}


def rule_exprs() -> list[str]:
    # The rules file is YAML; its `expr:` values are single lines or `|` blocks, read without a YAML library.
    exprs, lines = [], RULES.read_text().splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2).strip() != "|":
            exprs.append(m.group(2))
            continue
        block = []
        for follow in lines[n + 1 :]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= len(m.group(1)):
                break
            block.append(follow.strip())
        exprs.append(" ".join(block))
    return exprs


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in data["panels"] for t in panel.get("targets", [])]


def served_metrics(text: str) -> set[str]:
    """Every sample name `GET /metrics` can serve: each family's name, and a histogram's series."""
    names = set()
    for line in text.splitlines():
        m = re.match(r"^# TYPE (\S+) (\S+)$", line)
        if m:
            name, kind = m.groups()
            names |= {name} | (
                {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else set()
            )
    return names


def test_promtool_checks_and_tests_the_rules() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = subprocess.run(
        ["promtool", "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_cover_what_the_issue_asks() -> None:
    names = set().union(*(metric_names(e) for e in rule_exprs()))
    assert names == {
        "bouncekeeper_outbox_depth",  # outbox backlog and dead letters
        "bouncekeeper_breakers_opened_total",
        "bouncekeeper_store_errors_total",
        "bouncekeeper_decisions_total",  # the tempfail rate
        "bouncekeeper_store_seconds_bucket",
    }


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> str:
    """The Prometheus text of a running `bouncekeeper lmtp` with metrics_listen."""
    tmp_path = tmp_path_factory.mktemp("metrics")
    port, metrics_port = free_port(), free_port()
    settings_for(tmp_path, redis_server.url)  # writes the VERP key
    conf = tmp_path / "bk.toml"
    conf.write_text(
        f'state_dir = "{tmp_path}"\n[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\n'
        f'secret_files = ["{tmp_path / "verp.key"}"]\n[redis]\nurl = "{redis_server.url}"\n'
        f'[lmtp]\nlisten = "127.0.0.1:{port}"\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
    )
    listener = ListenerProcess(conf, f"127.0.0.1:{port}", tmp_path / "lmtp.log").start()
    try:
        wait_for_port(metrics_port, proc=listener.proc)
        status, _, text = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
    finally:
        listener.stop()
    return text


def test_the_dashboard_and_the_rules_name_only_served_metrics(scraped: str) -> None:
    served = served_metrics(scraped)
    assert "bouncekeeper_breakers_opened_total 0" in scraped.splitlines()  # read from the store
    dashboard = dashboard_exprs()
    assert len(dashboard) >= 10
    for expr in dashboard + rule_exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= served, f"{expr}: {sorted(names - served)} not served by /metrics"


def test_the_dashboard_is_importable_json() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] == "bouncekeeper"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    # The data source is chosen at import time, never a fixed UID of someone's Grafana.
    assert {p["datasource"]["uid"] for p in data["panels"]} == {"${datasource}"}
    assert data["templating"]["list"][0]["type"] == "datasource"
