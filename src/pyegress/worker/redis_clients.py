"""The worker's Redis clients: a plain address, sentinels, or a Redis Cluster.

psrpc uses SUBSCRIBE / PUBLISH, which a Redis Cluster broadcasts to every node, and one key
command, its queue lock (``SET NX``), which only the node owning the key's slot takes. So with
``cluster_addresses`` the worker subscribes and publishes on one node (the first of the list
that answers; a connection that drops reconnects to the next one that does) and sends the lock
through redis-py's cluster client, which follows the slots.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection
from redis.asyncio.sentinel import Sentinel

from .config import RedisConfig

__all__ = ["make_cluster_keys", "make_redis"]


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or address), int(port or 6379)


class _AnyNode:
    """Mixin of a redis-py connection that connects to the first of ``nodes`` that answers."""

    host: str
    port: int

    def __init__(self, *, nodes: list[tuple[str, int]], **kwargs: Any) -> None:
        self._nodes = nodes
        super().__init__(host=nodes[0][0], port=nodes[0][1], **kwargs)  # type: ignore[call-arg]

    async def _connect(self) -> None:
        error: BaseException | None = None
        for host, port in self._nodes:
            self.host, self.port = host, port
            try:
                await super()._connect()  # type: ignore[misc]
                return
            except (OSError, TimeoutError) as e:  # redis-py wraps it in ConnectionError
                error = e
        assert error is not None
        raise error


class _AnyNodeConnection(_AnyNode, Connection):
    pass


class _AnyNodeSSLConnection(_AnyNode, SSLConnection):
    pass


def make_redis(cfg: RedisConfig) -> aioredis.Redis:
    """The client psrpc subscribes and publishes with (a plain address, sentinels' master, or
    any reachable node of a cluster)."""
    username, password = cfg.username or None, cfg.password or None
    if cfg.cluster_addresses:
        pool = ConnectionPool(
            connection_class=_AnyNodeSSLConnection if cfg.use_tls else _AnyNodeConnection,
            nodes=[_host_port(a) for a in cfg.cluster_addresses],
            username=username,
            password=password,
            socket_connect_timeout=2.0,
        )
        return aioredis.Redis(connection_pool=pool)
    if cfg.sentinel_master_name:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [_host_port(a) for a in cfg.sentinel_addresses],
            sentinel_kwargs={
                "username": cfg.sentinel_username or None,
                "password": cfg.sentinel_password or None,
            },
            ssl=cfg.use_tls,
            username=username,
            password=password,
            db=cfg.db,
        )
        master: aioredis.Redis = sentinel.master_for(cfg.sentinel_master_name)
        return master
    host, port = _host_port(cfg.address)
    return aioredis.Redis(
        host=host, port=port, ssl=cfg.use_tls, username=username, password=password, db=cfg.db
    )


def make_cluster_keys(cfg: RedisConfig) -> RedisCluster | None:
    """redis-py's cluster client for psrpc's key command, when the Redis is a cluster."""
    if not cfg.cluster_addresses:
        return None
    return RedisCluster(
        startup_nodes=[ClusterNode(*_host_port(a)) for a in cfg.cluster_addresses],
        username=cfg.username or None,
        password=cfg.password or None,
        ssl=cfg.use_tls,
        max_connections=16,
    )
