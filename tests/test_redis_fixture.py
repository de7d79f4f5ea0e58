from __future__ import annotations

import redis

from tests.support.redis_server import RedisServer


def test_suite_redis_is_real_and_can_be_stopped_and_restarted(redis_db: RedisServer) -> None:
    client = redis_db.client()
    client.set("bk:probe", "1")
    assert client.get("bk:probe") == b"1"
    redis_db.stop()
    try:
        client.get("bk:probe")
        raised = False
    except redis.ConnectionError:
        raised = True
    assert raised
    redis_db.start()
    assert redis_db.client().ping()
