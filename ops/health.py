"""/metrics, /healthz and /readyz for every long-running component.

The components only say whether they are ready (an async check); the composition root starts
this server for them (`start_http`, or `serve` for a component that runs it as a task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

ReadyCheck = Callable[[], Awaitable[bool]]


async def start_http(host: str, port: int, ready: ReadyCheck) -> web.AppRunner:
    """Serve the endpoints on the running loop; the caller awaits runner.cleanup() on stop."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        try:
            ok = await ready()
        except Exception as exc:  # a failing check means "not ready", not a 500
            return web.Response(status=503, text=f"not ready: {type(exc).__name__}\n")
        if ok:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: Kafka is not reachable\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(host: str, port: int, ready: ReadyCheck) -> None:
    """Serve the endpoints until cancelled (for a component that runs it as a task)."""
    runner = await start_http(host, port, ready)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
