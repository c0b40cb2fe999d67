"""ODX and minifilters (issue 10, finding 11): only the filters attached to the two volumes of a
copy count ("Deploy Windows Offloaded Data Transfers", technet jj200627: `fltmc instances -v
<volume>`, SprtFtrs bits 0x1 offload read and 0x2 offload write), not every filter loaded on
the host."""

from __future__ import annotations

import re

from tests.conftest import Lab
from tests.test_scripts_static import SCRIPTS, command_calls

SCRIPT = SCRIPTS / "Get-OdxStatus.ps1"


def test_a_filter_on_an_unrelated_volume_leaves_odx_on(client, lab: Lab) -> None:
    assert client.odx("D:\\VMs", "E:\\VMs").odx  # one ODX array, every filter opts in
    try:
        lab.server.control("set_volume", {"root": "F:\\", "host": "hv01", "filters": {"av": 0}})
        unrelated = client.odx("D:\\VMs", "E:\\VMs")
        assert unrelated.odx and unrelated.filters_ok
        lab.server.control(
            "set_volume", {"root": "E:\\", "host": "hv01", "filters": {"av": 1, "Wof": 3}}
        )
        attached = client.odx("D:\\VMs", "E:\\VMs")
        assert not attached.odx and not attached.filters_ok
        assert "av on E:\\ (SprtFtrs 0x1)" in attached.reason and "Wof" not in attached.reason
    finally:
        for root in ("E:\\", "F:\\"):
            lab.server.control("set_volume", {"root": root, "host": "hv01", "filters": {}})


def test_the_script_asks_fltmc_per_volume_not_every_loaded_driver() -> None:
    text = SCRIPT.read_text("utf-8")
    calls = [(name.lower(), params) for name, params, _ in command_calls(text) if name]
    assert ("fltmc.exe", ["v"]) in calls
    # the host-wide enumeration that counted filters attached elsewhere is gone
    assert "get-ciminstance" not in {name for name, _ in calls}
    assert "Win32_SystemDriver" not in text


# The shape of `fltmc instances -v C:`: a (localized) header, a dashed rule, rows whose instance
# names may hold spaces, SprtFtrs after the Frame number. Column order as fltmc prints it; the
# exact spacing is narrowed here and still to be compared with a real host.
FLTMC_ROWS = """
Filter      Volume Name  Altitude  Instance Name       Frame  SprtFtrs  VlStatus
----------  -----------  --------  ------------------  -----  --------  --------
WdFilter    C:           328010    WdFilter Instance   0      0000000f
storqosflt  C:           244000    storqosflt          0      0000000f
FileCrypt   C:           141100    FileCrypt Instance  0      00000001
Wof         C:           40700     Wof Instance        0      00000003
"""


def test_the_scripts_fltmc_patterns_read_sprtftrs() -> None:
    """The script's own regular expressions (.NET and Python agree on these) applied to rows."""
    text = SCRIPT.read_text("utf-8")
    body = re.search(r"function Get-HvmAttachedFilters.*?^}", text, re.S | re.M)
    assert body is not None
    rule, row = re.findall(r"-(?:not)?match '([^']+)'", body.group(0))
    lines = FLTMC_ROWS.strip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rule, line))
    found = {}
    for line in lines[start + 1 :]:
        m = re.match(row, line)
        assert m, line
        found[m.group(1)] = int(m.group(2), 16)
    assert found == {"WdFilter": 15, "storqosflt": 15, "FileCrypt": 1, "Wof": 3}
    assert not re.match(rule, lines[0])  # the (localized) header is not the rule


def test_a_volume_get_volume_cannot_read_is_named_with_its_error(client, lab: Lab) -> None:
    """Get-Volume -FilePath failing leaves the file system unknown: the reason names the volume
    and the error, not "ODX needs NTFS (source: , ...)"."""
    error = "Access denied (MSFT_Volume)"
    try:
        lab.server.control(
            "set_volume", {"root": "E:\\", "host": "hv01", "get_volume_error": error}
        )
        status = client.odx("D:\\VMs", "E:\\VMs")
        assert not status.odx
        assert "DestinationPath volume E:\\" in status.reason and error in status.reason
        assert "source: ," not in status.reason and "needs NTFS" not in status.reason
    finally:
        lab.server.control("set_volume", {"root": "E:\\", "host": "hv01", "get_volume_error": ""})


def test_the_script_names_the_volume_and_error_when_get_volume_fails() -> None:
    text = SCRIPT.read_text("utf-8")
    catch = re.search(r"Get-Volume -FilePath .*?\} catch \{(.*?)\n    \}", text, re.S)
    assert catch is not None
    assert re.search(
        r"\$side\.volumeError = \".*\$label.*\$\(\$side\.root\).*\$_\.Exception\.Message",
        catch.group(1),
    )
    branches = re.findall(r"^\} elseif \((.*)\) \{$", text, re.M)
    unknown = next(i for i, b in enumerate(branches) if "volumeError" in b)
    ntfs = next(i for i, b in enumerate(branches) if ".ntfs" in b)
    assert unknown < ntfs  # judged before "needs NTFS", which an empty file system would fail
