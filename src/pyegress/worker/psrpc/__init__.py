"""psrpc over Redis pub/sub, as livekit-server (psrpc v0.7.2) speaks it.

Modules by concept: :mod:`.wire` (channel names, envelopes, :class:`RpcError`),
:mod:`.connection` (the subscription reader and publishing), :mod:`.server` (serving, claims,
queue locks), :mod:`.client` (calls).

One :class:`Bus` per node: it serves methods (``serve``) and calls them (``call``) with the node id
as both its server id and its client id. Every payload is an ``internal.Msg`` around one of psrpc's
envelopes (see :mod:`pyegress.worker.proto`); the RPC messages themselves travel as raw bytes, so
handlers decode and encode their own types. One subscription connection is read by one task that
only dispatches: handlers, claims and ``SET NX`` run as tasks of their own.
"""

from __future__ import annotations

from .client import Client
from .server import Served, Server
from .wire import RpcError, channel

__all__ = ["Bus", "RpcError", "Served", "channel"]


class Bus(Server, Client):
    """psrpc over Redis pub/sub for one node (server id / client id = node_id).

    ``redis`` must return bytes (``decode_responses=False``). Call :meth:`start` before use and
    :meth:`close` at the end; the Redis clients stay the caller's to close. ``keys``: the client
    of psrpc's one key command (the queue lock) when it is not ``redis``: with a Redis Cluster,
    pub/sub works on any node but a key only on the node owning its slot.
    """
