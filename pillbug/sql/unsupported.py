"""What the client sees for SQL that Pillbug parses but does not run: CockroachDB's 0A000
`unimplemented: ...` error, naming the statement in SQL words (CREATE TRIGGER), never the
parser's node name (CreateTrigStmt).

The tables map pglast node kinds to the statement's SQL name and, where CockroachDB tracks the
feature in an issue that its own errors link to, that issue's number. This module knows nothing
of sessions or plans; the statements layer, the planner and the session raise what it builds.
"""
from __future__ import annotations

from pillbug.util import errors

# node kind -> (SQL statement name, CockroachDB tracking issue or None)
STATEMENTS: dict[str, tuple[str, int | None]] = {
    "AlterCollationStmt": ("ALTER COLLATION", None),
    "AlterDatabaseSetStmt": ("ALTER DATABASE ... SET", None),
    "AlterDatabaseStmt": ("ALTER DATABASE", None),
    "AlterDefaultPrivilegesStmt": ("ALTER DEFAULT PRIVILEGES", None),
    "AlterDomainStmt": ("ALTER DOMAIN", 27796),
    "AlterEnumStmt": ("ALTER TYPE", None),
    "AlterEventTrigStmt": ("ALTER EVENT TRIGGER", None),
    "AlterExtensionStmt": ("ALTER EXTENSION", None),
    "AlterFdwStmt": ("ALTER FOREIGN DATA WRAPPER", None),
    "AlterForeignServerStmt": ("ALTER SERVER", None),
    "AlterFunctionStmt": ("ALTER FUNCTION", 17511),
    "AlterObjectDependsStmt": ("ALTER ... DEPENDS ON EXTENSION", None),
    "AlterObjectSchemaStmt": ("ALTER ... SET SCHEMA", None),
    "AlterOpFamilyStmt": ("ALTER OPERATOR FAMILY", None),
    "AlterOperatorStmt": ("ALTER OPERATOR", None),
    "AlterOwnerStmt": ("ALTER ... OWNER TO", None),
    "AlterPolicyStmt": ("ALTER POLICY", None),
    "AlterPublicationStmt": ("ALTER PUBLICATION", None),
    "AlterRoleSetStmt": ("ALTER ROLE ... SET", None),
    "AlterSeqStmt": ("ALTER SEQUENCE", None),
    "AlterStatsStmt": ("ALTER STATISTICS", None),
    "AlterSubscriptionStmt": ("ALTER SUBSCRIPTION", None),
    "AlterSystemStmt": ("ALTER SYSTEM", None),
    "AlterTSConfigurationStmt": ("ALTER TEXT SEARCH CONFIGURATION", 7821),
    "AlterTSDictionaryStmt": ("ALTER TEXT SEARCH DICTIONARY", 7821),
    "AlterTableMoveAllStmt": ("ALTER TABLE ALL IN TABLESPACE", None),
    "AlterTableSpaceOptionsStmt": ("ALTER TABLESPACE", None),
    "AlterTypeStmt": ("ALTER TYPE", None),
    "AlterUserMappingStmt": ("ALTER USER MAPPING", None),
    "CallStmt": ("CALL", 17511),
    "ClosePortalStmt": ("CLOSE", None),
    "ClusterStmt": ("CLUSTER", None),
    "CommentStmt": ("COMMENT ON", None),
    "CompositeTypeStmt": ("CREATE TYPE", None),
    "ConstraintsSetStmt": ("SET CONSTRAINTS", None),
    "CreateAmStmt": ("CREATE ACCESS METHOD", None),
    "CreateCastStmt": ("CREATE CAST", None),
    "CreateConversionStmt": ("CREATE CONVERSION", None),
    "CreateDomainStmt": ("CREATE DOMAIN", 27796),
    "CreateEnumStmt": ("CREATE TYPE", None),
    "CreateEventTrigStmt": ("CREATE EVENT TRIGGER", None),
    "CreateExtensionStmt": ("CREATE EXTENSION", None),
    "CreateFdwStmt": ("CREATE FOREIGN DATA WRAPPER", None),
    "CreateForeignServerStmt": ("CREATE SERVER", None),
    "CreateForeignTableStmt": ("CREATE FOREIGN TABLE", None),
    "CreateFunctionStmt": ("CREATE FUNCTION", 17511),
    "CreateOpClassStmt": ("CREATE OPERATOR CLASS", None),
    "CreateOpFamilyStmt": ("CREATE OPERATOR FAMILY", None),
    "CreatePLangStmt": ("CREATE LANGUAGE", 17511),
    "CreatePolicyStmt": ("CREATE POLICY", None),
    "CreatePublicationStmt": ("CREATE PUBLICATION", None),
    "CreateRangeStmt": ("CREATE TYPE ... AS RANGE", None),
    "CreateStatsStmt": ("CREATE STATISTICS", None),
    "CreateSubscriptionStmt": ("CREATE SUBSCRIPTION", None),
    "CreateTableAsStmt": ("CREATE TABLE ... AS", None),
    "CreateTableSpaceStmt": ("CREATE TABLESPACE", None),
    "CreateTransformStmt": ("CREATE TRANSFORM", None),
    "CreateTrigStmt": ("CREATE TRIGGER", 28296),
    "CreateUserMappingStmt": ("CREATE USER MAPPING", None),
    "CreatedbStmt": ("CREATE DATABASE", None),
    "DeclareCursorStmt": ("DECLARE", None),
    "DefineStmt": ("CREATE AGGREGATE", None),  # refined by DEFINE_KINDS
    "DoStmt": ("DO", 17511),
    "DropOwnedStmt": ("DROP OWNED BY", None),
    "DropSubscriptionStmt": ("DROP SUBSCRIPTION", None),
    "DropTableSpaceStmt": ("DROP TABLESPACE", None),
    "DropUserMappingStmt": ("DROP USER MAPPING", None),
    "ExecuteStmt": ("EXECUTE", None),
    "FetchStmt": ("FETCH", None),
    "ImportForeignSchemaStmt": ("IMPORT FOREIGN SCHEMA", None),
    "ListenStmt": ("LISTEN", None),
    "LoadStmt": ("LOAD", None),
    "LockStmt": ("LOCK TABLE", None),
    "MergeStmt": ("MERGE", None),
    "NotifyStmt": ("NOTIFY", None),
    "PrepareStmt": ("PREPARE", None),
    "ReassignOwnedStmt": ("REASSIGN OWNED BY", None),
    "RefreshMatViewStmt": ("REFRESH MATERIALIZED VIEW", None),
    "ReindexStmt": ("REINDEX", None),
    "RuleStmt": ("CREATE RULE", None),
    "SecLabelStmt": ("SECURITY LABEL", None),
    "UnlistenStmt": ("UNLISTEN", None),
    # kinds that are statements elsewhere but not here
    "CopyStmt": ("COPY", None),
    "ExplainStmt": ("EXPLAIN", None),
    "TransactionStmt": ("this transaction statement", None),
    "VariableSetStmt": ("SET", None),
    "VariableShowStmt": ("SHOW", None),
    "CreateStmt": ("CREATE TABLE", None),
    "InsertStmt": ("INSERT", None),
    "UpdateStmt": ("UPDATE", None),
    "DeleteStmt": ("DELETE", None),
    "SelectStmt": ("SELECT", None),
}

