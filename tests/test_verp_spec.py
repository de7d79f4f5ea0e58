"""docs/verp-spec.md is what the code does: its test vectors come from core.verp, and the PHP and JavaScript
reference signers (contrib/verp/) reproduce them and sign addresses `bouncekeeper verp decode` accepts.

The snippets run under Debian's php-cli and nodejs (scripts/sysdeps.sh installs both).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

from bouncekeeper import verpkeys
from bouncekeeper.core import verp

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib" / "verp"
SPEC = ROOT / "docs" / "verp-spec.md"
BIN = pathlib.Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))

import verp_vectors  # type: ignore[import-not-found]  # noqa: E402  (scripts/ is put on sys.path above)

# Each driver signs every vector of a vectors file and prints, per vector, the address or the error kind.
PHP_DRIVER = r"""<?php
require $argv[1];
$doc = json_decode(file_get_contents($argv[2]), true);
$out = [];
foreach ($doc['vectors'] as $v) {
    try {
        $day = $v['day'] ?? null;
        $out[] = bk_verp_sign($v['recipient'], bk_verp_key($v['key']), $doc['bounce_domain'], $v['context'],
                              $day, $v['prefix']);
    } catch (InvalidArgumentException $e) {
        $out[] = 'error:' . explode(':', $e->getMessage())[0];
    }
}
echo json_encode($out, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES);
"""
NODE_DRIVER = r"""
import { readFileSync } from 'node:fs';
const { verpKey, verpSign, VerpError } = await import(process.argv[2]);
const doc = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const out = doc.vectors.map((v) => {
  try {
    return verpSign(v.recipient, verpKey(v.key), doc.bounce_domain,
                    { context: v.context, day: v.day ?? undefined, prefix: v.prefix });
  } catch (e) {
    if (!(e instanceof VerpError)) throw e;
    return `error:${e.reason}`;
  }
});
console.log(JSON.stringify(out));
"""


def _expected(vector: dict[str, object]) -> str:
    return str(vector["address"]) if "address" in vector else f"error:{vector['error']}"


def _run_snippet(language: str, tmp_path: pathlib.Path, vectors_file: pathlib.Path) -> list[str]:
    if language == "php":
        driver = tmp_path / "driver.php"
        driver.write_text(PHP_DRIVER)
        argv = ["php", str(driver), str(CONTRIB / "verp.php"), str(vectors_file)]
    else:
        driver = tmp_path / "driver.mjs"
        driver.write_text(NODE_DRIVER)
        argv = ["node", str(driver), (CONTRIB / "verp.mjs").as_uri(), str(vectors_file)]
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is missing: scripts/sysdeps.sh installs it")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: list[str] = json.loads(done.stdout)
    return result


def test_the_committed_vectors_are_what_the_code_produces() -> None:
    assert (CONTRIB / "vectors.json").read_text() == verp_vectors.render()


def test_the_specification_shows_the_committed_vectors() -> None:
    blocks = re.findall(r"^```json\n(.*?)^```", SPEC.read_text(), re.MULTILINE | re.DOTALL)
    assert verp_vectors.render() in blocks


def test_the_vectors_decode_as_valid_with_their_key() -> None:
    doc = json.loads(verp_vectors.render())
    signed = [v for v in doc["vectors"] if "address" in v]
    assert len(signed) >= 10
    for vector in signed:
        keyring = verp.Keyring.from_secrets([vector["key"].encode()])
        result = verp.decode(
            vector["address"].upper(),
            keyring=keyring,
            bounce_domain=doc["bounce_domain"],
            today=vector["day"],
            max_age_days=14,
            prefix=vector["prefix"],
        )
        assert result.status is verp.VerpStatus.VALID, vector
        assert result.recipient == vector["recipient"].lower()


@pytest.mark.parametrize("language", ["php", "node"])
def test_reference_snippet_reproduces_every_vector(language: str, tmp_path: pathlib.Path) -> None:
    doc = json.loads((CONTRIB / "vectors.json").read_text())
    got = _run_snippet(language, tmp_path, CONTRIB / "vectors.json")
    assert got == [_expected(v) for v in doc["vectors"]]


@pytest.mark.parametrize("language", ["php", "node"])
def test_reference_snippet_signs_today_what_bouncekeeper_verp_decode_accepts(
    language: str, tmp_path: pathlib.Path
) -> None:
    key_file = tmp_path / "verp.key"
    key_file.write_bytes(b"  snippet-test-key-0123456789abcdef\r\n")  # stripped alike on every side
    conf = tmp_path / "bk.toml"
    conf.write_text(f'[verp]\nbounce_domain = "Bounce.Example.NET"\nsecret_files = ["{key_file}"]\n')
    recipients = ["Carol@Example.com", "d+tag=x@example.net", "ünïcode@example.org"]
    # No "day": the snippet takes today's date from its own clock, as an application would.
    vectors = {
        "bounce_domain": "Bounce.Example.NET.",
        "vectors": [
            {"key": key_file.read_text(), "recipient": r, "context": "c1", "prefix": "bounces"}
            for r in recipients
        ],
    }
    vectors_file = tmp_path / "today.json"
    vectors_file.write_text(json.dumps(vectors))
    addresses = _run_snippet(language, tmp_path, vectors_file)
    for recipient, address in zip(recipients, addresses, strict=True):
        done = subprocess.run(
            [BIN / "bouncekeeper", "--config", str(conf), "verp", "decode", address],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        decoded = json.loads(done.stdout)
        assert (done.returncode, decoded["status"]) == (0, "valid"), (address, done.stderr)
        assert decoded["recipient"] == recipient.lower()
        assert decoded["context"] == "c1"
        assert decoded["day"] == verpkeys.today()


def test_verp_encode_reads_recipients_from_stdin(tmp_path: pathlib.Path) -> None:
    key_file = tmp_path / "verp.key"
    key_file.write_text("stdin-test-key-0123456789abcdef\n")
    conf = tmp_path / "bk.toml"
    conf.write_text(f'[verp]\nbounce_domain = "bounce.example.net"\nsecret_files = ["{key_file}"]\n')
    lines = "Alice@Example.org\n\nnot an address\nbob@example.net\tnews-7\r\n"
    done = subprocess.run(
        [BIN / "bouncekeeper", "--config", str(conf), "verp", "encode", "-", "--context", "n1",
         "--day", "20414"],
        input=lines, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 65  # EX_DATAERR: one line had no VERP address; the others were signed
    out = [json.loads(line) for line in done.stdout.splitlines()]
    keyring = verp.Keyring.from_secrets([b"stdin-test-key-0123456789abcdef"])
    sign: dict[str, Any] = dict(keyring=keyring, bounce_domain="bounce.example.net", day=20414)
    assert out[0] == {
        "recipient": "Alice@Example.org",
        "address": verp.encode("alice@example.org", context="n1", **sign),
    }
    assert out[1]["recipient"] == "not an address"
    assert "error" in out[1]
    assert out[2] == {
        "recipient": "bob@example.net",
        "address": verp.encode("bob@example.net", context="news-7", **sign),
    }
    assert len(out) == 3


def test_the_python_api_signs_the_vectors_from_key_files(tmp_path: pathlib.Path) -> None:
    doc = json.loads(verp_vectors.render())
    for index, vector in enumerate(doc["vectors"]):
        key_file = tmp_path / f"{index}.key"
        key_file.write_text(vector["key"] + "\n")
        signer = verpkeys.Signer.from_key_files(
            [str(key_file)], doc["bounce_domain"].upper(), vector["prefix"]
        )

        def clock(day: int = vector["day"]) -> float:  # the last half second of the vector's day
            return day * 86_400 + 86_399.5

        signer = dataclasses.replace(signer, clock=clock)
        if "address" in vector:
            assert signer.address_for(vector["recipient"], context=vector["context"]) == vector["address"]
        else:
            with pytest.raises(verp.VerpUnencodable):
                signer.address_for(vector["recipient"], context=vector["context"])


def test_verp_encode_answers_a_line_that_is_not_utf8_and_goes_on(tmp_path: pathlib.Path) -> None:
    key_file = tmp_path / "verp.key"
    key_file.write_text("stdin-test-key-0123456789abcdef\n")
    conf = tmp_path / "bk.toml"
    conf.write_text(f'[verp]\nbounce_domain = "bounce.example.net"\nsecret_files = ["{key_file}"]\n')
    done = subprocess.run(
        [BIN / "bouncekeeper", "--config", str(conf), "verp", "encode", "-"],
        input=b"\xff\xfe@example.org\nbob@example.net\n", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 65, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert out[0]["recipient"] == "\udcff\udcfe@example.org"
    assert "error" in out[0]
    assert out[1]["address"].startswith("bounces+bob=example.net+")


@pytest.mark.parametrize("language", ["php", "node"])
def test_an_upper_case_non_ascii_recipient_is_signed_as_python_signs_it_or_refused(
    language: str, tmp_path: pathlib.Path
) -> None:
    # Python lower-cases Unicode; PHP without mbstring can only lower-case ASCII, so it must refuse
    # rather than sign an address bouncekeeper would read as forged.
    key, day, recipient = "8f2c5a0e1d9b4736a5c8e0f1b2d3c4e5", 20414, "JÖRG@Bücher.example"
    vectors = {
        "bounce_domain": "bounce.example.net",
        "vectors": [{"key": key, "day": day, "recipient": recipient, "context": "", "prefix": "bounces"}],
    }
    vectors_file = tmp_path / "upper.json"
    vectors_file.write_text(json.dumps(vectors))
    [got] = _run_snippet(language, tmp_path, vectors_file)
    keyring = verp.Keyring.from_secrets([key.encode()])
    expected = verp.encode(recipient, keyring=keyring, bounce_domain="bounce.example.net", day=day)
    if got == "error:unencodable" and language == "php":
        has_mb = subprocess.run(
            ["php", "-r", "echo function_exists('mb_strtolower') ? 'yes' : 'no';"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert has_mb == "no"
    else:
        assert got == expected
