"""The web app and JSON HTTP API (Starlette + uvicorn); see :mod:`globeflow.web.app`."""

from globeflow.web.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
