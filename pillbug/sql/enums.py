"""Enum types' values: labels, their physical representations, and the order between them.

Each member of an enum type has a label (what users see) and a physical representation: a
non-empty byte string, unique within the type, whose byte order is the members' declaration
order. Index keys and row values store the physical representation, never the label, so that
  - keys sort in declaration order (byte order of the representation is SQL order);
  - ALTER TYPE ... ADD VALUE BEFORE/AFTER picks a new byte string strictly between its
    neighbours' (rep_between), so no existing key or row is rewritten;
  - ALTER TYPE ... RENAME VALUE changes only the type descriptor.
This is what CockroachDB does (its enum.GenByteStringBetween).

A value of an enum type is an EnumValue; it compares by representation, so Python's comparison,
sorting, min/max and hashing are SQL's. This module knows nothing of descriptors or storage.
"""
from __future__ import annotations

from collections.abc import Sequence

from pillbug.util import errors

# User-defined types' OIDs are their descriptor ids plus this offset, as in CockroachDB: they
# never collide with PostgreSQL's built-in type OIDs nor with relation OIDs (descriptor ids).
OID_OFFSET = 100_000
MAX_LABEL_BYTES = 63  # NAMEDATALEN - 1, PostgreSQL's limit on enum labels


class EnumValue:
    """One member of an enum type, as a value: its label, ordered by its representation."""

    __slots__ = ("label", "rep")

    def __init__(self, label: str, rep: bytes) -> None:
        self.label = label
        self.rep = rep

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumValue) and self.rep == other.rep

    def __hash__(self) -> int:
        return hash(self.rep)

    def __lt__(self, other: EnumValue) -> bool:
        return self.rep < other.rep

    def __le__(self, other: EnumValue) -> bool:
        return self.rep <= other.rep

    def __gt__(self, other: EnumValue) -> bool:
        return self.rep > other.rep

    def __ge__(self, other: EnumValue) -> bool:
        return self.rep >= other.rep

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"EnumValue({self.label!r})"


class EnumInfo:
    """The members of one enum type as of one catalog version, in declaration order."""

    __slots__ = ("type_id", "oid", "array_oid", "schema", "name", "labels", "reps",
                 "values", "_by_label", "_by_rep")

    def __init__(self, type_id: int, array_id: int, schema: str, name: str,
                 members: Sequence[tuple[str, bytes]]) -> None:
        self.type_id = type_id
        self.oid = type_id + OID_OFFSET
        self.array_oid = array_id + OID_OFFSET
        self.schema = schema
        self.name = name
        self.labels = tuple(label for label, _ in members)
        self.reps = tuple(rep for _, rep in members)
        assert all(a < b for a, b in zip(self.reps, self.reps[1:])), "reps must ascend"
        self.values = tuple(EnumValue(label, rep) for label, rep in members)
        self._by_label = {v.label: v for v in self.values}
        self._by_rep = {v.rep: v for v in self.values}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EnumInfo) and self.oid == other.oid and self.name == other.name
                and self.labels == other.labels and self.reps == other.reps)

    def __hash__(self) -> int:
        return hash(self.oid)

    def parse(self, text: str) -> EnumValue:
        """enum_in: a label to its value (22P02 for a label the type does not have)."""
        v = self._by_label.get(text)
        if v is None:
            raise errors.PgError(errors.INVALID_TEXT_REPRESENTATION,
                                 f'invalid input value for enum {self.name}: "{text}"')
        return v

    def from_rep(self, rep: bytes) -> EnumValue:
        """The value a stored physical representation stands for."""
        v = self._by_rep.get(rep)
        if v is None:
            raise errors.internal_error(f"enum {self.name} has no member with representation {rep.hex()}")
        return v


def rep_between(lo: bytes, hi: bytes | None) -> bytes:
    """A byte string strictly between lo and hi in byte order (b"" is the bottom, None the top).

    The result never ends in 0x00, so there is always room below it too.
    """
    assert hi is None or lo < hi, (lo, hi)
    out = bytearray()
    i = 0
    while True:
        a = lo[i] if i < len(lo) else 0
        b = hi[i] if hi is not None and i < len(hi) else 256
        if b - a > 1:
            out.append((a + b) // 2)
            return bytes(out)
        out.append(a)
        if b - a == 1:
            hi = None  # out is now below hi whatever follows: only lo bounds the rest
        i += 1


def initial_reps(n: int) -> list[bytes]:
    """Representations for n members declared at once: each splits the range of its side, so
    they stay short (one byte for up to 255 members) and leave room between neighbours."""
    reps: list[bytes] = [b""] * n

    def fill(lo_index: int, hi_index: int, lo: bytes, hi: bytes | None) -> None:
        if lo_index >= hi_index:
            return
        mid = (lo_index + hi_index) // 2
        rep = rep_between(lo, hi)
        reps[mid] = rep
        fill(lo_index, mid, lo, rep)
        fill(mid + 1, hi_index, rep, hi)
    fill(0, n, b"", None)
    return reps


def check_label(label: str) -> None:
    """PostgreSQL's limit on labels (the empty label is allowed, as there)."""
    if len(label.encode()) > MAX_LABEL_BYTES:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE,
                             f'invalid enum label "{label}": labels must be {MAX_LABEL_BYTES} bytes or less')
