"""A probe through a real Postfix, bounced by Postfix itself, recognised as the probe's bounce.

`bouncekeeper probes run` hands the probe to a private Postfix (the milter tests' harness,
tests/support/postfix.py, from the milter branch); the remote MX (smtp-sink -f RCPT) refuses the
recipient, so Postfix writes its own DSN to the probe's envelope sender, the signed VERP token
address; transport_maps sends mail for the bounce domain to a second sink, where the test picks the
DSN up and gives it to the Service as the listener would. No hand-made bounce anywhere.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Iterator

import pytest

from bouncekeeper import config
from bouncekeeper.core.scoring import State
from bouncekeeper.daemons import probes
from bouncekeeper.service.bounces import Arrival, Service, Source
from bouncekeeper.store import Store
from bouncekeeper.store.event import Event, EventKind
from tests.support.redis_server import RedisServer

postfix = pytest.importorskip(
    "tests.support.postfix", reason="the Postfix harness comes from the milter branch"
)

pytestmark = [
    pytest.mark.mta,
    pytest.mark.skipif(not postfix.have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)"),
]

DOMAIN = "bounce.example.net"
KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def mta() -> Iterator[tuple[object, object, object]]:
    with tempfile.TemporaryDirectory(prefix="bk-probe-pf-") as directory:
        d = pathlib.Path(directory)
        d.chmod(0o755)  # Postfix's daemons run as user postfix and must traverse it
        refusing = postfix.SmtpSink(d / "mx", reject="RCPT")
        bounces = postfix.SmtpSink(d / "bounces")
        refusing.start()
        bounces.start()
        instance = postfix.Postfix(
            d / "postfix",
            relay_port=refusing.port,
            milter_socket=None,
            settings={"transport_maps": f"inline:{{ {DOMAIN}=smtp:[127.0.0.1]:{bounces.port} }}"},
        )
        try:
            instance.start()
            yield instance, refusing, bounces
        finally:
            instance.stop()
            bounces.stop()
            refusing.stop()


def test_a_probe_bounced_by_postfix_confirms_the_disable(
    mta: tuple[object, object, object], redis_db: RedisServer, tmp_path: pathlib.Path
) -> None:
    instance, _refusing, bounces = mta
    (tmp_path / "verp.key").write_bytes(KEY)
    settings = config.loads(
        f'[verp]\nbounce_domain = "{DOMAIN}"\nsecret_files = ["{tmp_path / "verp.key"}"]\n'
        f'[redis]\nurl = "{redis_db.url}"\n'
        f'[probes]\nenabled = true\nsmtp_port = {instance.port}\nsender = "no-reply@app.example.org"\n'  # type: ignore[attr-defined]
        'reenable_url = "https://app.example.org/emails/{address}/enable"\n'
    )
    service = Service(settings, Store.from_settings(settings.redis))
    try:
        address = "gone@dead.example"
        service.store.admin(address, "disable", Event(at=0, kind=EventKind.DISABLED, source=Source.CLI,
                            address=address), state=State.DISABLED_BOUNCES)  # fmt: skip
        report = probes.run(service, probes.smtp_sender("127.0.0.1", instance.port))  # type: ignore[attr-defined]
        assert report.sent == [address]
        (sent,) = [s.probe for s in probes.history(service, address)]
        assert sent.result == "sent"

        dsn = bounces.wait_for(lambda m: sent.envelope.lower() in [r.lower() for r in m.recipients])  # type: ignore[attr-defined]
        assert dsn.sender == ""  # a null sender: Postfix's own bounce
        outcome = service.process_bounce(
            Arrival(
                dsn.text.encode(), envelope_rcpt=dsn.recipients[0], envelope_sender="", source=Source.LMTP
            )
        )
        (decision,) = outcome.recorded
        assert decision.address == address
        (status,) = probes.history(service, address)
        assert status.bounced  # recognised as the probe's bounce: the disable is confirmed
        (event,) = [e for e in service.store.view(address).events if e.get("context") == "probe"]
        assert event["status"].startswith("5.")
        assert probes.run(service, probes.smtp_sender("127.0.0.1", instance.port)).skipped[address] == (  # type: ignore[attr-defined]
            "a probe bounced: disable confirmed"
        )
    finally:
        service.close()
