"""Users, roles, role membership and privilege grants.

CREATE/ALTER/DROP USER|ROLE, GRANT/REVOKE <privileges> ON <objects> TO|FROM <roles>, and
GRANT/REVOKE <role> TO|FROM <members>. Passwords are stored only as salted SCRAM verifiers.
Like DDL, these write system keys in the session's transaction and bump the catalog version.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pillbug.sql import access, unsupported
from pillbug.sql.catalog import system
from pillbug.sql.catalog.system import ADMIN_ROLE, PUBLIC_ROLE, ROOT_USER, UserRecord
from pillbug.sql.parser.front import Statement
from pillbug.sql.settings import current as current_setting
from pillbug.util import errors, passwords

_NAME = re.compile(r"^[\w.-]{1,63}$", re.UNICODE)
RESERVED = frozenset({ROOT_USER, ADMIN_ROLE, PUBLIC_ROLE, "none"})


def _changed(session: Any) -> None:
    system.bump_version(session.txn)
    session.catalog_changed()


def _role_name(spec: dict) -> str:
    rs = spec.get("RoleSpec", spec)
    rt = rs.get("roletype")
    if rt == "ROLESPEC_CURRENT_USER" or rt == "ROLESPEC_SESSION_USER" or rt == "ROLESPEC_CURRENT_ROLE":
        return "\x00current"
    if rt == "ROLESPEC_PUBLIC":
        return PUBLIC_ROLE
    return rs["rolename"]


def _check_may_manage_roles(session: Any) -> None:
    catalog = session.catalog
    if catalog.is_admin(session.user):
        return
    rec = catalog.users.get(session.user)
    if rec is None or not rec.options.get("createrole"):
        raise errors.insufficient_privilege(
            f"user {session.user} does not have CREATEROLE privilege")


def _apply_options(session: Any, user: UserRecord, options: list[dict]) -> None:
    for opt in options:
        d = opt["DefElem"]
        name = d["defname"]
        arg = d.get("arg")
        if name == "password":
            if arg is None:
                user.verifier = None
                continue
            password = arg["String"]["sval"]
            minimum = int(current_setting(session.catalog.settings, "server.user_login.min_password_length"))
            if len(password) < minimum:
                raise errors.invalid_parameter_value("password too short")
            user.verifier = passwords.make_verifier(password)
        elif name == "canlogin":
            user.can_login = bool(arg["Boolean"]["boolval"]) if "Boolean" in arg else bool(arg.get("Integer", {}).get("ival", 0))
        elif name in ("createdb", "createrole", "controljob", "viewactivity", "cancelquery",
                      "modifyclustersetting", "controlchangefeed", "createlogin"):
            val = arg.get("Boolean", {}).get("boolval", False) if arg else True
            if val:
                user.options[name] = True
            else:
                user.options.pop(name, None)
        elif name == "validUntil":
            user.options["valid_until"] = arg["String"]["sval"] if arg else None
        elif name in ("superuser", "inherit", "replication", "bypassrls", "connectionlimit"):
            raise errors.unimplemented(f"role option {name.upper()} is not supported")
        else:
            raise errors.unimplemented(f"role option {name} is not supported")


def create_role(session: Any, stmt: Statement) -> str:
    _check_may_manage_roles(session)
    body = stmt.node
    name = body["role"]
    is_user = body.get("stmt_type") == "ROLESTMT_USER"
    if not _NAME.match(name) or name in ("none",) or name.startswith("pg_") or name.startswith("crdb_internal"):
        raise errors.PgError(errors.INVALID_NAME, f'role name "{name}" is reserved or invalid')
    tag = "CREATE ROLE"
    if name in session.catalog.users:
        if stmt.if_not_exists:
            return tag
        raise errors.PgError(errors.DUPLICATE_OBJECT, f"a role/user named {name} already exists")
    user = UserRecord(name, None, is_role=not is_user, can_login=is_user)
    _apply_options(session, user, body.get("options") or [])
    system.write_user(session.txn, user)
    _changed(session)
    return tag


def alter_role(session: Any, stmt: Statement) -> str:
    body = stmt.node
    name = _role_name(body["role"])
    if name == "\x00current":
        name = session.user
    user = session.catalog.users.get(name)
    if user is None:
        if stmt.if_exists:
            return "ALTER ROLE"
        raise errors.undefined_object(f'role/user "{name}" does not exist')
    options = body.get("options") or []
    only_password = all(o["DefElem"]["defname"] == "password" for o in options)
    if not (name == session.user and only_password):
        _check_may_manage_roles(session)
    if name == ROOT_USER and not all(o["DefElem"]["defname"] == "password" for o in options):
        raise errors.insufficient_privilege("cannot edit the options of root")
    updated = UserRecord(user.name, user.verifier, user.is_role, user.can_login, dict(user.options))
    _apply_options(session, updated, options)
    system.write_user(session.txn, updated)
    _changed(session)
    return "ALTER ROLE"


def drop_role(session: Any, stmt: Statement) -> str:
    _check_may_manage_roles(session)
    body = stmt.node
    catalog = session.catalog
    txn = session.txn
    for spec in body["roles"]:
        name = _role_name(spec)
        if name in (ROOT_USER, ADMIN_ROLE, PUBLIC_ROLE):
            raise errors.insufficient_privilege(f"cannot drop special role {name}")
        if name == session.user:
            raise errors.PgError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE, "cannot drop the current user")
        if name not in catalog.users:
            if body.get("missing_ok"):
                continue
            raise errors.undefined_object(f'role/user "{name}" does not exist')
        dependents = [d for d in catalog.by_id.values()
                      if d.privileges.owner == name or name in d.privileges.grants]
        if dependents:
            d = dependents[0]
            what = access.object_kind(d)
            raise errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                                 f"cannot drop role/user {name}: grants still exist on {what} {d.name}",
                                 hint="revoke the privileges (and transfer ownership) first")
        txn.delete(system.user_key(name))
        for role, members in catalog.members.items():
            if name in members:
                txn.delete(system.member_key(role, name))
        for member in catalog.members.get(name, {}):
            txn.delete(system.member_key(name, member))
    _changed(session)
    return "DROP ROLE"


def grant_role(session: Any, stmt: Statement) -> str:
    body = stmt.node
    catalog = session.catalog
    txn = session.txn
    roles = [r["AccessPriv"]["priv_name"] for r in body["granted_roles"]]
    members = [_role_name(m) for m in body["grantee_roles"]]
    members = [session.user if m == "\x00current" else m for m in members]
    with_admin = any(o.get("DefElem", {}).get("defname") == "admin" for o in body.get("opt") or [])
    for role in roles:
        if role not in catalog.users:
            raise errors.undefined_object(f'role/user "{role}" does not exist')
        may_admin = catalog.is_admin(session.user) or catalog.members.get(role, {}).get(session.user)
        if not may_admin:
            raise errors.insufficient_privilege(f"{session.user} must have admin option on role \"{role}\"")
        for member in members:
            if member not in catalog.users:
                raise errors.undefined_object(f'role/user "{member}" does not exist')
            if body.get("is_grant", False):
                if member == role:
                    raise errors.invalid_parameter_value(f"{role} cannot be a member of itself")
                if member in catalog.roles_of(role):
                    raise errors.invalid_parameter_value(f"making {member} a member of {role} would create a cycle")
                txn.put(system.member_key(role, member), json.dumps({"admin": with_admin}).encode())
            else:
                if role == ADMIN_ROLE and member == ROOT_USER:
                    raise errors.insufficient_privilege("root cannot be removed from the admin role")
                txn.delete(system.member_key(role, member))
    _changed(session)
    return "GRANT" if body.get("is_grant", False) else "REVOKE"


def _objects(session: Any, body: dict) -> list[Any]:
    objtype = body.get("objtype")
    catalog = session.catalog
    out: list[Any] = []
    if body.get("targtype") == "ACL_TARGET_ALL_IN_SCHEMA":
        db = session.current_db()
        for schema_node in body["objects"]:
            schema_name = schema_node["String"]["sval"]
            schema_id = db.schemas.get(schema_name)
            if schema_id is None:
                raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'schema "{schema_name}" does not exist')
            out.extend(t for t in catalog.tables_in(db.id) if t.schema_id == schema_id)
        return out
    for obj in body["objects"]:
        if objtype == "OBJECT_DATABASE":
            name = obj["String"]["sval"]
            db = catalog.database(name)
            if db is None:
                raise errors.undefined_database(name)
            out.append(db)
        elif objtype == "OBJECT_SCHEMA":
            name = obj["String"]["sval"]
            db = session.current_db()
            schema_id = db.schemas.get(name)
            if schema_id is None:
                raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'schema "{name}" does not exist')
            out.append(catalog.by_id[schema_id])
        elif objtype in ("OBJECT_TABLE", "OBJECT_SEQUENCE", "OBJECT_VIEW"):
            rv = obj["RangeVar"]
            names = [n for n in (rv.get("catalogname"), rv.get("schemaname"), rv["relname"]) if n]
            if names[-1] == "*":
                raise errors.feature_not_supported("use GRANT ... ON ALL TABLES IN SCHEMA")
            kind, table = session.resolve_table_name(names)
            if kind != "table":
                raise errors.insufficient_privilege(f"cannot grant on virtual table {'.'.join(names)}")
            out.append(table)
        else:
            raise unsupported.object_statement("GRANT on", objtype)
    return out


def grant(session: Any, stmt: Statement) -> str:
    body = stmt.node
    catalog = session.catalog
    txn = session.txn
    is_grant = body.get("is_grant", False)
    privs = [p["AccessPriv"]["priv_name"].upper() for p in body.get("privileges") or []] or ["ALL"]
    grantees = [_role_name(g) for g in body["grantees"]]
    grantees = [session.user if g == "\x00current" else g for g in grantees]
    for g in grantees:
        if g not in catalog.users and g != PUBLIC_ROLE:
            raise errors.undefined_object(f'role/user "{g}" does not exist')
    for desc in _objects(session, body):
        kind = access.object_kind(desc)
        valid = access.valid_privileges(kind)
        for p in privs:
            if p not in valid:
                raise errors.PgError(errors.INVALID_GRANT_OPERATION,
                                     f"invalid privilege type {p} for {kind}")
        if not (catalog.is_admin(session.user) or desc.privileges.owner in catalog.roles_of(session.user)):
            raise errors.insufficient_privilege(
                f"user {session.user} does not have GRANT privilege on {access.message_kind(desc)} {desc.name}")
        new = type(desc).from_json(desc.to_json())
        grants = new.privileges.grants
        for g in grantees:
            current = grants.setdefault(g, set())
            if is_grant:
                if "ALL" in privs:
                    current.clear()
                    current.add("ALL")
                else:
                    current.update(privs)
            else:
                if "ALL" in privs:
                    current.clear()
                elif "ALL" in current:
                    current.discard("ALL")
                    current.update(p for p in valid if p != "ALL" and p not in privs)
                else:
                    current.difference_update(privs)
            if not current:
                del grants[g]
        system.write_descriptor(txn, new)
    _changed(session)
    return "GRANT" if is_grant else "REVOKE"

