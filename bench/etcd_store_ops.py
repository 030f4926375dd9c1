"""Per-operation cost of the etcd engine against raw etcd3aio stubs, one task, one process.

Usage: python bench/etcd_store_ops.py HOST:PORT [SECONDS]   (a running etcd; writes under b"bench/")
Measures, for `SECONDS` each: a serializable get at a revision, current_revision (a linearizable
call), and a one-key compare+put commit, through EtcdStore and through etcd3aio's raw KV stub.
"""
from __future__ import annotations

import sys
import time

import grpc.aio
import uvloop
from etcd3aio import _protobuf as pb

from pillbug.storage.etcd import EtcdStore
from pillbug.storage.store import KeyCompare
from pillbug.util import timeslice


async def rate(fn, seconds: float) -> float:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        await fn()
        n += 1
    return n / seconds


async def main(endpoint: str, seconds: float) -> None:
    store = await EtcdStore.open([endpoint], namespace=b"bench/")
    mod = [(await store.commit([], [(b"k", b"v")])).revision]
    at = await store.acurrent_revision()

    async def store_get():
        await timeslice.run(store.get, b"k", at)

    async def store_commit():
        result = await store.commit([KeyCompare(b"k", mod[0])], [(b"k", b"v")])
        mod[0] = result.revision

    kv = pb.KVStub(grpc.aio.insecure_channel(endpoint))
    raw_mod = [(await kv.Put(pb.PutRequest(key=b"bench/raw", value=b"v"))).header.revision]

    async def raw_get():
        await kv.Range(pb.RangeRequest(key=b"bench/raw", revision=at, serializable=True))

    async def raw_rev():
        await kv.Range(pb.RangeRequest(key=b"bench/raw"))

    async def raw_commit():
        resp = await kv.Txn(pb.TxnRequest(
            compare=[pb.Compare(target=pb.Compare.MOD, result=pb.Compare.EQUAL, key=b"bench/raw",
                                mod_revision=raw_mod[0])],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"bench/raw", value=b"v"))]))
        assert resp.succeeded
        raw_mod[0] = resp.header.revision

    for name, ours, raw in (("get at R (serializable)", store_get, raw_get),
                            ("current_revision (linearizable)", store.acurrent_revision, raw_rev),
                            ("compare+put commit", store_commit, raw_commit)):
        a, b = await rate(ours, seconds), await rate(raw, seconds)
        print(f"{name:34s} EtcdStore {a:7.0f}/s ({1000 / a:.2f} ms)   raw etcd3aio {b:7.0f}/s ({1000 / b:.2f} ms)")
    await store.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 3.0))
