"""The store over rediss:// against a real redis-server with TLS, and the errors a bad TLS setup gives.

A throwaway CA, a server certificate for 127.0.0.1 (an IP SAN) and a client certificate are made with
the openssl CLI; redis-server (Debian's is built with TLS) listens with TLS on a free loopback port and,
as `tls-auth-clients yes`, requires the client certificate, so a test that records proves the
connection really was TLS with the configured files.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bouncekeeper import cli
from bouncekeeper.config import RedisSettings
from bouncekeeper.core.scoring import Effect, Mode, Rules
from bouncekeeper.store import Store, StoreUnavailable
from bouncekeeper.store.event import Event, EventKind, Source
from bouncekeeper.store.model import Item
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl CLI makes the certificates"
)

RULES = Rules(mode=Mode.ENFORCE, breaker_addresses=0)
T0 = 1_763_769_600.0


@dataclass(frozen=True)
class Pki:
    ca: pathlib.Path
    other_ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path


def _openssl(directory: pathlib.Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _ca(directory: pathlib.Path, name: str) -> None:
    # OpenSSL 3's `req -x509` marks the certificate as a CA (basicConstraints CA:TRUE).
    _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}")  # fmt: skip


def _signed(directory: pathlib.Path, name: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _openssl(directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other")
    _signed(d, "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    _signed(d, "client", "extendedKeyUsage=clientAuth")
    return Pki(
        d / "ca.crt", d / "other.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls_port(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = _free_port()
    server = RedisServer(
        tmp_path_factory.mktemp("redis-tls"),
        # No plain TCP port (0); the unix socket stays plain: RedisServer waits on it until Redis is up.
        extra=("--tls-port", str(port), "--tls-cert-file", str(pki.server_cert),
               "--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", str(pki.ca),
               "--tls-auth-clients", "yes"),
    )  # fmt: skip
    server.start()
    yield port
    server.stop()


def _settings(
    port: int, ca: pathlib.Path, pki: Pki, *, host: str = "127.0.0.1", client: bool = True
) -> RedisSettings:
    return RedisSettings(
        url=f"rediss://{host}:{port}/0",
        tls_ca_file=str(ca),
        tls_cert_file=str(pki.client_cert) if client else "",
        tls_key_file=str(pki.client_key) if client else "",
        connect_timeout=1.0,
        socket_timeout=1.0,
        retries=0,
    )


def _item(id: str) -> Item:
    event = Event(at=T0, kind=EventKind.PERMANENT, source=Source.CLI, address="tls@example.org", id=id,
                  status="5.1.1", reason="userunknown",
                  diagnostic="smtp; 550 5.1.1 no such user")  # fmt: skip
    return Item("tls@example.org", Effect.HARD, event)


def test_the_store_records_over_rediss_with_the_configured_ca_and_client_certificate(
    tls_port: int, pki: Pki
) -> None:
    store = Store.from_settings(_settings(tls_port, pki.ca, pki))
    store._client.flushall()
    (result,) = store.record([_item("t1")], now=T0, rules=RULES)
    assert (result.score, result.duplicate) == (1, False)
    assert store.record([_item("t1")], now=T0, rules=RULES)[0].duplicate
    view = store.view("tls@example.org")
    assert view.hard_score == 1
    assert view.events[0]["diagnostic"] == "smtp; 550 5.1.1 no such user"  # joined from the stream
    store.close()


@pytest.mark.parametrize(
    ("case", "ca", "host", "client"),
    [
        ("a CA that did not sign the server's certificate", "other", "127.0.0.1", True),
        ("a host name the certificate does not name", "ca", "localhost", True),
        ("no client certificate for a server that requires one", "ca", "127.0.0.1", False),
    ],
)
def test_a_bad_tls_setup_is_store_unavailable(
    tls_port: int, pki: Pki, case: str, ca: str, host: str, client: bool
) -> None:
    store = Store.from_settings(
        _settings(tls_port, pki.other_ca if ca == "other" else pki.ca, pki, host=host, client=client)
    )
    with pytest.raises(StoreUnavailable, match="redis unavailable"):
        store.record([_item("t2")], now=T0, rules=RULES)
    with pytest.raises(StoreUnavailable):
        store.is_suppressed("tls@example.org")
    store.close()


def test_the_cli_with_a_wrong_ca_exits_tempfail_without_a_traceback(
    tls_port: int, pki: Pki, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "bk.toml"
    conf.write_text(
        f'[redis]\nurl = "rediss://127.0.0.1:{tls_port}/0"\ntls_ca_file = "{pki.other_ca}"\n'
        f'tls_cert_file = "{pki.client_cert}"\ntls_key_file = "{pki.client_key}"\nretries = 0\n'
    )
    code = cli.main(["--config", str(conf), "show", "tls@example.org"])
    captured = capsys.readouterr()
    assert code == 75  # EX_TEMPFAIL, as for any unreachable Redis
    assert "Traceback" not in captured.err + captured.out
    assert "certificate verify failed" in captured.err + captured.out


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file"):
        RedisSettings(url="rediss://127.0.0.1:6379/0", tls_cert_file="client.crt")
