"""One error shape for the whole API: `{"error": code, "message": text, "errors": [{field, error}]}`."""

from __future__ import annotations

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "too_large"


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "bad request"
    default_code = "bad_request"


def _flatten(detail, path: str = "") -> list[dict]:
    if isinstance(detail, dict):
        items: list[dict] = []
        for key, value in detail.items():
            name = path if key == "non_field_errors" else (f"{path}.{key}" if path else str(key))
            items.extend(_flatten(value, name))
        return items
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [{"field": path or None, "error": str(item)} for item in detail]
        items = []
        for index, value in enumerate(detail):
            if value:
                items.extend(_flatten(value, f"{path}[{index}]"))
        return items
    return [{"field": path or None, "error": str(detail)}]


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        message = "; ".join(f"{e['field']}: {e['error']}" if e["field"] else e["error"] for e in errors[:5])
        body = {"error": "invalid", "message": message or "invalid input", "errors": errors}
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        body = {"error": code, "message": str(detail)}
    return Response(body, status=response.status_code, headers=dict(response.items()))


def error_response(status_code: int, code: str, message: str, **extra) -> Response:
    return Response({"error": code, "message": message, **extra}, status=status_code)
