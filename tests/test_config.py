from __future__ import annotations

import pathlib

import pytest

from bouncekeeper import config


def test_defaults_when_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.ENV_VAR, raising=False)
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
