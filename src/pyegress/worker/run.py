"""``pyegress worker``: connect to the cluster's Redis, serve until SIGTERM, drain, exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import Awaitable

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from .config import ConfigError, WorkerConfig
from .egress import EgressWorker
from .metrics import WorkerMetrics, serve_metrics, tick_backlog
from .psrpc import Bus
from .redis_clients import make_cluster_keys, make_redis

log = logging.getLogger("pyegress.worker")

#: How often the worker asks Redis for its run id (a new one means Redis restarted).
REDIS_CHECK_INTERVAL = 1.0


async def _health_server(worker: EgressWorker, port: int) -> web.AppRunner:
    async def health(_: web.Request) -> web.Response:
        answer = worker.health()
        for active in answer["active"]:  # type: ignore[attr-defined]
            active["backlog"] = tick_backlog(worker, active["egress_id"])  # ticks not yet encoded
        return web.json_response(answer, status=503 if worker.draining else 200)

    app = web.Application()
    app.router.add_get("/", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def _watch_redis(client: aioredis.Redis, worker: EgressWorker) -> None:
    """Resync the worker's egresses whenever Redis restarted (or a sentinel failed over): a new
    ``run_id`` means the server's egress store may have lost them. Errors just wait for Redis."""
    known = ""
    while True:
        try:
            run_id = str((await client.info("server")).get("run_id", ""))
        except (RedisError, OSError):
            run_id = ""
        if run_id and known and run_id != known:
            log.warning("Redis restarted (run id %s); sending the running egresses again", run_id)
            worker.resync()
        known = run_id or known
        await asyncio.sleep(REDIS_CHECK_INTERVAL)


async def _listen(field: str, port: int, serve: Awaitable[web.AppRunner]) -> web.AppRunner:
    """``serve``'s runner; a port that cannot be served (taken, not allowed) is a config error
    naming ``field``, not a traceback."""
    try:
        return await serve
    except OSError as e:
        raise ConfigError(field, f"port {port} cannot be served: {e.strerror or e}") from None


async def _let_go(runners: list[web.AppRunner], client: aioredis.Redis, keys: RedisCluster | None) -> None:
    """Stop serving the ports and close the Redis connections (the last of a worker's exit)."""
    for runner in runners:
        await runner.cleanup()
    await client.aclose()
    if keys is not None:
        await keys.aclose()


async def run_worker(config: WorkerConfig, *, drain_timeout: float | None = None) -> int:
    """Serve the cluster until SIGTERM / SIGINT, then drain (up to ``drain_timeout`` s, default
    the config's ``drain_timeout``) and exit 0."""
    if drain_timeout is None:
        drain_timeout = config.drain_timeout
    client = make_redis(config.redis)
    keys = make_cluster_keys(config.redis)
    node_id = "EW_" + secrets.token_hex(6)
    bus = Bus(client, node_id, keys=keys)
    worker = EgressWorker(config, bus)
    metrics = WorkerMetrics(worker) if config.prometheus_port else None
    runners: list[web.AppRunner] = []
    try:  # the ports first: a worker that cannot serve them must not claim requests
        if config.health_port:
            runners.append(
                await _listen("health_port", config.health_port, _health_server(worker, config.health_port))
            )
        if metrics is not None:
            port = config.prometheus_port
            runners.append(await _listen("prometheus_port", port, serve_metrics(metrics, port)))
    except ConfigError:
        await _let_go(runners, client, keys)
        raise
    await bus.start()
    await worker.start()
    watcher = asyncio.create_task(_watch_redis(client, worker))
    if metrics is not None:
        metrics.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info("worker %s serving (%.2f cores for egress)", node_id, worker.capacity)
    await stop.wait()
    log.info("worker %s draining (up to %g s)", node_id, drain_timeout)
    try:
        await worker.drain(drain_timeout)
    finally:
        watcher.cancel()
        await worker.close()
        if metrics is not None:
            await metrics.close()
        await bus.close()
        await _let_go(runners, client, keys)
    return 0
