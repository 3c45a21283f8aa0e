"""Authentication by API key: public write keys and secret keys of a source."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from tracking.keys import SECRET_KEY_PREFIX
from tracking.models import Source
from tracking.selectors import secret_key_lookup, source_by_write_key


@dataclass(frozen=True, slots=True)
class Credential:
    """Who is calling: a source, and whether with a secret (server-side) key."""

    source: Source
    secret: bool
    key_id: int | None = None


def basic_user(request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:6].lower() != "basic ":
        return ""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise exceptions.AuthenticationFailed("Authorization: Basic value is not valid base64") from None
    return decoded.partition(":")[0]


def origin_check(request, source: Source) -> None:
    """Browsers name their page's origin; it must be one the source allows. Servers send none."""
    origin = request.META.get("HTTP_ORIGIN", "")
    if not origin:
        return
    if not source.origin_allowed(origin):
        raise exceptions.PermissionDenied(f"origin {origin} is not allowed for source {source.name!r}")
    django_request = getattr(request, "_request", request)
    django_request.pz_cors_origin = origin


def write_key_from(request) -> str:
    return (
        request.META.get("HTTP_X_WRITE_KEY")
        or basic_user(request)
        or request.GET.get("k")
        or request.GET.get("writeKey")
        or ""
    ).strip()


class WriteKeyAuthentication(BaseAuthentication):
    """Public write key, in `X-Write-Key`, as the HTTP Basic user (Segment SDKs) or in `?k=`."""

    def authenticate(self, request):
        key = write_key_from(request)
        if not key or key.startswith(SECRET_KEY_PREFIX):
            return None
        source = source_by_write_key(key)
        if source is None:
            raise exceptions.AuthenticationFailed("unknown or inactive write key")
        origin_check(request, source)
        return None, Credential(source=source, secret=False)

    def authenticate_header(self, request) -> str:
        return 'Basic realm="write key"'


class SecretKeyAuthentication(BaseAuthentication):
    """Secret key of a source: `Authorization: Bearer <secret>` (or as the HTTP Basic user)."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header[:7].lower() == "bearer ":
            plaintext = header[7:].strip()
        else:
            plaintext = basic_user(request)
            if not plaintext.startswith(SECRET_KEY_PREFIX):
                return None
        key = secret_key_lookup(plaintext)
        if key is None:
            raise exceptions.AuthenticationFailed("unknown or revoked secret key")
        return None, Credential(source=key.source, secret=True, key_id=key.pk)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="secret key"'


class HasSecretKey(BasePermission):
    message = "this endpoint needs a secret key (Authorization: Bearer <secret>)"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Credential) and request.auth.secret


class HasSourceKey(BasePermission):
    message = "a write key (X-Write-Key or HTTP Basic user) or a secret key is required"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Credential)


class WriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "personalization.api.auth.WriteKeyAuthentication"
    name = "writeKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Write-Key",
            "description": "Public write key of a source (also accepted as the HTTP Basic user).",
        }


class SecretKeyScheme(OpenApiAuthenticationExtension):
    target_class = "personalization.api.auth.SecretKeyAuthentication"
    name = "secretKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Secret key of a source."}
