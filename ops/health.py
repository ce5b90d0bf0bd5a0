"""/metrics, /healthz and /readyz for every long-running component.

The components only say whether they are ready (an async check); the composition root starts
this server for them (`start_http`, or `serve` for a component that runs it as a task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

#: True when ready; False, or a text saying why, when not.
ReadyCheck = Callable[[], Awaitable[bool | str]]

#: /readyz answers within this, whatever the check waits on (a check that takes longer is
#: "not ready").
READY_TIMEOUT_S = 5.0


async def start_http(host: str, port: int, ready: ReadyCheck) -> web.AppRunner:
    """Serve the endpoints on the running loop; the caller awaits runner.cleanup() on stop."""

    async def metrics(request: web.Request) -> web.Response:
        # `?name[]=a&name[]=b` serves only those metric families, as prometheus_client's own
        # handlers do: a close watcher (bench e2e scrapes the sink every 20 ms) then costs the
        # process a fraction of a full page (collectors, /proc reads, every labelled series).
        names = request.query.getall("name[]", [])
        body = generate_latest(REGISTRY.restricted_registry(names) if names else REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        try:
            ok = await asyncio.wait_for(ready(), READY_TIMEOUT_S)
        except TimeoutError:
            why = f"the readiness check did not finish within {READY_TIMEOUT_S:g} s"
            return web.Response(status=503, text=f"not ready: {why}\n")
        except Exception as exc:  # a failing check means "not ready", not a 500
            return web.Response(status=503, text=f"not ready: {type(exc).__name__}\n")
        if ok is True:
            return web.Response(text="ready\n")
        why = ok or "Kafka is not reachable"
        return web.Response(status=503, text=f"not ready: {why}\n")

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
