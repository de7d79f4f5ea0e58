from __future__ import annotations

import pathlib

import pytest

from bouncekeeper import config


def test_defaults_when_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    settings = config.load()
    assert settings.verp.max_age_days == 14
    assert settings.source == "<defaults>"


def test_values_are_read_and_typed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bk.toml"
    path.write_text('[verp]\nbounce_domain = "b.example"\nsecret_files = ["/k1", "/k2"]\nmax_age_days = 3\n')
    settings = config.load(path)
    assert settings.verp.bounce_domain == "b.example"
    assert settings.verp.secret_files == ("/k1", "/k2")
    assert settings.verp.max_age_days == 3


def test_the_default_path_is_read_when_it_exists(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config.DEFAULT_PATH == "/etc/bouncekeeper/bouncekeeper.toml"
    path = tmp_path / "bouncekeeper.toml"
    path.write_text('[verp]\nbounce_domain = "etc.example"\n')
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(path))
    assert config.load().verp.bounce_domain == "etc.example"
    assert config.load().source == str(path)


def test_env_var_names_the_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bk.toml"
    path.write_text('[verp]\nbounce_domain = "env.example"\n')
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert config.load().verp.bounce_domain == "env.example"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[verp]\nbounce_domian = 'x'\n", "verp.bounce_domian", "unknown key"),
        ("[nonsense]\na = 1\n", "nonsense", "unknown key"),
        ("[verp]\nmax_age_days = 'ten'\n", "verp.max_age_days", "expected an integer"),
        ("[verp]\nsecret_files = '/k'\n", "verp.secret_files", "expected a list"),
        ("[policy]\nmode = 'enforcing'\n", "policy.mode", "must be one of"),
        ("[verp]\nmax_age_days = -1\n", "verp.max_age_days", "must not be negative"),
        ("[milter]\nsocket_mode = 'rw-rw----'\n", "milter.socket_mode", 'expected permissions as "0660"'),
        ("[lmtp]\nsocket_mode = 0o1777\n", "lmtp.socket_mode", "0000..0777"),
        ("[lmtp]\nsocket_mode = '0999'\n", "lmtp.socket_mode", "0000..0777"),
        ("[http]\nmax_connections = 0\n", "http", "max_connections: must be more than 0"),
        ("[http]\nheader_timeout = 0\n", "http", "header_timeout: must be more than 0"),
        ("[http]\nlisten = '8025'\n", "http", 'listen: use "HOST:PORT"'),
        ("[http]\nlisten = 'unix:/run/bk.sock'\n", "http", 'listen: use "HOST:PORT"'),
    ],
)
def test_bad_key_is_fatal_and_names_file_and_key(
    tmp_path: pathlib.Path, text: str, key: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(path) in str(info.value)


def test_broken_toml_names_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[verp\n")
    with pytest.raises(config.ConfigError, match=r"broken\.toml: not valid TOML"):
        config.load(path)


@pytest.mark.parametrize("section", ["milter", "lmtp"])
@pytest.mark.parametrize(("written", "mode"), [('"0640"', 0o640), ("0o640", 0o640), ('"666"', 0o666)])
def test_socket_mode_takes_the_same_two_forms_in_milter_and_lmtp(
    section: str, written: str, mode: int
) -> None:
    settings = config.loads(f"[{section}]\nsocket_mode = {written}\n")
    assert getattr(settings, section).socket_mode == mode
    assert config.Settings().milter.socket_mode == config.Settings().lmtp.socket_mode == 0o660


def test_lmtp_listens_by_default_on_the_socket_the_exim_files_expect() -> None:
    macros = (pathlib.Path(__file__).parent.parent / "exim/conf.d/main/01_bouncekeeper_macros").read_text()
    assert f"BK_LMTP_SOCKET = {config.Settings().lmtp.listen.removeprefix('unix:')}\n" in macros


@pytest.mark.parametrize("around", [b"\n", b"\r\n", b"", b"\r\n\r\n", b" \t\r\n"])
def test_a_key_file_reads_the_same_whatever_its_line_end(tmp_path: pathlib.Path, around: bytes) -> None:
    # As the Exim files read it: white space around the key goes, a CRLF line end included.
    path = tmp_path / "verp.key"
    path.write_bytes(around + b"0123456789abcdef0123456789abcdef" + around)
    assert (
        config.read_secret(str(path), "verp.secret_files[0]", "bk.toml")
        == b"0123456789abcdef0123456789abcdef"
    )


def test_the_exim_files_strip_the_key_file_as_python_does() -> None:
    # The same expression in both shipped Exim configurations (exim/): PCRE's \s is Python's bytes.strip().
    root = pathlib.Path(__file__).parent.parent / "exim"
    for path in (root / "exim4.conf.example", root / "conf.d/main/01_bouncekeeper_macros"):
        assert "BK_SECRET = ${sg{${readfile{BK_KEYFILE}}}{\\N^\\s+|\\s+$\\N}{}}" in path.read_text(), path


def test_a_sentinel_url_names_its_sentinels_service_and_db() -> None:
    url = "redis+sentinel://10.0.0.1:26379,[::1]:26380/bk?db=3"
    assert config.loads(f'[redis]\nurl = "{url}"').redis.url == url
    assert config.parse_sentinel_url(url) == config.SentinelUrl(
        (("10.0.0.1", 26379), ("::1", 26380)), "bk", 3
    )


@pytest.mark.parametrize(
    ("redis", "problem"),
    [
        ('url = "redis+sentinel://h:26379"', "name the master"),
        ('url = "redis+sentinel://h/bk"', "is not HOST:PORT"),
        ('url = "redis+sentinel://h:26379/bk?password=x"', "only db=N"),
        ('url = "redis+sentinel://u:p@h:26379/bk"', "no credentials"),
        ('sentinel_username = "s"', "only with a redis+sentinel"),
        ('url = "redis://:secret@h:6379/0"\npassword_file = "/etc/hostname"', "keep one of them"),
        (
            'url = "redis://h/0"\npassword_file = "/nonexistent/pw"',
            "password_file: cannot read /nonexistent/pw",
        ),
        ('password_file = "/etc/hostname"', "only with a url"),
        ('url = "redis+cluster://h:7000"\nwait_replicas = 1\nwait_timeout = 2.0', "shorter than socket"),
        ("wait_replicas = 1\nwait_timeout = 2.0", "shorter than socket_timeout"),
    ],
)
def test_bad_redis_failover_settings_are_fatal_naming_file_and_key(redis: str, problem: str) -> None:
    with pytest.raises(config.ConfigError, match=r"bk\.toml: redis: .*") as info:
        config.loads(f"[redis]\n{redis}\n", name="bk.toml")
    assert problem in str(info.value)


def test_wait_replicas_applies_on_a_cluster_too() -> None:
    loaded = config.loads('[redis]\nurl = "redis+cluster://h:7000"\nwait_replicas = 1\n', name="bk.toml")
    assert loaded.redis.wait_replicas == 1


def test_the_bounce_domain_is_canonical_once_in_config() -> None:
    # Every adapter compares it with an address's lower-cased domain: none re-canonicalises it.
    settings = config.loads('[verp]\nbounce_domain = " Bounces.Example.ORG. "\n')
    assert settings.verp.bounce_domain == "bounces.example.org"
