"""Session variables: their defaults, how SET validates them, and how SHOW prints them.

Names are case-insensitive. Variables that the wire protocol reports to clients (ParameterStatus)
are listed in REPORTED; changing one makes the session tell the client.
This module knows nothing of the wire protocol; it validates and stores strings.
"""
from __future__ import annotations

from collections.abc import Callable

from pillbug.sql.sem.builtins import resolve_zone
from pillbug.util import errors

# Those ParameterStatus reports (CockroachDB's list, pgwire/conn.go statusReportParams).
REPORTED = ("server_version", "server_encoding", "client_encoding", "application_name", "DateStyle",
            "IntervalStyle", "is_superuser", "TimeZone", "integer_datetimes",
            "standard_conforming_strings", "crdb_version", "session_authorization")
SERVER_VERSION = "13.0.0"


def _bool(value: str) -> str:
    v = value.strip().lower()
    if v in ("on", "true", "yes", "1", "t"):
        return "on"
    if v in ("off", "false", "no", "0", "f"):
        return "off"
    raise errors.invalid_parameter_value("parameter requires a Boolean value")


def _timezone(value: str) -> str:
    resolve_zone(value)
    return value


def _int(value: str) -> str:
    try:
        int(value)
    except ValueError:
        raise errors.invalid_parameter_value(f"invalid value for parameter: {value!r}") from None
    return value


def _isolation(value: str) -> str:
    v = value.strip().lower()
    if v in ("serializable", "repeatable read", "read committed", "read uncommitted", "snapshot"):
        # CockroachDB runs everything SERIALIZABLE; weaker levels are upgraded to it.
        return "serializable"
    raise errors.invalid_parameter_value(f"invalid value for parameter \"transaction_isolation\": \"{value}\"")


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        v = value.strip().lower()
        if v not in choices:
            raise errors.invalid_parameter_value(
                f"invalid value for parameter: \"{value}\"; available values: {', '.join(choices)}")
        return v
    return check


def _encoding(value: str) -> str:
    # PostgreSQL ignores everything but letters and digits in encoding names (asyncpg sends 'utf-8').
    v = "".join(c for c in value.upper() if c.isalnum())
    if v in ("UTF8", "UNICODE"):
        return "UTF8"
    raise errors.invalid_parameter_value(f"unimplemented client encoding: \"{value}\"")


def _datestyle(value: str) -> str:
    parts = [p.strip().lower() for p in value.split(",")]
    if not all(p in ("iso", "mdy", "dmy", "ymd") for p in parts):
        raise errors.invalid_parameter_value(f"invalid value for parameter \"DateStyle\": \"{value}\"")
    return "ISO, MDY"


def _any(value: str) -> str:
    return value


_DURATION_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1, "s": 1000, "min": 60_000, "m": 60_000, "h": 3_600_000}


def _duration_ms(value: str) -> str:
    """A timeout: a number of milliseconds, or a duration such as '10s' (shown in milliseconds)."""
    v = value.strip().lower()
    number = v.rstrip("abcdefghijklmnopqrstuvwxyzµ").strip()
    unit = v[len(number):].strip() or "ms"
    try:
        ms = float(number) * _DURATION_UNITS[unit]
    except (ValueError, KeyError):
        raise errors.invalid_parameter_value(f"invalid value for parameter: {value!r}") from None
    if ms < 0:
        raise errors.invalid_parameter_value(f"invalid value for parameter: {value!r}")
    return str(int(ms))


