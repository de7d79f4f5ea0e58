"""The admin page's charts (`GET /charts`) in a real headless Chromium on a populated store: the numbers
the SVG draws are read back from the page and compared with `bouncekeeper report --json` on the same store;
a screenshot is kept (`.artifacts/charts.png`, and in the test's tmp dir)."""

from __future__ import annotations

import base64
import http.client
import json
import pathlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from bouncekeeper import config
from bouncekeeper.daemons import httpd
from bouncekeeper.daemons.http_backend import ServiceBackend
from bouncekeeper.daemons.http_handler import App
from bouncekeeper.service import charts
from bouncekeeper.service.bounces import Service
from tests.support.chromium import Chromium
from tests.support.redis_server import RedisServer
from tests.support.report_store import make_conf, populate, run

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "charts-test-token-0123456789abcdef"


@pytest.fixture
def populated(redis_db: RedisServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> str:
    conf = make_conf(tmp_path, redis_db.url, "observe")
    populate(conf, capsys)
    return conf


@pytest.fixture
def server(populated: str) -> Iterator[int]:
    service = Service.open(config.load(populated))
    http = config.HttpSettings()
    srv = httpd.make_server(App(ServiceBackend(service), TOKEN.encode(), http), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    service.close()


READ_PAGE = """(() => {
  const rows = id => Object.fromEntries([...document.querySelectorAll('#' + id + ' g.row')]
      .map(g => [g.dataset.label, Number(g.dataset.value)]));
  const days = {};
  for (const r of document.querySelectorAll('#chart-days rect.bar')) {
    days[r.dataset.day] = days[r.dataset.day] || {};
    days[r.dataset.day][r.dataset.kind] = Number(r.dataset.value);
  }
  const figures = Object.fromEntries([...document.querySelectorAll('[data-figure]')]
      .map(td => [td.dataset.figure, Number(td.innerText)]));
  const box = document.getElementById('chart-days').getBoundingClientRect();
  return JSON.stringify({domains: rows('chart-domains'), reasons: rows('chart-reasons'), days, figures,
                         verdict: document.getElementById('verdict').innerText, width: box.width});
})()"""


def test_charts_in_chromium_match_the_report(
    server: int, populated: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    with tempfile.TemporaryDirectory(prefix="bk-chromium-") as profile:
        browser = Chromium(pathlib.Path(profile))
        try:
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": 900, "height": 1800, "deviceScaleFactor": 1, "mobile": False},
                session=browser.session,
            )
            browser.open(f"http://127.0.0.1:{server}/")
            browser.type_into("#token", TOKEN)
            browser.click("#login")
            browser.click("#charts-link")
            page = json.loads(browser.evaluate(READ_PAGE))
            browser.type_into("#address", "gone@a.example")
            browser.click("#show-timeline")
            dots = browser.evaluate(
                "[...document.querySelectorAll('#chart-timeline circle.event')].map(c => c.dataset.kind)"
            )
            state = browser.evaluate("document.getElementById('timeline-state').innerText")
            shot = browser.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session=browser.session,
            )
        finally:
            browser.close()
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "charts.png").write_bytes(png)
    artifacts = ROOT / ".artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "charts.png", artifacts / "charts.png")

    code, out = run(populated, capsys, "report", "--json")
    assert code == 0
    report = json.loads(out)
    b = report["bounces"]
    assert page["domains"] == b["by_domain"] == {"a.example": 4, "b.example": 2}
    assert page["reasons"] == b["by_reason"]
    drawn_days = {d["day"]: {k: v for k, v in d.items() if k != "day" and v} for d in b["per_day"]}
    assert page["days"] == {day: kinds for day, kinds in drawn_days.items() if kinds}
    assert sum(sum(k.values()) for k in page["days"].values()) == b["total"] == 6
    assert page["figures"] == {
        "bounces": b["total"],
        "forged": report["forged"],
        "loops": report["loops"],
        "unvouched": report["unvouched"]["messages"],
        "at-threshold": report["addresses"]["at_threshold_active_count"],
        "near-threshold": report["addresses"]["near_threshold_count"],
        "open-breakers": len(report["open_breakers"]),
        "backlog": report["notifier"]["backlog"],
        "dead-letters": report["notifier"]["dead_letters"],
    }
    assert page["verdict"] == report["enforce"]["text"]
    assert page["width"] > 0  # drawn, not just present
    # gone@a.example: two hard failures, the second reaching the (observe mode) threshold.
    assert sorted(dots) == ["permanent", "permanent"]
    assert state == "gone@a.example: active, 2 events"


def test_charts_page_needs_a_session_and_a_sane_window(server: int) -> None:
    def get(path: str, cookie: str = "") -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        return response.status, response.getheader("Location") or "", body

    assert get("/charts")[:2] == (303, "/")  # no session: to the login form
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    conn.request("POST", "/login", f"token={TOKEN}", headers=form)
    login = conn.getresponse()
    login.read()
    cookie = (login.getheader("Set-Cookie") or "").split(";")[0]
    conn.close()
    assert cookie
    status, _, body = get("/charts?since=1d", cookie)
    assert status == 200
    assert '<svg id="chart-days"' in body
    assert get("/charts?since=1y", cookie)[0] == 400
    assert get("/charts?since=91d", cookie)[0] == 400
    assert get("/charts?address=not-an-address", cookie)[0] == 400


def test_svg_escapes_what_strangers_wrote() -> None:
    svg = charts.ranking("x", "t", {'<script>alert(1)</script>"': 3})
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    dots = charts.timeline("a@b.example", [{"at": time.time(), "kind": "<b>", "reason": "&"}])
    assert "<b>" not in dots
    days = charts.days_by_kind([{"day": "2026-01-01", "permanent": 2}], ("permanent",))
    assert 'data-value="2"' in days