# DefineStmt covers several CREATE statements, told apart by its `kind`.
DEFINE_KINDS: dict[str, tuple[str, int | None]] = {
    "OBJECT_AGGREGATE": ("CREATE AGGREGATE", None),
    "OBJECT_OPERATOR": ("CREATE OPERATOR", None),
    "OBJECT_TYPE": ("CREATE TYPE", None),
    "OBJECT_COLLATION": ("CREATE COLLATION", None),
    "OBJECT_TSPARSER": ("CREATE TEXT SEARCH PARSER", 7821),
    "OBJECT_TSDICTIONARY": ("CREATE TEXT SEARCH DICTIONARY", 7821),
    "OBJECT_TSTEMPLATE": ("CREATE TEXT SEARCH TEMPLATE", 7821),
    "OBJECT_TSCONFIGURATION": ("CREATE TEXT SEARCH CONFIGURATION", 7821),
}

# ObjectType names (DROP, ALTER, RENAME, COMMENT ON <object>) in SQL words.
OBJECT_TYPES: dict[str, str] = {
    "OBJECT_ACCESS_METHOD": "ACCESS METHOD", "OBJECT_AGGREGATE": "AGGREGATE", "OBJECT_CAST": "CAST",
    "OBJECT_COLLATION": "COLLATION", "OBJECT_COLUMN": "COLUMN", "OBJECT_CONVERSION": "CONVERSION",
    "OBJECT_DATABASE": "DATABASE", "OBJECT_DOMAIN": "DOMAIN", "OBJECT_EVENT_TRIGGER": "EVENT TRIGGER",
    "OBJECT_EXTENSION": "EXTENSION", "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_FOREIGN_SERVER": "SERVER", "OBJECT_FOREIGN_TABLE": "FOREIGN TABLE",
    "OBJECT_FUNCTION": "FUNCTION", "OBJECT_INDEX": "INDEX", "OBJECT_LANGUAGE": "LANGUAGE",
    "OBJECT_MATVIEW": "MATERIALIZED VIEW", "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPERATOR": "OPERATOR", "OBJECT_OPFAMILY": "OPERATOR FAMILY", "OBJECT_POLICY": "POLICY",
    "OBJECT_PROCEDURE": "PROCEDURE", "OBJECT_PUBLICATION": "PUBLICATION", "OBJECT_ROLE": "ROLE",
    "OBJECT_ROUTINE": "ROUTINE", "OBJECT_RULE": "RULE", "OBJECT_SCHEMA": "SCHEMA",
    "OBJECT_SEQUENCE": "SEQUENCE", "OBJECT_SUBSCRIPTION": "SUBSCRIPTION",
    "OBJECT_STATISTIC_EXT": "STATISTICS", "OBJECT_TABCONSTRAINT": "CONSTRAINT", "OBJECT_TABLE": "TABLE",
    "OBJECT_TABLESPACE": "TABLESPACE", "OBJECT_TRANSFORM": "TRANSFORM", "OBJECT_TRIGGER": "TRIGGER",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION", "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER", "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_TYPE": "TYPE", "OBJECT_VIEW": "VIEW",
}
# CockroachDB's tracking issues for objects, where its errors link one.
OBJECT_ISSUES: dict[str, int] = {
    "OBJECT_DOMAIN": 27796, "OBJECT_TRIGGER": 28296, "OBJECT_FUNCTION": 17511, "OBJECT_PROCEDURE": 17511,
    "OBJECT_LANGUAGE": 17511, "OBJECT_TSCONFIGURATION": 7821, "OBJECT_TSDICTIONARY": 7821,
    "OBJECT_TSPARSER": 7821, "OBJECT_TSTEMPLATE": 7821,
}

