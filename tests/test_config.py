"""hvmove.yaml validation: each mistake is one line naming the file, the entry and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove.config import load
from hvmove.credentials import resolve
from hvmove.errors import ConfigError

GOOD_HOST = """
  - name: hv01
    address: hv01.corp.example
    auth: kerberos
    username: CORP\\\\svc-hvmove
    password: {env: HV_PASS}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hvmove.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_good_config_defaults_to_https_with_validation(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "hosts:" + GOOD_HOST))
    host = cfg.host("HV01")
    assert host.transport == "https" and host.cert_validation is True
    assert host.effective_port == 5986
    assert cfg.store_url() == f"sqlite:///{tmp_path.resolve()}/hvmove.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hosts: [", "not valid YAML: line"),
        ("- a\n- b\n", "expected a mapping"),
        ("hosts: []\n", "hosts: List should have at least 1 item"),
        ("hosts:" + GOOD_HOST + "    colour: blue\n", "hosts[0] (hv01).colour: unknown key"),
        (
            "hosts:\n  - name: hv02\n    address: x\n    password: {env: P}\n",
            "hosts[0] (hv02).username: required key is missing",
        ),
        ("hosts:" + GOOD_HOST + "    port: http\n", "hosts[0] (hv01).port"),
        (
            "hosts:" + GOOD_HOST.replace("kerberos", "basic") + "    transport: http\n",
            "Basic authentication over plain HTTP",
        ),
        ("hosts:" + GOOD_HOST + "    cert_validation: false\n", "needs 'insecure: true'"),
        (
            "hosts:" + GOOD_HOST.replace("{env: HV_PASS}", "{env: A, secret_block: b}"),
            "exactly one of",
        ),
        ("hosts:" + GOOD_HOST.replace("{env: HV_PASS}", "hunter2"), "password"),
        ("hosts:" + GOOD_HOST + GOOD_HOST, "appears twice"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_basic_over_http_allowed_only_when_insecure(tmp_path: Path) -> None:
    text = (
        "hosts:"
        + GOOD_HOST.replace("kerberos", "basic")
        + "    transport: http\n    insecure: true\n"
    )
    assert load(write(tmp_path, text)).hosts[0].insecure


def test_missing_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hvmove lab up"):
        load(tmp_path / "nope.yaml")


def test_password_from_env_or_dotenv_never_in_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load(write(tmp_path, "hosts:" + GOOD_HOST))
    ref = cfg.hosts[0].password
    monkeypatch.delenv("HV_PASS", raising=False)
    with pytest.raises(ConfigError, match="HV_PASS is not set"):
        resolve(ref, base_dir=tmp_path)
    (tmp_path / ".env").write_text("HV_PASS='s3cret'\n")
    secret = resolve(ref, base_dir=tmp_path)
    assert secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(secret) and "s3cret" not in str(secret)
    monkeypatch.setenv("HV_PASS", "from-env")
    assert resolve(ref, base_dir=tmp_path).get_secret_value() == "from-env"
