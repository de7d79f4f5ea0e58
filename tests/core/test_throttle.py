from __future__ import annotations

import threading
import time

from bouncekeeper.core.throttle import ClientShare, ForgeryLimit, LineLimit, Lines, client_key


def test_a_client_is_blocked_after_its_budget_and_freed_after_the_window() -> None:
    limit = ForgeryLimit(per_client=3, window=60)
    assert not limit.blocked("192.0.2.1", 0)
    assert [limit.forged("192.0.2.1", t) for t in (0, 1, 2)] == [False, False, True]
    assert limit.blocked("192.0.2.1", 59)
    assert not limit.blocked("192.0.2.2", 59)  # another client is not concerned
    assert not limit.blocked("192.0.2.1", 60)
    assert not limit.forged("192.0.2.1", 61)  # a new window starts from nothing


def test_an_ipv6_client_is_its_slash_64() -> None:
    limit = ForgeryLimit(per_client=2, window=60)
    limit.forged("2001:db8:1:2::1", 0)
    assert limit.forged("2001:db8:1:2:ffff::9", 1)
    assert limit.blocked("2001:db8:1:2::77", 2)
    assert not limit.blocked("2001:db8:1:3::1", 2)
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("IPv6:2001:db8::1") == "2001:db8::/64"
    assert client_key("unix") == "unix"


def test_the_table_is_bounded_and_forgets_the_least_recently_seen() -> None:
    limit = ForgeryLimit(per_client=2, window=60, max_clients=100)
    limit.forged("198.51.100.1", 0)
    limit.forged("198.51.100.1", 0)
    assert limit.blocked("198.51.100.1", 1)
    for n in range(1000):
        limit.forged(f"10.0.{n // 256}.{n % 256}", 1)
    assert len(limit) == 100
    assert not limit.blocked("198.51.100.1", 2)  # forgotten: the bound, not a leak


def test_blocked_for_is_what_is_left_of_the_window() -> None:
    limit = ForgeryLimit(per_client=2, window=60.0)
    limit.forged("192.0.2.1", 100.0)
    assert limit.blocked_for("192.0.2.1", 100.0) == 0  # one failure of two: not blocked
    limit.forged("192.0.2.1", 110.0)
    assert limit.blocked_for("192.0.2.1", 130.0) == 30.0  # the window started at 100
    assert limit.blocked_for("192.0.2.1", 160.0) == 0
    assert limit.blocked_for("192.0.2.2", 130.0) == 0


def test_a_client_gets_its_share_and_waits_for_more_while_others_go_on() -> None:
    share = ClientShare(per_client=2)
    entered: list[str] = []
    release = threading.Event()

    def message(client: str) -> None:
        with share.slot(client):
            entered.append(client)
            release.wait(10)

    threads = [threading.Thread(target=message, args=("192.0.2.1",)) for _ in range(5)]
    threads.append(threading.Thread(target=message, args=("198.51.100.2",)))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(entered) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(entered) == ["192.0.2.1", "192.0.2.1", "198.51.100.2"]  # 2 of 5, and the other one
    release.set()
    for t in threads:
        t.join(10)
    assert len(entered) == 6
    assert len(share) == 0  # no client left in the table once its messages are done


def test_lines_of_a_kind_pass_up_to_the_burst_then_the_count_comes_with_the_next_window() -> None:
    limit = LineLimit(burst=3, interval=60)
    kind = ("bouncekeeper.lmtpd", "bad-address")
    assert [limit.admit(kind, t).write for t in (0, 1, 2, 3, 4, 59)] == [True] * 3 + [False] * 3
    # The first line of the next window reports the three held back, over the window's real span.
    assert limit.admit(kind, 70) == Lines(write=True, suppressed=3, span=70)
    assert limit.admit(kind, 71) == Lines(write=True)  # reported once
    assert [limit.admit(kind, 72).write for _ in range(3)] == [True, False, False]
    assert limit.admit(kind, 200) == Lines(write=True, suppressed=2, span=130)


def test_a_window_with_nothing_held_back_reports_nothing() -> None:
    limit = LineLimit(burst=2, interval=10)
    kind = ("bouncekeeper.policyd", "session")
    assert [limit.admit(kind, t) for t in (0, 1, 30)] == [Lines(write=True)] * 3


def test_each_kind_and_logger_has_its_own_budget() -> None:
    limit = LineLimit(burst=1, interval=60)
    assert limit.admit(("a", "idle"), 0).write
    assert not limit.admit(("a", "idle"), 1).write
    assert limit.admit(("a", "session"), 1).write
    assert limit.admit(("b", "idle"), 1).write


def test_the_table_of_kinds_is_bounded_the_least_recently_seen_forgotten_first() -> None:
    limit = LineLimit(burst=1, interval=60, max_kinds=3)
    for n in range(100):
        limit.admit(("log", f"kind{n}"), 0)
    assert len(limit) == 3
    assert limit.admit(("log", "kind99"), 1) == Lines(write=False)  # remembered: over its burst
    assert limit.admit(("log", "kind0"), 1) == Lines(write=True)  # forgotten: a fresh window


def test_concurrent_lines_pass_exactly_the_burst() -> None:
    limit = LineLimit(burst=50, interval=60)
    written: list[bool] = []

    def flood() -> None:
        for _ in range(1000):
            written.append(limit.admit(("log", "kind"), 0).write)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert written.count(True) == 50
    assert limit.admit(("log", "kind"), 60) == Lines(write=True, suppressed=3950, span=60)