# ALTER TABLE subcommands (AlterTableType) in SQL words.
ALTER_TABLE_COMMANDS: dict[str, str] = {
    "AT_AddIdentity": "ALTER COLUMN ... ADD GENERATED AS IDENTITY",
    "AT_AddInherit": "INHERIT", "AT_AddOf": "OF", "AT_AlterColumnGenericOptions": "ALTER COLUMN ... OPTIONS",
    "AT_AlterConstraint": "ALTER CONSTRAINT", "AT_AttachPartition": "ATTACH PARTITION",
    "AT_ChangeOwner": "OWNER TO", "AT_ClusterOn": "CLUSTER ON", "AT_DetachPartition": "DETACH PARTITION",
    "AT_DisableRowSecurity": "DISABLE ROW LEVEL SECURITY", "AT_DisableRule": "DISABLE RULE",
    "AT_DisableTrig": "DISABLE TRIGGER", "AT_DisableTrigAll": "DISABLE TRIGGER ALL",
    "AT_DisableTrigUser": "DISABLE TRIGGER USER", "AT_DropCluster": "SET WITHOUT CLUSTER",
    "AT_DropIdentity": "ALTER COLUMN ... DROP IDENTITY", "AT_DropInherit": "NO INHERIT",
    "AT_DropOf": "NOT OF", "AT_EnableAlwaysRule": "ENABLE ALWAYS RULE", "AT_EnableAlwaysTrig": "ENABLE ALWAYS TRIGGER",
    "AT_EnableReplicaRule": "ENABLE REPLICA RULE", "AT_EnableReplicaTrig": "ENABLE REPLICA TRIGGER",
    "AT_EnableRowSecurity": "ENABLE ROW LEVEL SECURITY", "AT_EnableRule": "ENABLE RULE",
    "AT_EnableTrig": "ENABLE TRIGGER", "AT_EnableTrigAll": "ENABLE TRIGGER ALL",
    "AT_EnableTrigUser": "ENABLE TRIGGER USER", "AT_ForceRowSecurity": "FORCE ROW LEVEL SECURITY",
    "AT_GenericOptions": "OPTIONS", "AT_NoForceRowSecurity": "NO FORCE ROW LEVEL SECURITY",
    "AT_ReplicaIdentity": "REPLICA IDENTITY", "AT_ResetOptions": "RESET (...)",
    "AT_ResetRelOptions": "RESET (...)", "AT_SetAccessMethod": "SET ACCESS METHOD",
    "AT_SetCompression": "ALTER COLUMN ... SET COMPRESSION", "AT_SetIdentity": "ALTER COLUMN ... SET GENERATED",
    "AT_SetLogged": "SET LOGGED", "AT_SetOptions": "ALTER COLUMN ... SET (...)", "AT_SetRelOptions": "SET (...)",
    "AT_SetStatistics": "ALTER COLUMN ... SET STATISTICS", "AT_SetStorage": "ALTER COLUMN ... SET STORAGE",
    "AT_SetTableSpace": "SET TABLESPACE", "AT_SetUnLogged": "SET UNLOGGED",
    "AT_ValidateConstraint": "VALIDATE CONSTRAINT", "AT_CookedColumnDefault": "ALTER COLUMN ... SET DEFAULT",
    "AT_DropExpression": "ALTER COLUMN ... DROP EXPRESSION", "AT_AddIndex": "ADD INDEX",
    "AT_AddIndexConstraint": "ADD CONSTRAINT ... USING INDEX", "AT_AlterColumnType": "ALTER COLUMN ... TYPE",
}


