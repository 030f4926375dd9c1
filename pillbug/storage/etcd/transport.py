"""gRPC calls to the etcd members, one channel each: the local member first, the others on failure.

etcd3aio's own client round-robins every call over all endpoints and retries UNAVAILABLE and
DEADLINE_EXCEEDED by itself (etcd.md §2). A gateway wants neither: reads should go to the member
on its own machine (the serializable ones are served there without a Raft round trip), and a
commit must never be sent twice, because a retried commit that had applied fails its own compares
and looks like a conflict. So this module builds one channel per member on etcd3aio's raw
protobuf stubs and decides itself where each call goes:
  read()   a call that changes nothing: on failure it moves on to the next member, round after
           round, until one answers; the caller's cancellation (a statement's cancel or timeout)
           is what ends the wait. A member that has not applied the asked-for revision yet
           ("future revision") is skipped the same way.
  once()   one attempt on one member, for commits; the caller settles an ambiguous outcome.
The receive limit is raised to 16 MiB (grpcio's default 4 MiB refuses a page of a few large
values; etcd.md §6).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from etcd3aio import _protobuf as pb

MAX_RECEIVE_BYTES = 16 << 20
MAX_SEND_BYTES = 16 << 20
READ_ATTEMPT_SECONDS = 2.0  # one member's chance to answer a read before the next one is asked
LOCAL_RETRY_SECONDS = 5.0  # after a failover, how long before the local member is tried first again


@dataclass(frozen=True)
class EtcdTLS:
    """PEM file paths; the cert is a client cert signed by the cluster CA."""
    ca_file: str
    cert_file: str
    key_file: str


@dataclass
class EtcdStats:
    """Counters for /_status/vars (read anywhere)."""
    commits: int = 0  # commits that applied
    conflicts: int = 0  # commits refused because a compare failed (or settled as aborted)
    ambiguous_commits: int = 0  # commits whose answer was lost and that a txn record had to settle
    unknown_commits: int = 0  # of those, the ones nobody could settle (40003)
    reads: int = 0  # serializable read calls (get, get_many, scan pages)
    linearizable_calls: int = 0  # current_revision's calls (one per coalesced group)
    failovers: int = 0  # calls moved to another member
    rtt_seconds_total: float = 0.0  # etcd round trips: the sum, for the mean
    rtt_count: int = 0
    rtt_last_seconds: float = 0.0

    @property
    def rtt_mean_seconds(self) -> float:
        return self.rtt_seconds_total / self.rtt_count if self.rtt_count else 0.0


class CompactedRevision(Exception):
    """etcd: "required revision has been compacted"."""


class FutureRevision(Exception):
    """No member has the asked-for revision yet."""


def is_compacted(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (exc.details() or "")


def _is_future(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() == grpc.StatusCode.OUT_OF_RANGE and "future revision" in (exc.details() or "")


# "context deadline exceeded" (UNKNOWN) is a member cut off from the others whose linearizable
# read waited for a quorum in vain (seen in the network-cut test).
_TRANSIENT_DETAILS = ("leader changed", "timed out", "no leader", "stopped", "not capable",
                      "too many requests", "Stream removed", "Socket closed", "context deadline exceeded")


def is_transient(exc: grpc.aio.AioRpcError) -> bool:
    """A failure that says nothing about the request: another member (or a later try) may do."""
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return True
    details = exc.details() or ""
    return code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and any(
        text in details for text in _TRANSIENT_DETAILS)


class Transport:
    """One channel per member; endpoints[0] is the local member."""

    def __init__(self, endpoints: Sequence[str], tls: EtcdTLS | None, stats: EtcdStats) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.replace("localhost", "127.0.0.1") for e in endpoints]
        self.stats = stats
        options = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                   ("grpc.max_send_message_length", MAX_SEND_BYTES),
                   ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                   ("grpc.keepalive_permit_without_calls", 1),
                   # Reconnect to a member that came back within a second, not after grpc's 2 min cap.
                   ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
        self.tls = tls
        credentials = _credentials(tls) if tls else None
        self.channels: list[grpc.aio.Channel] = [
            grpc.aio.secure_channel(e, credentials, options=options) if credentials
            else grpc.aio.insecure_channel(e, options=options) for e in self.endpoints]
        self.kv = [pb.KVStub(ch) for ch in self.channels]
        self.watch = [pb.WatchStub(ch) for ch in self.channels]
        self.maintenance = [pb.MaintenanceStub(ch) for ch in self.channels]
        self._preferred = 0
        self._preferred_since = 0.0

    @property
    def preferred(self) -> int:
        """The member to ask first: the local one, unless it failed in the last few seconds."""
        if self._preferred and time.monotonic() - self._preferred_since > LOCAL_RETRY_SECONDS:
            self._preferred = 0
        return self._preferred

    def writer(self) -> int:
        """The member to send a commit to: the preferred one, unless its channel is known to be down
        (a commit sent to a dead member costs a settle and a needless 40001)."""
        first = self.preferred
        for step in range(len(self.channels)):
            member = (first + step) % len(self.channels)
            if self.channels[member].get_state() != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                return member
        return first

    def moved(self, member: int) -> None:
        """Prefer `member` for a while (another member answered when the preferred one did not)."""
        if member != self._preferred:
            self._moved(member)

    def _moved(self, member: int) -> None:
        self.stats.failovers += 1
        self._preferred = member
        self._preferred_since = time.monotonic()

    async def once(self, method: str, request: Any, member: int, timeout: float | None) -> Any:
        """One attempt of KV.<method> on one member; errors are the caller's."""
        call = getattr(self.kv[member], method)
        began = time.perf_counter()
        try:
            return await call(request, timeout=timeout)
        finally:
            elapsed = time.perf_counter() - began
            stats = self.stats
            stats.rtt_seconds_total += elapsed
            stats.rtt_count += 1
            stats.rtt_last_seconds = elapsed

    async def read(self, method: str, request: Any, attempt_seconds: float = READ_ATTEMPT_SECONDS) -> Any:
        """KV.<method>(request) on the preferred member, then the others, until one answers.

        Raises CompactedRevision, FutureRevision (every member said so, twice) and any
        non-transient error; RESOURCE_EXHAUSTED goes to the caller too (a page too big)."""
        count = len(self.kv)
        member = self.preferred
        rounds = 0
        futures = 0
        while True:
            for step in range(count):
                target = (member + step) % count
                try:
                    response = await self.once(method, request, target, attempt_seconds)
                except grpc.aio.AioRpcError as exc:
                    if is_compacted(exc):
                        raise CompactedRevision(exc.details()) from None
                    if _is_future(exc):
                        futures += 1
                        continue
                    if not is_transient(exc):
                        raise
                    continue
                if target != self._preferred:
                    self._moved(target)
                return response
            rounds += 1
            if futures >= 2 * count:
                raise FutureRevision()
            # Nobody answered: an election, a restart. Back off a little and go round again.
            await asyncio.sleep(min(0.02 * (2 ** min(rounds, 6)), 1.0))

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def _credentials(tls: EtcdTLS) -> grpc.ChannelCredentials:
    with open(tls.ca_file, "rb") as f:
        ca = f.read()
    with open(tls.cert_file, "rb") as f:
        cert = f.read()
    with open(tls.key_file, "rb") as f:
        key = f.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
