"""HTTP API (FastAPI, served by uvicorn): the same service as the CLI and the app, for programs.

Every route only translates: HTTP in, a ``FruitService`` call, JSON (or CSV) out. Errors are
RFC 9457 problem documents (``application/problem+json``) with a readable ``detail``; no
traceback ever reaches a client. Modules: ``schemas`` (documents), ``problems`` (errors),
``metrics``, ``deps`` (service, guard), ``routes``, ``labels``, ``forms`` (a batch's multipart
body, streamed), ``media`` (content types, paging), ``guard`` (auth and size before the body),
``access`` (request ids, the log).
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fruitstream.bootstrap import build_service
from fruitstream.config import Settings, load_settings
from fruitstream.errors import MissingDependencyError
from fruitstream.service import FruitService

try:
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.routing import APIRoute
except ImportError as exc:  # pragma: no cover - the 'api' extra
    raise MissingDependencyError("fastapi", "api") from exc

from fruitstream.entrypoints.api import problems
from fruitstream.entrypoints.api.access import RequestLog, logging_config
from fruitstream.entrypoints.api.asgi import Scope
from fruitstream.entrypoints.api.deps import tokens_of
from fruitstream.entrypoints.api.guard import RequestGuard
from fruitstream.entrypoints.api.metrics import Metrics
from fruitstream.entrypoints.api.routes import allowed_methods, router
from fruitstream.entrypoints.api.schemas import LabelIn, Problem
from fruitstream.entrypoints.api.settings import ApiSettings

log = logging.getLogger("fruitstream.api")


class _App(FastAPI):
    """FastAPI, with a document that says what the server sends: the schemas its routes refer
    to by hand in the components (FastAPI adds only those of the models it reads or writes
    itself: the problem document, and a label's JSON body, which the route reads itself to
    take two media types), and without the 422 FastAPI adds to a route with parameters
    (``HTTPValidationError``, application/json): a route that can refuse its input declares
    its own 422, a problem document; one that cannot has none."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        document = super().openapi()
        for item in document.get("paths", {}).values():
            for operation in item.values():
                invalid = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(invalid.get("content", "")):
                    del operation["responses"]["422"]
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if "HTTPValidationError" not in str(document["paths"]):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        ref = "#/components/schemas/{model}"
        schemas.setdefault("Problem", Problem.model_json_schema(ref_template=ref))
        schemas.setdefault("LabelIn", LabelIn.model_json_schema(ref_template=ref))
        document["components"]["schemas"] = dict(sorted(schemas.items()))
        return document


def create_app(
    service: FruitService | None = None,
    tokens: Sequence[str] | None = None,
    admin_tokens: Sequence[str] | None = None,
    settings: ApiSettings | None = None,
) -> FastAPI:
    """The ASGI app over ``service`` (built from settings at start when not given).

    ``admin_tokens`` (from ``FRUITSTREAM_API_ADMIN_TOKENS``) see every batch; any other token
    sees the batches it submitted.
    ``tokens``: bearer tokens accepted (from ``FRUITSTREAM_API_TOKENS`` when not given); none
    means no authentication, for a server bound to 127.0.0.1 only (``fruitstream serve``).
    ``settings``: the API's own (``FRUITSTREAM_API_*`` when not given).
    """
    if settings is None:
        settings = ApiSettings.of(service.settings) if service is not None else ApiSettings.load()
    api = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.service is None:
            app.state.service = _service(load_settings(), api)
        svc: FruitService = app.state.service
        svc.start()  # its worker and callback sender, as the service's policy says
        yield
        svc.stop()

    app = _App(
        generate_unique_id_function=_operation_id,
        docs_url=None,  # served below from the package's own Swagger UI files, not a CDN
        redoc_url=None,
        title="fruitstream",
        version="1",
        summary="Recognize fruit in photos: one at once, or batches through the pipeline.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.tokens = list(tokens) if tokens is not None else None
    app.state.admin_tokens = list(admin_tokens) if admin_tokens is not None else None
    app.state.api = api
    app.state.metrics = Metrics()
    app.state.allowed_methods = allowed_methods
    problems.install(app)
    app.include_router(router)
    _serve_docs(app)
    app.add_middleware(
        RequestGuard,
        settings=lambda scope: (scope["app"].state.service.settings.limits, api),
        tokens=lambda scope: tokens_of(scope["app"]),
    )
    # Outside the guard: its answers are logged, tagged and counted too.
    app.add_middleware(RequestLog, observe=_observe)
    origins = api.cors_origin_list
    if origins:  # outermost: a browser's preflight is answered before anything else
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_RESPONSE_HEADERS,
        )
    return app


def _service(settings: Settings, api: ApiSettings) -> FruitService:
    # FRUITSTREAM_API_WORKER=false: batches wait for a worker or Spark job started elsewhere.
    return build_service(settings, start_workers=api.worker)


# What a browser page may send (beyond the CORS-safelisted ones) and read of an answer.
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"]
CORS_RESPONSE_HEADERS = [
    "X-Request-ID",
    "X-Results-Complete",
    "X-Results-Pending",
    "X-Next-Cursor",
    "Link",
    "Idempotent-Replayed",
    "Retry-After",
    "Content-Disposition",
    "Allow",
]
DOCS_ASSETS = "/docs/assets"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API with uvicorn until stopped. Without tokens it binds to 127.0.0.1 only,
    whatever ``host`` says, and says so."""
    import uvicorn

    api = ApiSettings.of(settings)
    json_lines = settings.log_format == "json"
    # From here every line on stderr is in the log's format (dictConfig consumes its dict:
    # uvicorn gets its own below).
    logging.config.dictConfig(logging_config(json_lines))
    logging.captureWarnings(True)
    secured = bool(api.token_list or api.admin_token_list)
    if not secured and host not in LOOPBACK:
        log.warning("no FRUITSTREAM_API_TOKENS configured: binding to 127.0.0.1, not %s", host)
        host = "127.0.0.1"
    auth = "bearer tokens required" if secured else "no authentication"
    print(f"fruitstream API at http://{host}:{port} ({auth}); docs at /docs", flush=True)
    app = create_app(_service(settings, api), settings=api)
    uvicorn.run(app, host=host, port=port, log_config=logging_config(json_lines), access_log=False)


def _operation_id(route: APIRoute) -> str:
    """Stable operation ids: ``get_history``, ``post_submit``, ``head_results``, ..."""
    method = sorted(route.methods or {"GET"})[0].lower()
    return f"{method}_{route.name}"


def _observe(scope: Scope, status: int, seconds: float) -> None:
    """Count a request under its route template (never the raw path: one series per route)."""
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    scope["app"].state.metrics.request(template, scope["method"], status, seconds)


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files of the ``swagger-ui-bundle-v2`` package: the page
    works where the server has no internet, and loads nothing from elsewhere."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="fruitstream API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )
