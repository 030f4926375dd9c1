"""Cluster settings: the known ones, their types and defaults, and validation on SET.

Values live under system keys (see catalog/system.py) so that they are transactional and, in a
cluster, replicated; the Catalog snapshot carries them. This module knows nothing of storage.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pillbug import CRDB_COMPAT_VERSION
from pillbug.util import errors, hba

HBA_SETTING = "server.host_based_authentication.configuration"
SHUTDOWN_WAIT_SETTING = "server.shutdown.initial_wait"
QUERY_WAIT_SETTING = "server.shutdown.query_wait"
MAX_SHUTDOWN_WAIT = 600.0  # seconds; a node is never kept from stopping for longer

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go-style duration ("0s", "1.5s", "2m30s", "168h0m0s") in seconds; ValueError if malformed."""
    text = text.strip()
    if text in ("0", ""):
        if text == "":
            raise ValueError("empty duration")
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    type: str  # s (string), b (bool), i (int), d (duration), e (enum), f (float)
    default: str
    description: str
    read_only: bool = False


def _s(name: str, typ: str, default: str, description: str, read_only: bool = False) -> Setting:
    return Setting(name, typ, default, description, read_only)


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    _s(HBA_SETTING, "s", "", "host-based authentication configuration to use during connection authentication"),
    _s("cluster.organization", "s", "", "organization name"),
    _s("cluster.preserve_downgrade_option", "s", "", "disable (automatic or manual) cluster version upgrade"),
    _s("diagnostics.reporting.enabled", "b", "false", "enable reporting diagnostic metrics"),
    _s("enterprise.license", "s", "", "the encoded cluster license"),
    _s("kv.rangefeed.enabled", "b", "false", "if set, rangefeed registration is enabled"),
    _s("server.user_login.password_encryption", "e", "scram-sha-256", "which hash method to use to encode cleartext passwords"),
    _s("server.user_login.min_password_length", "i", "1", "the minimum length accepted for passwords"),
    _s("server.web_session_timeout", "d", "168h0m0s", "the duration that a newly created web session will be valid"),
    _s("sql.defaults.distsql", "e", "auto", "default distributed SQL execution mode"),
    _s("sql.stats.automatic_collection.enabled", "b", "true", "automatic statistics collection mode"),
    _s(SHUTDOWN_WAIT_SETTING, "d", "0s", "the amount of time a server waits in an unready state before proceeding "
       "with the rest of the shutdown process (load balancers see /health?ready=1 fail meanwhile)"),
    _s(QUERY_WAIT_SETTING, "d", "10s", "the timeout for waiting for active queries and transactions to finish during "
       "a drain; sessions still open after it are ended with 57P01"),
    _s("gc.ttlseconds", "i", "90000", "how long old versions are kept for AS OF SYSTEM TIME (seconds)"),
    _s("version", "m", CRDB_COMPAT_VERSION.lstrip("v").rsplit(".", 1)[0], "set the active cluster version", read_only=True),
)}


def validate(name: str, value: str) -> str:
    setting = SETTINGS.get(name)
    if setting is None:
        raise errors.PgError(errors.UNDEFINED_OBJECT, f"unknown cluster setting '{name}'")
    if setting.read_only:
        raise errors.PgError(errors.CANT_CHANGE_RUNTIME_PARAM, f"setting '{name}' cannot be changed")
    if setting.type == "b":
        v = value.strip().lower()
        if v not in ("true", "false"):
            raise errors.invalid_parameter_value(f"setting '{name}' requires a bool value: {value}")
        return v
    if setting.type == "i":
        try:
            return str(int(value))
        except ValueError:
            raise errors.invalid_parameter_value(f"setting '{name}' requires an int value: {value}") from None
    if setting.type == "d":
        try:
            parse_duration(value)
        except ValueError:
            raise errors.invalid_parameter_value(
                f"setting '{name}' requires a duration value (e.g. 2s, 1m30s): {value}") from None
        return value.strip()
    if name == HBA_SETTING:
        try:
            hba.parse(value)
        except hba.HBAError as exc:
            raise errors.invalid_parameter_value(f"invalid value for {name}: {exc}") from None
    return value


def current(settings: dict[str, str], name: str) -> str:
    if name in settings:
        return settings[name]
    setting = SETTINGS.get(name)
    if setting is None:
        raise errors.PgError(errors.UNDEFINED_OBJECT, f"unknown setting: {name}")
    return setting.default
