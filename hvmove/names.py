"""Prefect-safe names derived from anything Hyper-V accepts as a VM or host name.

A VM may be called ``Büro-DC01``, ``web [prod]``, ``o'brien$x`` or ``a;b`` (Hyper-V takes any
text). Prefect is stricter: an artifact key "must only contain lowercase letters, numbers, and
dashes" (``prefect.types.names.LOWERCASE_LETTERS_NUMBERS_AND_DASHES_ONLY_REGEX``, ``^[a-z0-9-]*$``),
and an event resource id is matched with dots and ``*`` wildcards by automations. So the keys are
slugs, with a short digest of the exact names whenever the slug lost something, so that two
different VMs never share a key. The readable names themselves (run names,
``prefect.resource.name``, artifact descriptions) keep the text as written.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_KEY = 100  # what hvmove keeps artifact keys to: readable in the UI's artifact list
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """Lowercase ASCII letters, digits and single dashes: 'Büro-DC01' -> 'buro-dc01'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")


def _digest(*parts: str) -> str:
    # the exact names, case folded as Windows compares them, so case alone never splits a key
    raw = "\x1f".join(p.casefold() for p in parts).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:8]


def _lossless(text: str) -> bool:
    return slug(text) == text.lower() and text != ""


def artifact_key(prefix: str, host: str, vm: str) -> str:
    """A Prefect artifact key for one VM on one host: '<prefix>-<vm>-<host>', unique per
    (host, vm) up to case; a digest is added when the names had to be changed to fit."""
    readable = "-".join(p for p in (slug(prefix), slug(vm), slug(host)) if p)
    if _lossless(vm) and _lossless(host) and len(readable) <= MAX_KEY:
        return readable
    tail = "-" + _digest(host, vm)
    return readable[: MAX_KEY - len(tail)].rstrip("-") + tail


def resource_id(host: str, vm: str, vm_id: str = "") -> str:
    """The event resource id of a VM: 'hvmove.vm.<host>.<vm id>' (a GUID, safe as it is), or a
    slug of the name with its digest when the id is not known."""
    guid = vm_id.strip("{}").lower()
    who = guid if _GUID.fullmatch(guid) else _name_part(vm)
    return f"hvmove.vm.{_name_part(host)}.{who}"


_GUID = re.compile(r"[0-9a-f]+(-[0-9a-f]+)*")


def _name_part(name: str) -> str:
    return name.lower() if _lossless(name) else f"{slug(name) or 'x'}-{_digest(name)}"


def display(text: str) -> str:
    """Text for a run name or a log line: as written, with control characters made visible
    (a newline in a name must not forge a second line)."""
    return "".join(c if ord(c) >= 32 and c != "\x7f" else f"\\x{ord(c):02x}" for c in text)
