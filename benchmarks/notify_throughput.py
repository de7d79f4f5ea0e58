"""Webhook delivery rate of `bouncekeeper notify`, against a baseline measured in the same run.

Baseline: the same signed POSTs sent straight from a loop (webhook.post, one connection per request, as
the notifier does), no Redis. Then the notifier draining an outbox of the same size: per-address URL
target, and a batch target (100 addresses per request). Receiver: stdlib ThreadingHTTPServer on
loopback answering 200. Prints requests/s and notifications/s and the ratios to the baseline.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "milter"), str(ROOT)]

from tests.support.http_receiver import Receiver  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

from bouncekeeper import config  # noqa: E402 -- after the path set-up
from bouncekeeper.daemons import notify, webhook  # noqa: E402 -- after the path set-up
from bouncekeeper.store import Store  # noqa: E402
from bouncekeeper.store.keys import Keys  # noqa: E402

N = 2000
SECRET = b"benchmark-secret-0123456789"


def baseline(receiver: Receiver) -> float:
    body = json.dumps({"type": "disabled", "address": "x@example.org"}).encode()
    start = time.perf_counter()
    for i in range(N):
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", webhook.TIMESTAMP_HEADER: ts,
                   webhook.SIGNATURE_HEADER: webhook.sign(SECRET, ts, body)}  # fmt: skip
        attempt = webhook.post(f"{receiver.url}/emails/u{i}%40example.org/suspend", body, headers, 10.0)
        assert attempt.result is webhook.Delivery.DELIVERED
    return time.perf_counter() - start


def through_notifier(server: RedisServer, receiver: Receiver, target: config.NotifyTarget) -> float:
    client = server.client()
    client.flushall()
    prefix = "bench:"
    for i in range(N):
        entry = dict.fromkeys(notify.FIELDS, "")
        entry.update(type="disabled", address=f"u{i}@example.org", event_id=f"e{i}", sender="app@example.org")
        client.xadd(Keys(prefix).outbox, entry)  # type: ignore[arg-type]
    settings = dataclasses.replace(config.NotifySettings(targets=(target,)), poll=0.05)
    notifier = notify.Notifier(
        Store(client, config.RedisSettings(prefix=prefix)),
        settings,
        secrets={target.name: SECRET},
        consumer="bench",
    )
    notifier.ensure_group()
    start = time.perf_counter()
    while client.xlen(Keys(prefix).outbox):
        notifier.run_once()
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bk-bench-") as directory:
        server = RedisServer(pathlib.Path(directory))
        server.start()
        receiver = Receiver().start()
        try:
            base = baseline(receiver)
            template = receiver.url + "/emails/{address}/suspend"
            url = config.NotifyTarget(name="app", default=True, url=template, secret_file="-")
            batch = config.NotifyTarget(name="app", default=True, batch_url=receiver.url + "/batch",
                                        batch_size=100, secret_file="-")  # fmt: skip
            per_address = through_notifier(server, receiver, url)
            batched = through_notifier(server, receiver, batch)
        finally:
            receiver.stop()
            server.stop()
    print(f"notifications: {N}")
    print(f"baseline, direct signed POSTs:     {N / base:8.0f} requests/s  (1.00)")
    ratio = base / per_address
    print(f"notifier, per-address URL target:  {N / per_address:8.0f} notifications/s  ({ratio:.2f})")
    print(f"notifier, batch target (100/req):  {N / batched:8.0f} notifications/s  ({base / batched:.2f})")


if __name__ == "__main__":
    main()