def statement_name(kind: str, node: dict | None = None) -> tuple[str, int | None]:
    """A statement's SQL name (and CockroachDB issue) from its node kind."""
    if kind == "DefineStmt" and node is not None:
        found = DEFINE_KINDS.get(node.get("kind", ""))
        if found is not None:
            return found
    if kind == "CreateTableAsStmt" and node is not None and node.get("objtype") == "OBJECT_MATVIEW":
        return "CREATE MATERIALIZED VIEW", None
    if kind in ("DropStmt", "AlterTableStmt", "RenameStmt") and node is not None:
        objtype = node.get("removeType") or node.get("objtype") or node.get("renameType") or ""
        verb = {"DropStmt": "DROP", "AlterTableStmt": "ALTER", "RenameStmt": "ALTER"}[kind]
        return f"{verb} {OBJECT_TYPES.get(objtype, 'this object')}", OBJECT_ISSUES.get(objtype)
    return STATEMENTS.get(kind, ("this syntax", None))


def statement(kind: str, node: dict | None = None) -> errors.PgError:
    """The error for a statement Pillbug does not run."""
    name, issue = statement_name(kind, node)
    if name == "this syntax":
        return errors.unimplemented(name, issue)
    return errors.unimplemented(f"{name} is not supported", issue)


def object_statement(verb: str, objtype: str) -> errors.PgError:
    """DROP/ALTER/COMMENT ON/RENAME of an object kind Pillbug does not have."""
    what = OBJECT_TYPES.get(objtype, "this object")
    return errors.unimplemented(f"{verb} {what} is not supported", OBJECT_ISSUES.get(objtype))


# Constraint kinds (ConstrType) in SQL words.
CONSTRAINTS: dict[str, str] = {
    "CONSTR_EXCLUSION": "EXCLUDE constraints", "CONSTR_ATTR_DEFERRABLE": "DEFERRABLE constraints",
    "CONSTR_ATTR_DEFERRED": "INITIALLY DEFERRED constraints", "CONSTR_GENERATED": "computed columns",
    "CONSTR_IDENTITY": "identity columns", "CONSTR_FOREIGN": "foreign key constraints",
    "CONSTR_ATTR_NOT_DEFERRABLE": "NOT DEFERRABLE constraints",
    "CONSTR_ATTR_IMMEDIATE": "INITIALLY IMMEDIATE constraints",
}
# CREATE TABLE elements other than columns and constraints (pglast node kinds).
TABLE_ELEMENTS: dict[str, str] = {
    "TableLikeClause": "CREATE TABLE ... (LIKE ...)",
}


def constraint(ctype: str) -> errors.PgError:
    return errors.unimplemented(f"{CONSTRAINTS.get(ctype, 'this constraint')} are not supported")


def table_element(kind: str) -> errors.PgError:
    return errors.unimplemented(f"{TABLE_ELEMENTS.get(kind, 'this table element')} is not supported")


def alter_table_command(subtype: str) -> errors.PgError:
    what = ALTER_TABLE_COMMANDS.get(subtype, "this ALTER TABLE command")
    return errors.unimplemented(f"ALTER TABLE {what} is not supported")


