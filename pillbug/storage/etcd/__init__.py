"""The etcd engine: Pillbug's cluster keeps its data, and coordinates its nodes, in one etcd group
(docs/rfcs/0001-cluster.md §2)."""
