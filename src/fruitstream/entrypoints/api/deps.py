"""The API's dependencies: the service and the metrics of this app, and the bearer guard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fruitstream.domain import OPERATOR, Caller
from fruitstream.entrypoints.api.guard import owner_id, token_accepted
from fruitstream.entrypoints.api.metrics import Metrics
from fruitstream.entrypoints.api.problems import UnauthorizedError
from fruitstream.entrypoints.api.settings import ApiSettings
from fruitstream.service import FruitService

_bearer = HTTPBearer(auto_error=False)


def api_settings_of(app: Any) -> ApiSettings:
    """The API's own settings, read once per app."""
    api: ApiSettings = app.state.api
    return api


def admin_tokens_of(app: Any) -> list[str]:
    """The tokens that see every batch: given to ``create_app``, else from the settings."""
    tokens: list[str] | None = app.state.admin_tokens
    if tokens is not None:
        return tokens
    return api_settings_of(app).admin_token_list


def tokens_of(app: Any) -> list[str]:
    """Every token ``app`` accepts: given to ``create_app``, else from the settings, and the
    admin tokens."""
    tokens: list[str] | None = app.state.tokens
    if tokens is None:
        tokens = api_settings_of(app).token_list
    return [*tokens, *admin_tokens_of(app)]


def get_caller(request: Request) -> Caller:
    """Who asks: its token's owner; an admin (every batch) for an admin token, or on a
    server without tokens (bound to 127.0.0.1)."""
    if not tokens_of(request.app):
        return OPERATOR
    header = request.headers.get("authorization")
    admins = admin_tokens_of(request.app)
    if admins and token_accepted(header, admins):
        return OPERATOR
    return Caller(owner=owner_id((header or "").partition(" ")[2].strip()))


def get_service(request: Request) -> FruitService:
    service: FruitService = request.app.state.service
    return service


def get_api(request: Request) -> ApiSettings:
    return api_settings_of(request.app)


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def authorized(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> None:
    """Any configured token opens every route; none configured means no authentication.
    ``RequestGuard`` refuses before the body is read; this documents the scheme in OpenAPI
    and checks again."""
    if not token_accepted(request.headers.get("authorization"), tokens_of(request.app)):
        raise UnauthorizedError


# What routes declare: the guard, the service, whose batches, the counters.
GUARD = [Depends(authorized)]
Service = Annotated[FruitService, Depends(get_service)]
# Who asks, and so whose batches exist for the request.
CallerOf = Annotated[Caller, Depends(get_caller)]
Counters = Annotated[Metrics, Depends(get_metrics)]
Api = Annotated[ApiSettings, Depends(get_api)]
