"""The milter against hostile SMTP clients (docs/hostile.md), driven by pymilter's TestCtx against the real
Service and a real redis-server: bounds asserted as counts, never times."""

from __future__ import annotations

import contextlib
import pathlib
import threading

import Milter
import pytest

from bouncekeeper.core import throttle
from bouncekeeper.daemons import metrics
from tests.support.milter_harness import FIXTURES, INBOUND_IP, Harness, harness, make_harness
from tests.support.redis_server import RedisServer
from tests.support.triage_spy import count_triages

__all__ = ["harness"]  # the fixture

BOUNCE = (FIXTURES / "gmail-userunknown.eml").read_bytes()


def limited(limit: str) -> float:
    return metrics.LIMITED.value("milter", limit)


def forged(h: Harness, rcpt: str) -> str:
    good = h.verp_for(rcpt)
    return good[:-25] + ("0" if good[-25] != "0" else "1") + good[-24:]


@pytest.fixture
def enforcing(tmp_path: pathlib.Path, redis_db: RedisServer) -> Harness:
    return make_harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')


def test_a_bounce_to_many_verp_addresses_is_classified_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = count_triages(monkeypatch)
    harness.connect(INBOUND_IP)
    rcpts = [harness.verp_for(f"user{n}@example.net") for n in range(20)]
    assert harness.feed(BOUNCE, "", *rcpts, *rcpts) == Milter.DISCARD
    assert len(runs) == 1
    for n in range(20):
        (event,) = harness.store.view(f"user{n}@example.net").events  # a duplicate RCPT counts once
        assert event["kind"] == "permanent"


def test_three_forged_addresses_in_a_connection_get_421(enforcing: Harness) -> None:
    h = enforcing
    before = limited("forged-session")
    h.connect(INBOUND_IP)
    h.ctx._envfrom("<>")
    answers = []
    for n in range(3):
        answers.append((h.ctx._envrcpt(f"<{forged(h, f'g{n}@example.net')}>"), h.ctx._reply[0]))
    assert answers == [(Milter.REJECT, "550"), (Milter.REJECT, "550"), (Milter.TEMPFAIL, "421")]
    assert h.ctx._reply[1] == "4.7.0"  # Postfix and Sendmail end the session on a 421
    assert limited("forged-session") - before == 1
    h.store.close()


def test_a_client_that_keeps_guessing_gets_the_same_answer_for_a_valid_address(enforcing: Harness) -> None:
    h = enforcing
    before = limited("forged-client")
    valid = h.verp_for("alice@example.net")
    for n in range(throttle.PER_CLIENT):  # new connections, one guess each
        h.connect(INBOUND_IP)
        h.ctx._envfrom("<>")
        h.ctx._envrcpt(f"<{forged(h, f'g{n}@example.net')}>")
    assert h.ctx._reply[0] == "421"
    h.connect(INBOUND_IP)
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<{valid}>") == Milter.TEMPFAIL
    assert h.ctx._reply[:2] == ("421", "4.7.0")
    assert limited("forged-client") - before == 2
    # Another client is not concerned.
    h.connect("198.51.100.7")
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<{valid}>") == Milter.CONTINUE
    h.store.close()


@pytest.mark.parametrize(
    "local", ["al\x00ice", "ali\x1bce", "\u202ealice", "al\udcffice"], ids=["nul", "esc", "rlo", "not-utf8"]
)
def test_a_recipient_with_bad_characters_is_550_5_1_3(harness: Harness, local: str) -> None:
    before = limited("bad-address")
    harness.connect(INBOUND_IP)
    harness.ctx._envfrom("<>")
    assert harness.ctx._envrcpt(f"<{local}@{harness.runtime.routing.bounce_domain}>") == Milter.REJECT
    assert harness.ctx._reply[:2] == ("550", "5.1.3")
    assert limited("bad-address") - before == 1


def test_bounce_addresses_beyond_the_cap_get_452_then_421(harness: Harness) -> None:
    before = limited("recipients")
    harness.connect(INBOUND_IP)
    harness.ctx._envfrom("<>")
    rcpt = f"<{harness.verp_for('alice@example.net')}>"
    answers = []
    for _ in range(2000):
        answers.append((harness.ctx._envrcpt(rcpt), harness.ctx._reply and harness.ctx._reply[0]))
    assert [a for a, _ in answers[:100]] == [Milter.CONTINUE] * 100
    assert set(answers[100:200]) == {(Milter.TEMPFAIL, "452")}
    assert answers[200] == (Milter.TEMPFAIL, "421")
    assert limited("recipients") - before == 1900
    harness.ctx._setsymval("i", "4QTEST1")  # a new transaction starts afresh
    assert harness.feed(BOUNCE, "", harness.verp_for("bob@example.net")) == Milter.DISCARD


def test_a_clients_bounces_wait_for_its_share_while_another_clients_go_on(harness: Harness) -> None:
    share = harness.runtime.share
    results: list[int] = []
    with contextlib.ExitStack() as held:
        for _ in range(share.per_client):  # the client's other sessions are busy with their bounces
            held.enter_context(share.slot(INBOUND_IP))
        harness.connect("198.51.100.7")  # another client goes on at once
        assert harness.feed(BOUNCE, "", harness.verp_for("bob@example.net")) == Milter.DISCARD
        harness.connect(INBOUND_IP)
        waiting = threading.Thread(
            target=lambda: results.append(harness.feed(BOUNCE, "", harness.verp_for("carol@example.net")))
        )
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # its turn has not come
        assert not results
        assert harness.store.view("carol@example.net").events == []
    waiting.join(10)
    assert results == [Milter.DISCARD]
    assert harness.store.view("carol@example.net").events
