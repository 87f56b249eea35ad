"""The API's dependencies: the service and the metrics of this app, and the bearer guard."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fruitstream.entrypoints.api.guard import token_accepted
from fruitstream.entrypoints.api.metrics import Metrics
from fruitstream.entrypoints.api.problems import UnauthorizedError
from fruitstream.service import FruitService

_bearer = HTTPBearer(auto_error=False)


def tokens_of(app: Any) -> list[str]:
    """The tokens ``app`` accepts: given to ``create_app``, else from the settings."""
    tokens: list[str] | None = app.state.tokens
    if tokens is not None:
        return tokens
    service: FruitService = app.state.service
    return service.settings.api_token_list


def get_service(request: Request) -> FruitService:
    service: FruitService = request.app.state.service
    return service


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
