"""The etcd engine: the Store contract on an etcd cluster (docs/rfcs/0001-cluster.md §2.1-2.4).

  keys.py       the etcd key layout (data under d, engine keys under x/)
  transport.py  one gRPC channel per member: reads fail over, commits are sent once
  store.py      EtcdStore: reads at one linearizable revision, commits as one etcd Txn settled by a
                transaction record when ambiguous, tombstone GC and compaction, the revision clock
"""
from pillbug.storage.etcd.store import EtcdStore
from pillbug.storage.etcd.transport import EtcdStats, EtcdTLS

__all__ = ["EtcdStats", "EtcdStore", "EtcdTLS"]
