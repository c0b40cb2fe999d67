"""One client per Hyper-V host: a reused pypsrp RunspacePool running the project's scripts.

``run(name, **params)`` sends the text of ``scripts/<name>.ps1`` unchanged and the values as PSRP
parameters, enforces a deadline, checks ``had_errors`` and ``streams.error`` (pypsrp sets
``had_errors`` only for terminating errors), parses the single JSON document into the script's
model and raises a typed error otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, SecretStr, ValidationError
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from hvmove import models
from hvmove.config import Config, HostConfig
from hvmove.hyperv import errors as e
from hvmove.hyperv.catalog import SPECS, ScriptSpec, script_parameters, script_text

log = logging.getLogger("hvmove.hyperv")

SHELL_NOT_FOUND = 2150858843  # WSManFault: the ShellId is unknown to the server

M = TypeVar("M", bound=BaseModel)


class HostClient:
    """Thread-safe: calls on one host are serialised over its one RunspacePool."""

    def __init__(self, host: HostConfig, password: SecretStr, *, base_dir: Any = None) -> None:
        self.host = host
        self._password = password
        self._base_dir = base_dir
        self._lock = threading.Lock()
        self._pool: RunspacePool | None = None

    @property
    def name(self) -> str:
        return self.host.name

    # -- connection ------------------------------------------------------------------------------
    def _wsman(self) -> WSMan:
        h = self.host
        validation: bool | str = h.cert_validation
        if h.cert_validation and h.ca_file is not None:
            ca = (
                h.ca_file
                if h.ca_file.is_absolute() or self._base_dir is None
                else (self._base_dir / h.ca_file)
            )
            validation = str(ca)
        https = h.transport == "https"
        return WSMan(
            h.address,
            port=h.effective_port,
            ssl=https,
            auth=h.auth,
            # Basic has no message encryption; config only allows it over HTTP with insecure: true
            encryption="never" if (h.auth == "basic" and not https) else "auto",
            username=h.username,
            password=self._password.get_secret_value(),
            cert_validation=validation,
            no_proxy=h.is_loopback,
            operation_timeout=h.operation_timeout,
            read_timeout=h.read_timeout,
            connection_timeout=10,
            reconnection_retries=0,
        )

    def _ensure_pool(self) -> RunspacePool:
        if self._pool is None:
            pool = RunspacePool(self._wsman())
            pool.open()
            session = pool.connection.transport.session
            if session is not None:
                # pypsrp resolves the environment's proxy settings once, when it builds the
                # session, but leaves requests' trust_env on: requests then scans every variable
                # of the environment again on each call, the largest part of hvmove's CPU time per
                # VM in benchmarks/scale.py. The settings pypsrp resolved stay in force.
                session.trust_env = False
            self._pool = pool
        return self._pool

    def _drop_pool(self) -> None:
        """Forget the pool after a transport failure; closing a broken pool raises, so try once."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close()

    def close(self) -> None:
        with self._lock:
            self._drop_pool()

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def auth_used(self) -> str:
        """How the open session logged on: 'basic', or Negotiate's protocol ('ntlm',
        'kerberos'), read from pypsrp's authentication context; '' before the first call."""
        pool = self._pool
        if pool is None:
            return ""
        try:
            auth = pool.connection.transport.session.auth
        except AttributeError:
            return ""
        contexts = getattr(auth, "contexts", None)
        if contexts:
            context = next(iter(contexts.values()))
            protocol = getattr(context, "negotiated_protocol", "") or ""
            return f"{self.host.auth} ({protocol})" if protocol else self.host.auth
        return self.host.auth

    # -- calls -----------------------------------------------------------------------------------
    def run(self, script: str, *, timeout: float | None = None, **params: Any) -> BaseModel:
        spec = SPECS[script]
        declared = {p.lower() for p in script_parameters(script)}
        unknown = [k for k in params if k.lower() not in declared]
        if unknown:
            raise TypeError(f"{script}.ps1 has no parameter(s) {unknown}")
        deadline = time.monotonic() + (timeout if timeout is not None else spec.timeout_s)
        with self._lock:
            try:
                return self._run_locked(spec, params, deadline)
            except e.ShellGone:
                # the host forgot our shell (it rebooted, or WinRM restarted): the command was
                # never created, so one retry on a new pool is safe even for a mutating script
                return self._run_locked(spec, params, deadline)

    def _run_locked(self, spec: ScriptSpec, params: dict[str, Any], deadline: float) -> BaseModel:
        phase = "connect"
        try:
            pool = self._ensure_pool()
            ps = PowerShell(pool)
            # local scope: each call's variables and functions end with it (pypsrp's default,
            # None, runs the script dot-sourced in the runspace's global scope and they persist
            # in the long-lived pool: PowerShell Command.UseLocalScope => _useLocalScope ?? false)
            ps.add_script(script_text(spec.name), use_local_scope=True)
            if params:
                ps.add_parameters(params)
            phase = "send"
            ps.begin_invoke()
            phase = "receive"
            while ps.state == PSInvocationState.RUNNING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stop_quietly(ps)
                    cls = e.MaybeRanError if spec.mutating else e.DeadlineExceeded
                    raise cls(self.name, spec.name, "deadline passed; the call was stopped")
                ps.poll_invoke(timeout=max(1, min(int(remaining), self.host.operation_timeout)))
        except (requests.exceptions.RequestException, WinRMError) as exc:
            self._drop_pool()
            raise self._classify(exc, spec, phase) from exc
        return self._result(ps, spec)

    @staticmethod
    def _stop_quietly(ps: PowerShell) -> None:
        with contextlib.suppress(Exception):
            ps.stop()

    def _classify(self, exc: Exception, spec: ScriptSpec, phase: str) -> e.HostError:
        host, name = self.name, spec.name
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, requests.exceptions.SSLError):
            return e.TlsError(
                host, name, f"TLS failed (is the certificate trusted? set ca_file): {exc}"
            )
        if isinstance(exc, AuthenticationError):
            return e.AuthenticationFailed(host, name, f"credentials rejected: {exc}")
        if isinstance(exc, WSManFaultError) and exc.code == SHELL_NOT_FOUND and phase == "send":
            return e.ShellGone(host, name, "the host no longer knows this session")
        if phase == "connect" or _never_connected(exc):
            h = self.host
            return e.HostUnreachable(
                host,
                name,
                f"cannot connect to {h.address}:{h.effective_port} ({_short_reason(exc)}); check "
                "that WinRM listens there (winrm quickconfig; HTTPS listener on 5986) and that "
                "the firewall lets it through",
            )
        if isinstance(exc, WinRMTransportError):
            if exc.code in (429, 503):
                return e.TransientError(host, name, f"host unavailable (HTTP {exc.code})")
            if exc.code in (401, 403):
                return e.AuthenticationFailed(host, name, f"HTTP {exc.code}")
            if exc.code == 400 and self.host.transport == "http" and self.host.auth != "basic":
                # After a reconnect (host reboot, dropped connection) pypsrp logs on again but
                # resends the message sealed with the old logon's keys, which the host cannot
                # read. Refused while sending, the command was never created: retried once on a
                # new pool like a lost shell. Refused while receiving, the command had already
                # been accepted: a mutating script may have run, so it is "maybe ran".
                if phase == "send" or not spec.mutating:
                    return e.ShellGone(
                        host, name, "the host could not decrypt a message sealed before a reconnect"
                    )
                return e.MaybeRanError(
                    host,
                    name,
                    "HTTP 400 after the host had accepted the command; look before retrying",
                )
            if exc.code < 500:
                return e.PermanentError(host, name, f"HTTP {exc.code}: {exc.response_text[:200]}")
        # The request may have reached the host: for a mutating script that is "maybe ran".
        if spec.mutating:
            return e.MaybeRanError(host, name, f"reply lost ({text}); look before retrying")
        return e.TransientError(host, name, text)

    def _result(self, ps: PowerShell, spec: ScriptSpec) -> BaseModel:
        for warning in ps.streams.warning:
            log.warning("%s: %s: %s", self.name, spec.name, warning)
        if ps.had_errors or ps.streams.error:
            record = ps.streams.error[0] if ps.streams.error else None
            message = _error_message(record) if record is not None else "script failed"
            error_id = str(getattr(record, "fq_error", "") or "")
            if e.is_busy(error_id, _category(record), _hresult(record)):
                return_error: e.HostError = e.HostBusy(self.name, spec.name, message)
            else:
                return_error = e.ScriptError(self.name, spec.name, message, error_id)
            raise return_error
        if ps.state != PSInvocationState.COMPLETED:
            raise e.TransientError(self.name, spec.name, f"pipeline ended {ps.state}")
        texts = [o for o in ps.output if o is not None]
        if len(texts) != 1 or not isinstance(texts[0], str):
            raise e.ProtocolError(
                self.name, spec.name, f"expected one JSON string, got {len(texts)}"
            )
        try:
            return spec.model.model_validate(json.loads(texts[0]))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise e.ProtocolError(self.name, spec.name, f"bad JSON output: {exc}") from None

    # -- typed helpers ---------------------------------------------------------------------------
    def call(self, script: str, model: type[M], **params: Any) -> M:
        result = self.run(script, **params)
        assert isinstance(result, model)
        return result

    def host_facts(self) -> models.HostFacts:
        return self.call("Get-HostFacts", models.HostFacts)

    def inventory(self, vm_id: str = "") -> models.Inventory:
        return self.call("Get-VMInventory", models.Inventory, VmId=vm_id)

    def precheck_facts(self, vm_ids: list[str]) -> models.PrecheckFacts:
        """Many VMs in one call, each entry as inventory(vm_id) and move_status(vm_id) would
        read it, or with its own error."""
        return self.call("Get-PrecheckFacts", models.PrecheckFacts, VmId=list(vm_ids))

    def volumes(self, paths: list[str], *, partial: bool = False) -> models.VolumeReport:
        """partial: entries the host could not resolve come back with their ``error``; else
        any such entry fails the call (a precheck needs every path it asked about)."""
        report = self.call("Get-VolumeInfo", models.VolumeReport, Path=list(paths))
        return checked_volumes(self.name, report, partial)

    def odx(self, source: str, destination: str) -> models.OdxStatus:
        return self.call(
            "Get-OdxStatus", models.OdxStatus, SourcePath=source, DestinationPath=destination
        )

    def bandwidth(self, destination: str, size_mib: int) -> models.BandwidthProbe:
        return self.call(
            "Measure-Bandwidth",
            models.BandwidthProbe,
            DestinationPath=destination,
            SizeMiB=size_mib,
        )

    def move_status(self, vm_id: str) -> models.MoveStatus:
        return self.call("Get-StorageMoveStatus", models.MoveStatus, VmId=vm_id)

    def stop_move(self, vm_id: str) -> models.MoveStop:
        return self.call("Stop-StorageMove", models.MoveStop, VmId=vm_id)

    def vm_paths(self, vm_id: str) -> models.VMPaths:
        return self.call("Get-VMStoragePaths", models.VMPaths, VmId=vm_id)

    def vhd_facts(self, paths: list[str]) -> models.VhdReport:
        return self.call("Get-VHDFacts", models.VhdReport, Path=list(paths))

    def remove_files(self, paths: list[str], folders: list[str]) -> models.RemoveReport:
        return self.call(
            "Remove-StorageFiles", models.RemoveReport, Path=list(paths), Folder=list(folders)
        )

    def refresh_cluster_config(self, vm_id: str) -> models.ClusterRefresh:
        return self.call("Update-ClusterVmConfig", models.ClusterRefresh, VmId=vm_id)

    def find_references(self, paths: list[str], folders: list[str]) -> models.PathReferences:
        return self.call(
            "Find-PathReferences", models.PathReferences, Path=list(paths), Folder=list(folders)
        )

    def start_move(
        self,
        vm_id: str,
        mode: models.MoveMode,
        *,
        destination: str = "",
        virtual_machine_path: str = "",
        snapshot_file_path: str = "",
        smart_paging_file_path: str = "",
        vhds: list[tuple[str, str]] | None = None,
        keep_source: bool = True,
    ) -> models.MoveStart:
        """keep_source: start through WMI with AvoidRemovingVHDs, so that no source disk is
        deleted before hvmove has verified the destination; else Move-VMStorage, which deletes the
        moved disks' source at the switch (parents are kept with -RetainVhdCopiesOnSource and
        left to hvmove's cleanup, which knows whether another VM uses them)."""
        pairs = vhds or []
        return self.call(
            "Start-StorageMove",
            models.MoveStart,
            VmId=vm_id,
            Mode=mode,
            DestinationStoragePath=destination,
            VirtualMachinePath=virtual_machine_path,
            SnapshotFilePath=snapshot_file_path,
            SmartPagingFilePath=smart_paging_file_path,
            VhdSourcePath=[s for s, _ in pairs],
            VhdDestinationPath=[d for _, d in pairs],
            RetainVhdCopiesOnSource=True,
            KeepSource=keep_source,
        )


