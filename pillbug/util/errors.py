"""Errors that carry a PostgreSQL SQLSTATE from the moment they are raised.

Every error a client can see is a PgError. Code raises it through one of the named
constructors below (errors.serialization_failure(...)), never by mapping strings at the edge.
This module knows nothing of the wire protocol; pgwire turns a PgError into an ErrorResponse.
"""
from __future__ import annotations

from pillbug import CRDB_COMPAT_VERSION


class PgError(Exception):
    """An error with a SQLSTATE and the optional fields of an ErrorResponse."""

    __slots__ = ("code", "message", "detail", "hint", "position", "severity")

    def __init__(self, code: str, message: str, *, detail: str | None = None,
                 hint: str | None = None, position: int | None = None,
                 severity: str = "ERROR") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.hint = hint
        self.position = position  # 1-based character offset into the statement text
        self.severity = severity

    def __repr__(self) -> str:
        return f"PgError({self.code}, {self.message!r})"

    @property
    def is_retryable(self) -> bool:
        return self.code == SERIALIZATION_FAILURE


# SQLSTATE codes used across the code base.
SUCCESSFUL_COMPLETION = "00000"
WARNING = "01000"
FEATURE_NOT_SUPPORTED = "0A000"
CONNECTION_EXCEPTION = "08000"
CONNECTION_FAILURE = "08006"
PROTOCOL_VIOLATION = "08P01"
INVALID_PARAMETER_VALUE = "22023"
DATA_EXCEPTION = "22000"
STRING_DATA_RIGHT_TRUNCATION = "22001"
NUMERIC_VALUE_OUT_OF_RANGE = "22003"
INVALID_DATETIME_FORMAT = "22007"
DATETIME_FIELD_OVERFLOW = "22008"
DIVISION_BY_ZERO = "22012"
INVALID_TEXT_REPRESENTATION = "22P02"
BAD_COPY_FILE_FORMAT = "22P04"
INVALID_BINARY_REPRESENTATION = "22P03"
CHARACTER_NOT_IN_REPERTOIRE = "22021"
INVALID_ESCAPE_SEQUENCE = "22025"
UNTRANSLATABLE_CHARACTER = "22P05"
INVALID_JSON_TEXT = "22P02"
NOT_NULL_VIOLATION = "23502"
FOREIGN_KEY_VIOLATION = "23503"
UNIQUE_VIOLATION = "23505"
CHECK_VIOLATION = "23514"
INVALID_CURSOR_STATE = "24000"
INVALID_TRANSACTION_STATE = "25000"
ACTIVE_SQL_TRANSACTION = "25001"
NO_ACTIVE_SQL_TRANSACTION = "25P01"
IN_FAILED_SQL_TRANSACTION = "25P02"
READ_ONLY_SQL_TRANSACTION = "25006"
INVALID_AUTHORIZATION_SPECIFICATION = "28000"
INVALID_PASSWORD = "28P01"
INVALID_GRANT_OPERATION = "0LP01"
INVALID_TRANSACTION_TERMINATION = "2D000"
INVALID_SAVEPOINT_SPECIFICATION = "3B001"
INVALID_CATALOG_NAME = "3D000"
INVALID_SCHEMA_NAME = "3F000"
SERIALIZATION_FAILURE = "40001"
STATEMENT_COMPLETION_UNKNOWN = "40003"
SYNTAX_ERROR = "42601"
INSUFFICIENT_PRIVILEGE = "42501"
UNDEFINED_COLUMN = "42703"
UNDEFINED_FUNCTION = "42883"
UNDEFINED_TABLE = "42P01"
UNDEFINED_PARAMETER = "42P02"
UNDEFINED_OBJECT = "42704"
DUPLICATE_COLUMN = "42701"
DUPLICATE_DATABASE = "42P04"
DUPLICATE_TABLE = "42P07"
DUPLICATE_OBJECT = "42710"
DUPLICATE_PREPARED_STATEMENT = "42P05"
DUPLICATE_CURSOR = "42P03"
AMBIGUOUS_COLUMN = "42702"
AMBIGUOUS_FUNCTION = "42725"
GROUPING_ERROR = "42803"
WINDOWING_ERROR = "42P20"
DATATYPE_MISMATCH = "42804"
WRONG_OBJECT_TYPE = "42809"
INVALID_COLUMN_REFERENCE = "42P10"
INVALID_TABLE_DEFINITION = "42P16"
INVALID_NAME = "42602"
CANNOT_COERCE = "42846"
INDETERMINATE_DATATYPE = "42P18"
INVALID_FUNCTION_DEFINITION = "42P13"
DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"
PROGRAM_LIMIT_EXCEEDED = "54000"
LOCK_NOT_AVAILABLE = "55P03"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"
CANT_CHANGE_RUNTIME_PARAM = "55P02"
QUERY_CANCELED = "57014"
ADMIN_SHUTDOWN = "57P01"
CARDINALITY_VIOLATION = "21000"
INVALID_PREPARED_STATEMENT_DEFINITION = "42P14"
UNDEFINED_PREPARED_STATEMENT = "26000"
INVALID_SQL_STATEMENT_NAME = "26000"
INTERNAL_ERROR = "XX000"
CONFIGURATION_LIMIT_EXCEEDED = "53400"
TOO_MANY_CONNECTIONS = "53300"
OUT_OF_MEMORY = "53200"
IO_ERROR = "58030"
CONFIG_FILE_ERROR = "F0000"
INVALID_ROW_COUNT_IN_LIMIT = "2201W"
INVALID_ROW_COUNT_IN_RESULT_OFFSET = "2201X"
ARRAY_SUBSCRIPT_ERROR = "2202E"
INVALID_REGULAR_EXPRESSION = "2201B"
NULL_VALUE_NOT_ALLOWED = "22004"



