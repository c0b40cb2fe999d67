"""Which Prefect API hvmove uses: the one Prefect's own settings resolve (environment, active
profile, .env), said on stderr; its own local server only when none is configured, and never
one whose installation is gone or whose UI does not answer."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvmove import prefect_local


@pytest.fixture
def no_prefect_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A user with an empty Prefect home and no PREFECT_* variables."""
    import os

    for key in [k for k in os.environ if k.startswith("PREFECT_")] + ["PREFECT_API_URL"]:
        monkeypatch.delenv(key, raising=False)  # restored afterwards, also when set meanwhile
    home = tmp_path / "prefect-home"
    home.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def test_api_from_the_active_profile(no_prefect_env: Path, tmp_path: Path) -> None:
    """`prefect config set PREFECT_API_URL=...` writes the profile, not the environment."""
    (no_prefect_env / "profiles.toml").write_text(
        'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "http://prefect.example:4200/api"\n'
    )
    api = prefect_local.ensure_server(home=tmp_path / "hvmove-prefect")
    assert api.url == "http://prefect.example:4200/api"
    assert "profile 'team'" in api.source and api.ui == "http://prefect.example:4200"
    assert not (tmp_path / "hvmove-prefect").exists()  # no server of hvmove's own


def test_api_from_a_dotenv_file(no_prefect_env: Path, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PREFECT_API_URL=http://from-dotenv:4200/api\n")
    api = prefect_local.configured(cwd=tmp_path)
    assert api is not None and api.url == "http://from-dotenv:4200/api"


def test_nothing_configured(no_prefect_env: Path) -> None:
    assert prefect_local.configured() is None


def test_the_cli_says_which_api(
    no_prefect_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from hvmove.cli.app import prefect_api

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert prefect_api() == "http://127.0.0.1:9/api"
    said = capsys.readouterr().err
    assert "Prefect API http://127.0.0.1:9/api (from PREFECT_API_URL in the environment)" in said


class _Stub(http.server.BaseHTTPRequestHandler):
    ui_status = 200

    def do_GET(self) -> None:
        status = 200 if self.path == "/api/health" else type(self).ui_status
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"true" if status == 200 else b"Internal Server Error")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[type[_Stub]]:
    handler = type("Handler", (_Stub,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/api"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()


def test_an_earlier_server_is_reused_only_when_whole(stub: type[_Stub], tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("prefect"))
    url = stub.url  # type: ignore[attr-defined]
    assert prefect_local._still_good({"api_url": url, "prefect": exe})
    # its installation was deleted: the API may still answer, the server is not reused
    assert not prefect_local._still_good({"api_url": url, "prefect": str(tmp_path / "gone")})
    stub.ui_status = 500  # the UI is broken (what a deleted install's server answers)
    assert not prefect_local._still_good({"api_url": url, "prefect": exe})
