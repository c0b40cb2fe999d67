"""hvmove.yaml: the hosts to reach, how to authenticate, defaults. Validated with clear errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hvmove.errors import ConfigError

DEFAULT_CONFIG = "hvmove.yaml"

AuthKind = Literal["negotiate", "kerberos", "ntlm", "credssp", "basic"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CredentialRef(Strict):
    """Where a password comes from. Never the password itself."""

    env: str | None = Field(None, description="environment variable holding the password")
    secret_block: str | None = Field(None, description="name of a Prefect Secret block")

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialRef:
        if (self.env is None) == (self.secret_block is None):
            raise ValueError("give exactly one of 'env: VARIABLE' or 'secret_block: NAME'")
        return self

    def describe(self) -> str:
        return f"env {self.env}" if self.env else f"Prefect Secret block {self.secret_block!r}"


class HostConfig(Strict):
    name: str = Field(min_length=1)
    address: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    transport: Literal["https", "http"] = "https"
    auth: AuthKind = "negotiate"
    username: str = Field(min_length=1)
    password: CredentialRef
    cert_validation: bool = True
    ca_file: Path | None = None  # CA bundle or certificate to trust instead of the system store
    insecure: bool = False  # the only way to allow Basic over HTTP or unvalidated TLS
    operation_timeout: int = Field(20, ge=1, le=600)
    read_timeout: int = Field(30, ge=2, le=900)
    max_storage_migrations: int | None = Field(
        None, ge=1, description="cap below the host's own MaximumStorageMigrations"
    )
    # SMB shares this host must reach (destinations, golden images): `hvmove doctor` checks that
    # its remote session can, which needs Kerberos delegation (the double hop)
    shares: list[str] = []

    @model_validator(mode="after")
    def _safe_transport(self) -> HostConfig:
        if self.auth == "basic" and self.transport == "http" and not self.insecure:
            raise ValueError(
                "Basic authentication over plain HTTP sends the password in clear text; use "
                "'transport: https', another 'auth', or add 'insecure: true' to this host if you "
                "accept that"
            )
        if not self.cert_validation and not self.insecure:
            raise ValueError(
                "'cert_validation: false' needs 'insecure: true' on the same host; prefer "
                "'ca_file:' pointing at the host's certificate or CA"
            )
        if self.operation_timeout >= self.read_timeout:
            raise ValueError("operation_timeout must be below read_timeout (pypsrp loses output)")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (5986 if self.transport == "https" else 5985)

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return self.address == "localhost"


class Defaults(Strict):
    headroom_percent: float = Field(10.0, ge=0, le=90)
    probe_mib: int = Field(64, ge=1, le=4096)
    keep_source_until_verified: bool = True
    allow_checkpoints: bool = True  # false: a VM with checkpoints is blocked (merge them first)
    # concurrent moves per volume, reading from it and writing to it (the host's own limit is
    # MaximumStorageMigrations, capped by a host entry's max_storage_migrations)
    moves_per_source_volume: int = Field(2, ge=1, le=64)
    moves_per_destination_volume: int = Field(2, ge=1, le=64)
    window: str = Field("22:00-05:00", pattern=r"^\d{1,2}:\d{2}-\d{1,2}:\d{2}$")
    timezone: str = "UTC"
    window_margin_minutes: float = Field(15, ge=0, le=600)
    # the deployed night runs this long before its window: its prechecks, its plan and its first
    # moves' start-ups happen before the window, and those moves' copies begin at its start
    start_ahead_minutes: int = Field(10, ge=0, le=720)
    # a host silent this long while a move is followed fails the copy step (transient: a rerun
    # attaches to the job), instead of holding the night for ever
    host_silence_minutes: float = Field(15, gt=0, le=1440)


class StoreConfig(Strict):
    url: str = "sqlite:///hvmove.db"


class NotificationsConfig(Strict):
    """Where hvmove's automations send their notices, and when a silence is worth one. The block
    is any Prefect notification block (Slack, Microsoft Teams, e-mail, custom webhook...), named
    'BLOCK-TYPE-SLUG/NAME' or just 'NAME' when only one notification block has that name."""

    block: str = Field(min_length=1, pattern=r"^[^/]+(/[^/]+)?$")
    # Proactive automations cannot wait less than 10 s (Prefect's own minimum)
    silence_minutes: float = Field(30, ge=1 / 6, description="no progress event this long")
    nightly_missed_hours: float = Field(25, ge=1 / 360, description="no nightly run this long")
    # keep it well above PREFECT_FLOWS_HEARTBEAT_FREQUENCY (180 s by default), or live runs
    # between two heartbeats are marked Crashed
    zombie_minutes: float = Field(10, ge=1 / 6, description="no flow-run heartbeat this long")
    approval_reminder_hours: float = Field(
        4, ge=1 / 360, description="remind while cleanup approvals wait this long"
    )
    nightly_deployment: str = "nightly-migrations/nightly"


class LabRef(Strict):
    dir: Path  # the lab folder this config points at (written by `hvmove lab up`)


class Config(Strict):
    hosts: list[HostConfig] = Field(min_length=1)
    defaults: Defaults = Defaults()
    store: StoreConfig = StoreConfig()
    # 'approve': a verified move keeps its source until someone approves the cleanup in the
    # cleanup-approval flow's form; 'immediate': the move deletes it right after verification
    cleanup: Literal["immediate", "approve"] = "immediate"
    notifications: NotificationsConfig | None = None
    lab: LabRef | None = None

    # set by load(); not part of the file
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for host in self.hosts:
            if host.name.lower() in seen:
                raise ValueError(
                    f"host name {host.name!r} appears twice; host names must be unique"
                )
            seen.add(host.name.lower())
        if self.cleanup == "approve" and not self.defaults.keep_source_until_verified:
            raise ValueError(
                "'cleanup: approve' needs 'defaults.keep_source_until_verified: true': without it "
                "Hyper-V deletes the source at the switch and there is nothing left to approve"
            )
        return self

    def host(self, name: str) -> HostConfig:
        for host in self.hosts:
            if host.name.lower() == name.lower():
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise ConfigError(f"{self.path or DEFAULT_CONFIG}: no host named {name!r} (known: {known})")

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def resolve_path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.base_dir / p

    def store_url(self) -> str:
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.base_dir / url[len(prefix) :])
        return url


def load(path: Path | str | None = None) -> Config:
    """Read and validate a config file; every problem becomes one ConfigError line."""
    file = Path(path) if path else Path.cwd() / DEFAULT_CONFIG
    if not file.exists():
        hint = "run 'hvmove lab up' to create one for the lab, or pass --config FILE"
        raise ConfigError(f"{file}: config file not found; {hint}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {_yaml_where(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping with a 'hosts:' list at the top level")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{file}: {describe_validation_error(exc, data)}") from None
    config.path = file.resolve()
    return config


def describe_validation_error(exc: ValidationError, data: object) -> str:
    """The first problem of a pydantic error, with the entry it is in ('hosts[1] (hv02).port')."""
    err = exc.errors()[0]
    where: list[str] = []
    node = data
    for part in err["loc"]:
        if isinstance(part, int):
            label = f"[{part}]"
            if isinstance(node, list) and part < len(node):
                node = node[part]
                if isinstance(node, dict) and node.get("name"):
                    label += f" ({node['name']})"
            where.append(label)
        else:
            where.append(f".{part}" if where else str(part))
            node = node.get(part) if isinstance(node, dict) else None
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    location = "".join(where) or "top level"
    return f"{location}: {msg}"


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem
