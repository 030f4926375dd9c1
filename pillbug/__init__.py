"""Pillbug: a distributed SQL database, written in Python, that behaves like CockroachDB.

Life of a statement (see docs/architecture.md for the long version):
  pgwire.connection reads a Query message -> sql.session.Session.execute_simple ->
  sql.parser.front.parse -> sql.opt.planner builds a plan (cached by statement shape) ->
  sql.exec operators pull rows from kv.txn.Txn -> storage.lmdb_store.LMDBStore ->
  rows come back up, pgwire.codecs turns them into DataRow messages.
"""

__version__ = "0.1.0"

# The CockroachDB release whose behaviour Pillbug follows; version() reports it first so that
# client libraries that sniff the dialect (sqlalchemy-cockroachdb, psycopg) recognise it.
CRDB_COMPAT_VERSION = "v24.1.0"
