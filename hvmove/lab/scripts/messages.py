"""Hyper-V's own messages as a host in another language shows them.

The cmdlets and VMMS read their messages from localized resources (review windows-scripts.md
finding 10), so a German or Japanese host says the same thing in its own words while the
FullyQualifiedErrorId, the error category and the HRESULT stay as they are. The lab host's
``ui_culture`` picks the language; the project scripts' own messages are in their text and stay
English. Only the messages the lab raises for Hyper-V are here.
"""

from __future__ import annotations

MESSAGES: dict[str, dict[str, str]] = {
    # the VM is busy with another operation (a backup, a checkpoint merge)
    "vm_busy": {
        "en": "Failed to perform the operation on virtual machine '{vm}': The operation cannot be "
        "performed while the object is in its current state. (Virtual machine ID {id})",
        "de": "Fehler beim Ausführen des Vorgangs für den virtuellen Computer '{vm}': Der Vorgang "
        "kann im aktuellen Zustand des Objekts nicht ausgeführt werden. (ID des virtuellen "
        "Computers {id})",
        "ja": "仮想マシン '{vm}' で操作を実行できませんでした: オブジェクトの現在の状態では、"
        "操作を実行できません。(仮想マシン ID {id})",
    },
    "file_exists": {
        "en": "Storage migration for virtual machine '{vm}' ({id}) failed: the file '{path}' "
        "already exists. (0x80070050)",
        "de": "Fehler bei der Speichermigration für den virtuellen Computer '{vm}' ({id}): Die "
        "Datei '{path}' ist bereits vorhanden. (0x80070050)",
        "ja": "仮想マシン '{vm}' ({id}) の記憶域の移行に失敗しました: ファイル '{path}' は既に存在"
        "します。(0x80070050)",
    },
}


def localized(culture: str, key: str, **values: str) -> str:
    """The message ``key`` in the host's UI language (English when the lab has no translation)."""
    texts = MESSAGES[key]
    text = texts.get(culture.split("-")[0].lower(), texts["en"])
    return text.format(**values)