def checked_volumes(host: str, report: models.VolumeReport, partial: bool) -> models.VolumeReport:
    """The report as asked: unless ``partial``, an entry the host could not resolve fails it."""
    failed = [v for v in report.volumes if v.error]
    if failed and not partial:
        raise e.ScriptError(
            host, "Get-VolumeInfo", "; ".join(f"{v.path}: {v.error}" for v in failed)
        )
    return report


def _never_connected(exc: Exception) -> bool:
    """True when the request provably never reached the host (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if type(node).__name__ in ("NewConnectionError", "NameResolutionError"):
            return True
        for arg in getattr(node, "args", ()):
            if isinstance(arg, BaseException) and type(arg).__name__ in (
                "NewConnectionError",
                "NameResolutionError",
            ):
                return True
            inner = getattr(arg, "reason", None)
            if isinstance(inner, BaseException) and type(inner).__name__ in (
                "NewConnectionError",
                "NameResolutionError",
            ):
                return True
        node = node.__cause__ or node.__context__
    return False


def _short_reason(exc: Exception) -> str:
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if match:
        return match.group(1).strip()
    return type(exc).__name__


def _error_message(record: Any) -> str:
    for candidate in (
        str(record) if record is not None else "",
        getattr(getattr(record, "exception", None), "adapted_properties", {}).get("Message", ""),
        getattr(record, "message", "") or "",
    ):
        if candidate and candidate != "None":
            return str(candidate)
    return "script failed"


def _category(record: Any) -> int | None:
    """ErrorCategory of an error record, as its number (language-independent)."""
    value = getattr(record, "category", None)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _hresult(record: Any) -> int | None:
    """HResult of the record's exception, when the host sent it."""
    props = getattr(getattr(record, "exception", None), "adapted_properties", None) or {}
    value = props.get("HResult") if isinstance(props, dict) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def open_client(config: Config, host_name: str) -> HostClient:
    """A client for one configured host, its password resolved from the environment or Prefect."""
    from hvmove.credentials import resolve

    host = config.host(host_name)
    password = resolve(host.password, base_dir=config.base_dir, host=host.name)
    return HostClient(host, password, base_dir=config.base_dir)
