"""Host-based authentication rules in CockroachDB's (PostgreSQL's pg_hba.conf) syntax.

The cluster setting server.host_based_authentication.configuration holds lines of
  TYPE  DATABASE  USER  ADDRESS  METHOD   [OPTIONS]
  host  all       all   10.0.0.0/8 cert-password
with TYPE host, hostssl, hostnossl or local; DATABASE and USER `all` or comma-separated names;
ADDRESS `all`, a CIDR, or an address followed by a netmask; METHOD one of METHODS.
The first rule that matches a connection decides how it authenticates; when none matches, the
connection is refused. An empty setting means DEFAULT_CONFIG.

This module only parses and matches; the wire protocol applies the outcome.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

METHODS = frozenset({"cert", "password", "cert-password", "scram-sha-256", "cert-scram-sha-256",
                     "trust", "reject"})
CONNECTION_TYPES = frozenset({"host", "hostssl", "hostnossl", "local"})
DEFAULT_CONFIG = "host all all all cert-password\nlocal all all password"
MAX_RULES = 1000


class HBAError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Rule:
    conn_type: str
    databases: tuple[str, ...] | None  # None: all
    users: tuple[str, ...] | None  # None: all
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None  # None: all addresses
    method: str
    text: str

    def matches(self, conn_type: str, database: str, user: str,
                address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, is_tls: bool) -> bool:
        if self.conn_type == "local":
            if conn_type != "local":
                return False
        else:
            if conn_type == "local":
                return False
            if self.conn_type == "hostssl" and not is_tls:
                return False
            if self.conn_type == "hostnossl" and is_tls:
                return False
            if self.network is not None:
                if address is None or address.version != self.network.version:
                    # an IPv4 client seen through an IPv6 socket
                    mapped = getattr(address, "ipv4_mapped", None)
                    if mapped is None or self.network.version != 4:
                        return False
                    address = mapped
                if address not in self.network:
                    return False
        if self.databases is not None and database not in self.databases:
            return False
        if self.users is not None and user not in self.users:
            return False
        return True


def _names(field: str) -> tuple[str, ...] | None:
    if field == "all":
        return None
    names = tuple(n.strip().strip('"') for n in field.split(",") if n.strip())
    if not names:
        raise HBAError(f"empty name list: {field!r}")
    return names


def parse(text: str) -> list[Rule]:
    """Parse a configuration; raises HBAError with the offending line."""
    rules: list[Rule] = []
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        conn_type = fields[0].lower()
        if conn_type not in CONNECTION_TYPES:
            raise HBAError(f"unknown connection type {fields[0]!r} in line: {raw_line.strip()}")
        need = 4 if conn_type == "local" else 5
        if len(fields) < need:
            raise HBAError(f"end-of-line before authentication method in line: {raw_line.strip()}")
        databases = _names(fields[1])
        users = _names(fields[2])
        network = None
        rest = 3
        if conn_type != "local":
            addr = fields[3]
            rest = 4
            if addr != "all":
                try:
                    if "/" in addr:
                        network = ipaddress.ip_network(addr, strict=False)
                    elif len(fields) >= 6 and _is_netmask(fields[4]):
                        network = ipaddress.ip_network(f"{addr}/{fields[4]}", strict=False)
                        rest = 5
                    else:
                        ip = ipaddress.ip_address(addr)
                        network = ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")
                except ValueError:
                    raise HBAError(f"invalid address {addr!r} in line: {raw_line.strip()}") from None
        method = fields[rest].lower()
        if method not in METHODS:
            raise HBAError(f"unknown authentication method {fields[rest]!r} in line: {raw_line.strip()}")
        rules.append(Rule(conn_type, databases, users, network, method, line))
        if len(rules) > MAX_RULES:
            raise HBAError(f"too many rules (more than {MAX_RULES})")
    return rules


def _is_netmask(field: str) -> bool:
    try:
        ipaddress.ip_address(field)
        return True
    except ValueError:
        return False


def rules_for(setting: str) -> list[Rule]:
    return parse(setting if setting.strip() else DEFAULT_CONFIG)


def match(rules: list[Rule], conn_type: str, database: str, user: str, address: str | None,
          is_tls: bool) -> Rule | None:
    ip = None
    if address:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            ip = None
    for rule in rules:
        if rule.matches(conn_type, database, user, ip, is_tls):
            return rule
    return None


def allowlist_config(cidrs: list[str]) -> str:
    """The configuration that lets password or certificate users in from these networks only."""
    lines = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
        lines.append(f"host all all {net} cert-password")
    return "\n".join(lines)