# name -> (default, validator)
DEFINITIONS: dict[str, tuple[str, Callable[[str], str]]] = {
    "application_name": ("", _any),
    "client_encoding": ("UTF8", _encoding),
    "client_min_messages": ("notice", _one_of("debug5", "debug4", "debug3", "debug2", "debug1", "debug",
                                              "log", "notice", "warning", "error", "info")),
    "database": ("", _any),
    "datestyle": ("ISO, MDY", _datestyle),
    "default_int_size": ("8", _one_of("4", "8")),
    "default_transaction_isolation": ("serializable", _isolation),
    "default_transaction_read_only": ("off", _bool),
    "default_transaction_priority": ("normal", _one_of("low", "normal", "high")),
    "extra_float_digits": ("1", _int),
    "integer_datetimes": ("on", _bool),
    "intervalstyle": ("postgres", _one_of("postgres", "iso_8601", "sql_standard")),
    "is_superuser": ("off", _bool),
    "lock_timeout": ("0", _duration_ms),
    "idle_in_transaction_session_timeout": ("0", _duration_ms),
    "max_identifier_length": ("128", _any),
    "search_path": ("$user, public", _any),
    "server_encoding": ("UTF8", _any),
    "server_version": (SERVER_VERSION, _any),
    "server_version_num": ("130000", _any),
    "session_user": ("", _any),
    "session_authorization": ("", _any),
    "standard_conforming_strings": ("on", _one_of("on")),
    "statement_timeout": ("0", _duration_ms),
    "synchronous_commit": ("on", _any),
    "timezone": ("UTC", _timezone),
    "transaction_isolation": ("serializable", _isolation),
    "transaction_read_only": ("off", _bool),
    "transaction_priority": ("normal", _one_of("low", "normal", "high")),
    "transaction_status": ("NoTxn", _any),
    "node_id": ("1", _any),
    "locality": ("", _any),  # the node's --locality (SHOW LOCALITY): the session sets it
    "crdb_version": ("", _any),
    "sql_safe_updates": ("off", _bool),
    # CockroachDB's: off makes a COPY FROM outside a transaction commit every COPY_BATCH_ROWS rows
    # (sql/copy.py), for loads bigger than one transaction may be (a cluster's store limits).
    "copy_from_atomic_enabled": ("on", _bool),
    "vectorize": ("on", _any),
    "bytea_output": ("hex", _one_of("hex", "escape")),
    "row_security": ("off", _any),
    "enable_seqscan": ("on", _any),
    "escape_string_warning": ("on", _any),
    "backslash_quote": ("safe_encoding", _any),
    "password_encryption": ("scram-sha-256", _any),
    "distsql": ("auto", _any),
    "optimizer": ("on", _any),
    "results_buffer_size": ("16384", _any),
    "large_full_scan_rows": ("1000", _any),
    "serial_normalization": ("rowid", _one_of("rowid")),
    "allow_prepare_as_opt_plan": ("off", _any),
    "enable_implicit_select_for_update": ("on", _bool),
    # ALTER COLUMN TYPE between type families (a rewrite of every row) is experimental in
    # CockroachDB and refused unless this is on (ddl.py).
    "enable_experimental_alter_column_type_general": ("off", _bool),
    "tracing": ("off", _any),
    "lc_messages": ("C", _any),
    "lc_monetary": ("C", _any),
    "lc_numeric": ("C", _any),
    "lc_time": ("C", _any),
    "max_index_keys": ("32", _any),
    "ssl": ("on", _any),
    "default_with_oids": ("off", _any),
    "xmloption": ("content", _any),
}

# How SHOW ALL and ParameterStatus spell the names that PostgreSQL capitalises.
DISPLAY_NAMES = {"datestyle": "DateStyle", "intervalstyle": "IntervalStyle", "timezone": "TimeZone"}
ALIASES = {"time zone": "timezone", "transaction isolation level": "transaction_isolation",
           "session_authorization": "session_user", "transaction_isolation": "transaction_isolation",
           "statement_timeout_ms": "statement_timeout"}
READ_ONLY = frozenset({"server_version", "server_version_num", "server_encoding", "session_user",
                       "is_superuser", "transaction_status", "node_id", "locality", "crdb_version",
                       "integer_datetimes", "max_identifier_length", "max_index_keys", "session_authorization"})


def canonical(name: str) -> str:
    n = name.strip().lower()
    return ALIASES.get(n, n)


def validate(name: str, value: str) -> str:
    n = canonical(name)
    if n not in DEFINITIONS:
        raise errors.PgError(errors.UNDEFINED_OBJECT, f"unrecognized configuration parameter \"{name}\"")
    if n in READ_ONLY:
        raise errors.PgError(errors.CANT_CHANGE_RUNTIME_PARAM, f"parameter \"{name}\" cannot be changed")
    return DEFINITIONS[n][1](value)
