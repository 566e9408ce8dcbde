"""corral's HTTP server: Cog's prediction API served from corral workers.

Needs the ``server`` extra (starlette, uvicorn, httpx, prometheus-client); nothing outside
this package imports them. ``create_app(runner, ...)`` builds the ASGI app for a
``corral.Worker`` or ``corral.Pool``; ``serve(...)`` runs it with uvicorn.
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
