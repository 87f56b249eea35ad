"""The API's dependencies: the service and the metrics of this app, and the bearer guard."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fruitstream.entrypoints.api.metrics import Metrics
from fruitstream.entrypoints.api.problems import UnauthorizedError
from fruitstream.service import FruitService

_bearer = HTTPBearer(auto_error=False)


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
    """Any configured token opens every route; none configured means no authentication."""
    tokens: list[str] | None = request.app.state.tokens
    wanted = tokens if tokens is not None else get_service(request).settings.api_token_list
    if not wanted:
        return
    given = credentials.credentials if credentials is not None else ""
    if not any(hmac.compare_digest(given.encode(), t.encode()) for t in wanted):
        raise UnauthorizedError
