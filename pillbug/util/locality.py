"""A node's locality: CockroachDB's --locality, comma-separated key=value tiers from the most
inclusive to the least (region=us-east1,zone=us-east1-b).

The text is what the node was started with (the CLI validates it) and is what SHOW LOCALITY and
the node tables show; the tiers are what gateway_region(), crdb_internal.locality_value() and SHOW
REGIONS look into. Here, below sql/, so that both the builtins and the cluster view read tiers
the same way; it knows nothing of SQL.
"""
from __future__ import annotations

# The tiers that CockroachDB reads as a node's availability zone (SHOW REGIONS' zones).
ZONE_KEYS = ("zone", "availability-zone", "az")


def tiers(locality: str) -> list[tuple[str, str]]:
    """The (key, value) tiers of a locality, in order; none for the empty locality."""
    return [(key, value) for key, _, value in (tier.partition("=") for tier in locality.split(",") if tier)]


def value(locality: str, key: str) -> str | None:
    """The value of the first tier named `key`; None when the locality has no such tier."""
    return next((v for k, v in tiers(locality) if k == key), None)


def zone(locality: str) -> str | None:
    """The availability zone tier's value (zone, availability-zone or az); None without one."""
    return next((v for k, v in tiers(locality) if k in ZONE_KEYS), None)
