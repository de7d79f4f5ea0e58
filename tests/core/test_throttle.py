from __future__ import annotations

import threading
import time

from bouncekeeper.core.throttle import ClientShare, ForgeryLimit, client_key


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
