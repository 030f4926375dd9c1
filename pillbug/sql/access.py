"""Privileges: who may do what to which object.

Every statement checks the privileges it needs against the object's grants, the roles the user
belongs to (directly or through other roles), ownership, and the admin role (which may do
anything, as may root). A missing privilege is SQLSTATE 42501 with CockroachDB's message.
This module knows nothing of statements; the planner and the DDL code call it.
"""
from __future__ import annotations

from pillbug.sql.catalog.descriptors import DatabaseDesc, Descriptor, SchemaDesc, TableDesc
from pillbug.sql.catalog.system import Catalog
from pillbug.util import errors

TABLE_PRIVILEGES = ("ALL", "SELECT", "INSERT", "UPDATE", "DELETE", "DROP", "ZONECONFIG", "CREATE",
                    "BACKUP", "CHANGEFEED")
DATABASE_PRIVILEGES = ("ALL", "CONNECT", "CREATE", "DROP", "ZONECONFIG", "BACKUP", "RESTORE")
SCHEMA_PRIVILEGES = ("ALL", "CREATE", "USAGE")


def has_privilege(catalog: Catalog, user: str, desc: Descriptor, privilege: str) -> bool:
    if catalog.is_admin(user):
        return True
    roles = catalog.roles_of(user)
    privs = desc.privileges
    if privs.owner in roles:
        return True
    for role in roles:
        granted = privs.grants.get(role)
        if granted and ("ALL" in granted or privilege in granted):
            return True
    return False


def object_kind(desc: Descriptor) -> str:
    if isinstance(desc, TableDesc):
        return "sequence" if desc.is_sequence else ("view" if desc.is_view else "table")
    if isinstance(desc, DatabaseDesc):
        return "database"
    if isinstance(desc, SchemaDesc):
        return "schema"
    return "object"


def check_privilege(catalog: Catalog, user: str, desc: Descriptor, privilege: str) -> None:
    if not has_privilege(catalog, user, desc, privilege):
        raise errors.insufficient_privilege(
            f"user {user} does not have {privilege} privilege on "
            f"{'relation' if isinstance(desc, TableDesc) else object_kind(desc)} {desc.name}")


def check_admin(catalog: Catalog, user: str, action: str) -> None:
    if not catalog.is_admin(user):
        raise errors.insufficient_privilege(f"only users with the admin role are allowed to {action}")


def valid_privileges(kind: str) -> tuple[str, ...]:
    return {"table": TABLE_PRIVILEGES, "database": DATABASE_PRIVILEGES, "schema": SCHEMA_PRIVILEGES,
            "sequence": TABLE_PRIVILEGES, "view": TABLE_PRIVILEGES}[kind]