# Expression node kinds in SQL words.
EXPRESSIONS: dict[str, str] = {
    "XmlExpr": "XML", "XmlSerialize": "XMLSERIALIZE", "CurrentOfExpr": "WHERE CURRENT OF",
    "SetToDefault": "DEFAULT in this position", "JsonIsPredicate": "IS JSON",
    "JsonObjectConstructor": "JSON_OBJECT", "JsonArrayConstructor": "JSON_ARRAY",
    "JsonArrayQueryConstructor": "JSON_ARRAY (query)", "JsonObjectAgg": "JSON_OBJECTAGG",
    "JsonArrayAgg": "JSON_ARRAYAGG", "JsonFuncExpr": "JSON_QUERY/JSON_VALUE/JSON_EXISTS",
    "JsonParseExpr": "JSON()", "JsonScalarExpr": "JSON_SCALAR", "JsonSerializeExpr": "JSON_SERIALIZE",
    "MergeSupportFunc": "MERGE_ACTION()", "MultiAssignRef": "row assignment in this position",
    "RowExpr": "ROW()", "GroupingFunc": "GROUPING()",
}
# A_Expr kinds in SQL words.
OPERATORS: dict[str, str] = {
    "AEXPR_OP": "this operator", "AEXPR_OP_ANY": "ANY", "AEXPR_OP_ALL": "ALL",
    "AEXPR_DISTINCT": "IS DISTINCT FROM", "AEXPR_NOT_DISTINCT": "IS NOT DISTINCT FROM",
    "AEXPR_NULLIF": "NULLIF", "AEXPR_IN": "IN", "AEXPR_LIKE": "LIKE", "AEXPR_ILIKE": "ILIKE",
    "AEXPR_SIMILAR": "SIMILAR TO", "AEXPR_BETWEEN": "BETWEEN", "AEXPR_NOT_BETWEEN": "NOT BETWEEN",
    "AEXPR_BETWEEN_SYM": "BETWEEN SYMMETRIC", "AEXPR_NOT_BETWEEN_SYM": "NOT BETWEEN SYMMETRIC",
}
# SQLValueFunction operators in SQL words.
VALUE_FUNCTIONS: dict[str, str] = {
    "SVFOP_CURRENT_DATE": "CURRENT_DATE", "SVFOP_CURRENT_TIME": "CURRENT_TIME",
    "SVFOP_CURRENT_TIME_N": "CURRENT_TIME(n)", "SVFOP_CURRENT_TIMESTAMP": "CURRENT_TIMESTAMP",
    "SVFOP_CURRENT_TIMESTAMP_N": "CURRENT_TIMESTAMP(n)", "SVFOP_LOCALTIME": "LOCALTIME",
    "SVFOP_LOCALTIME_N": "LOCALTIME(n)", "SVFOP_LOCALTIMESTAMP": "LOCALTIMESTAMP",
    "SVFOP_LOCALTIMESTAMP_N": "LOCALTIMESTAMP(n)", "SVFOP_CURRENT_ROLE": "CURRENT_ROLE",
    "SVFOP_CURRENT_USER": "CURRENT_USER", "SVFOP_USER": "USER", "SVFOP_SESSION_USER": "SESSION_USER",
    "SVFOP_CURRENT_CATALOG": "CURRENT_CATALOG", "SVFOP_CURRENT_SCHEMA": "CURRENT_SCHEMA",
}
# SubLink kinds in SQL words.
SUBLINKS: dict[str, str] = {
    "ROWCOMPARE_SUBLINK": "row comparison with a subquery", "MULTIEXPR_SUBLINK": "SET (...) = (SELECT ...)",
    "CTE_SUBLINK": "this subquery", "EXISTS_SUBLINK": "EXISTS", "ALL_SUBLINK": "ALL (subquery)",
    "ANY_SUBLINK": "ANY (subquery)", "EXPR_SUBLINK": "this subquery", "ARRAY_SUBLINK": "ARRAY (subquery)",
}
# FROM item node kinds in SQL words.
FROM_ITEMS: dict[str, str] = {
    "RangeTableSample": "TABLESAMPLE", "RangeTableFunc": "XMLTABLE", "JsonTable": "JSON_TABLE",
}


def _named(table: dict[str, str], kind: str, default: str) -> str:
    return table.get(kind, default)


def expression(kind: str) -> errors.PgError:
    return errors.unimplemented(f"{_named(EXPRESSIONS, kind, 'this expression')} is not supported")


def operator(kind: str) -> errors.PgError:
    return errors.unimplemented(f"{_named(OPERATORS, kind, 'this operator')} is not supported here")


def value_function(op: str) -> errors.PgError:
    return errors.unimplemented(f"{_named(VALUE_FUNCTIONS, op, 'this function')} is not supported")


def sublink(kind: str) -> errors.PgError:
    return errors.unimplemented(f"{_named(SUBLINKS, kind, 'this subquery')} is not supported")


def from_item(kind: str) -> errors.PgError:
    return errors.unimplemented(f"{_named(FROM_ITEMS, kind, 'this FROM item')} is not supported")
