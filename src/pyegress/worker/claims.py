"""Cluster-wide claims of egress ids: an egress starts on one worker only.

livekit-server re-sends ``StartEgress`` (same egress id, new request id) when a try timed out or
was refused for capacity, and any worker may receive the re-send: one that never saw the first
try would start the egress a second time. So before starting, a worker takes
``SET pyegress:egress:{id}:claim <node id> NX EX`` (for as long as the server may re-send: its
three tries take 10 + 20 + 40 s plus backoffs) and, once started, stores its answer beside it.
Other workers do not claim the request while the claim is held; one that gets it all the same
answers the holder's answer. A failed start releases the claim (the server's next try may start
it anywhere). Keys carry the egress id as their hash tag: a Redis Cluster keeps both on one node.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from .psrpc import Bus, RpcError

log = logging.getLogger("pyegress.worker")

#: How long a claim and its answer live: past the server's last re-send (10 + 20 + 40 s of
#: timeouts plus at most 7 s of backoff), so a late try never starts the egress again.
CLAIM_SECONDS = 120
#: How long a worker handed a request claimed elsewhere waits for the holder's answer.
ANSWER_WAIT = 5.0
_POLL = 0.1

#: Release the claim only while it is still this node's.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1], KEYS[2]) end
return 0
"""


def _keys(egress_id: str) -> tuple[str, str]:
    base = f"pyegress:egress:{{{egress_id}}}"
    return base + ":claim", base + ":answer"


class StartClaims:
    """The claims of the worker whose psrpc node is ``bus`` (its node id is the claim's value)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def holder(self, egress_id: str) -> str | None:
        """The node id holding ``egress_id``'s claim; None when free or Redis cannot say."""
        claim, _ = _keys(egress_id)
        try:
            value = await self.bus.key_command(lambda r: r.get(claim))
        except (RedisError, OSError) as e:
            log.debug("egress %s: claim not readable (%s)", egress_id, e)
            return None
        return value.decode() if isinstance(value, bytes) else None

    async def take(self, egress_id: str) -> bytes | None:
        """None once this node holds the claim; else the holder's answer (waited for up to
        ``ANSWER_WAIT`` s; the claim is taken here if the holder released it meanwhile).

        Raises :class:`RpcError` ``unavailable`` (the server tries again) when neither came, or
        when Redis cannot be reached."""
        claim, answer = _keys(egress_id)
        node = self.bus.node_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_WAIT
        try:
            while True:
                if await self.bus.key_command(lambda r: r.set(claim, node, nx=True, ex=CLAIM_SECONDS)):
                    return None
                first = await self.bus.key_command(lambda r: r.get(answer))
                if isinstance(first, bytes):
                    log.info("egress %s: started by another worker; answering with its answer", egress_id)
                    return first
                if loop.time() > deadline:
                    holder = await self.holder(egress_id)
                    raise RpcError("unavailable", f"egress_id: {egress_id} is starting on worker {holder}")
                await asyncio.sleep(_POLL)
        except (RedisError, OSError) as e:
            raise RpcError("unavailable", f"egress_id: {egress_id} not claimed (Redis: {e})") from e

    async def started(self, egress_id: str, answer: bytes) -> None:
        """Store this node's answer to the start, for a re-send handed to another worker."""
        _, key = _keys(egress_id)
        try:
            await self.bus.key_command(lambda r: r.set(key, answer, ex=CLAIM_SECONDS))
        except (RedisError, OSError) as e:  # the claim still holds: a re-send elsewhere waits, then retries
            log.warning("egress %s: start answer not stored (%s)", egress_id, e)

    async def release(self, egress_id: str) -> None:
        """Give the claim up after a failed start (only while it is still this node's)."""
        claim, answer = _keys(egress_id)
        node = self.bus.node_id
        try:
            await self.bus.key_command(lambda r: r.eval(_RELEASE, 2, claim, answer, node))
        except (RedisError, OSError) as e:  # it expires after CLAIM_SECONDS
            log.warning("egress %s: claim not released (%s)", egress_id, e)