def syntax_error(message: str, position: int | None = None, hint: str | None = None) -> PgError:
    return PgError(SYNTAX_ERROR, message, position=position, hint=hint)


def feature_not_supported(message: str, hint: str | None = None) -> PgError:
    return PgError(FEATURE_NOT_SUPPORTED, message, hint=hint)


def serialization_failure(reason: str, detail: str | None = None) -> PgError:
    """A retryable conflict: the client should retry the whole transaction."""
    return PgError(SERIALIZATION_FAILURE, f"restart transaction: {reason}", detail=detail,
                   hint="See: https://www.cockroachlabs.com/docs/stable/transaction-retry-error-reference.html")


def statement_completion_unknown(message: str) -> PgError:
    return PgError(STATEMENT_COMPLETION_UNKNOWN, message)


def undefined_table(name: str) -> PgError:
    return PgError(UNDEFINED_TABLE, f'relation "{name}" does not exist')


def undefined_column(name: str) -> PgError:
    return PgError(UNDEFINED_COLUMN, f'column "{name}" does not exist')


def undefined_database(name: str) -> PgError:
    return PgError(INVALID_CATALOG_NAME, f'database "{name}" does not exist')


def undefined_function(message: str) -> PgError:
    return PgError(UNDEFINED_FUNCTION, message)


def undefined_object(message: str) -> PgError:
    return PgError(UNDEFINED_OBJECT, message)


def duplicate_table(name: str) -> PgError:
    return PgError(DUPLICATE_TABLE, f'relation "{name}" already exists')


def duplicate_database(name: str) -> PgError:
    return PgError(DUPLICATE_DATABASE, f'database "{name}" already exists')


def datatype_mismatch(message: str) -> PgError:
    return PgError(DATATYPE_MISMATCH, message)


def invalid_text(message: str) -> PgError:
    return PgError(INVALID_TEXT_REPRESENTATION, message)


def out_of_range(message: str) -> PgError:
    return PgError(NUMERIC_VALUE_OUT_OF_RANGE, message)


def division_by_zero() -> PgError:
    return PgError(DIVISION_BY_ZERO, "division by zero")


def insufficient_privilege(message: str) -> PgError:
    return PgError(INSUFFICIENT_PRIVILEGE, message)


def protocol_violation(message: str) -> PgError:
    return PgError(PROTOCOL_VIOLATION, message)


def internal_error(message: str) -> PgError:
    return PgError(INTERNAL_ERROR, f"internal error: {message}")


def query_canceled() -> PgError:
    return PgError(QUERY_CANCELED, "query execution canceled")


def program_limit_exceeded(message: str) -> PgError:
    return PgError(PROGRAM_LIMIT_EXCEEDED, message)


def in_failed_transaction() -> PgError:
    return PgError(IN_FAILED_SQL_TRANSACTION,
                   "current transaction is aborted, commands ignored until end of transaction block")


def invalid_parameter_value(message: str) -> PgError:
    return PgError(INVALID_PARAMETER_VALUE, message)


# CockroachDB's hint for an unimplemented feature without a tracking issue
# (pkg/util/errorutil/unimplemented); with an issue it names the issue's page instead.
_UNIMPLEMENTED_HINT = "You have attempted to use a feature that is not yet implemented."
_UNTRACKED_HINT = (
    "\n\nPlease check the public issue tracker to check whether this problem is\n"
    "already tracked. If you cannot find it there, please report the error\n"
    "with details by creating a new issue.\n\n"
    "If you would rather not post publicly, please contact us directly\n"
    "using the support form.\n\nWe appreciate your feedback.")


def issue_url(issue: int) -> str:
    """CockroachDB's link to a tracking issue, for the release Pillbug follows."""
    release = ".".join(CRDB_COMPAT_VERSION.split(".")[:2])
    return f"https://go.crdb.dev/issue-v/{issue}/{release}"


def unimplemented(what: str, issue: int | None = None, detail: str | None = None) -> PgError:
    """A feature Pillbug does not have: 0A000 'unimplemented: <what>', with CockroachDB's hint
    (and the link to CockroachDB's tracking issue when there is one)."""
    hint = _UNIMPLEMENTED_HINT + (f"\nSee: {issue_url(issue)}" if issue else _UNTRACKED_HINT)
    return PgError(FEATURE_NOT_SUPPORTED, f"unimplemented: {what}", detail=detail, hint=hint)
