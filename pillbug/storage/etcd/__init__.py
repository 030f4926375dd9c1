"""The etcd engine: Pillbug's cluster keeps its data, and coordinates its nodes, in one etcd group
(docs/rfcs/0001-cluster.md §2).

  keys.py       the etcd key layout (data under d, engine keys under x/)
  transport.py  one gRPC channel per member: reads fail over, commits are sent once
  store.py      EtcdStore: reads at one linearizable revision, commits as one etcd Txn settled by a
                transaction record when ambiguous, tombstone GC and compaction, the revision clock
  coord.py      node ids, liveness leases, membership, elections and the inbox between nodes
  locks.py      row locks of hot keys across nodes, on the nodes' leases
"""
from pillbug.storage.etcd.store import EtcdStore
from pillbug.storage.etcd.transport import EtcdStats, EtcdTLS

__all__ = ["EtcdStats", "EtcdStore", "EtcdTLS"]
