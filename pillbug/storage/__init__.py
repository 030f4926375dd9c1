"""Storage: the Store contract (store.py) and its engines.

A Store keeps versioned bytes under byte keys, shaped like etcd's v3 data model: one global
revision counter, per-key mod_revision, snapshot reads at a revision, and one atomic conditional
commit. It knows nothing of rows, tables or SQL. Engines:
  lmdb_store.LMDBStore   embedded, one node, in-process: commits are made durable in a
                         write-ahead log (wal.py), wait in a memtable (memtable.py) and reach
                         LMDB in checkpoints.
"""
