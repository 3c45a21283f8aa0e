"""CORS for browser calls to the collection and public API, driven by each source's allowed origins.

A preflight carries no key, so it is answered for any origin; the real request is then checked
against its source's origins (403 otherwise). Successful answers carry `Access-Control-Allow-Origin`
only for an allowed origin; error answers (4xx) carry it for any origin, so that a browser script
can read why it was refused (unknown key, origin not allowed) instead of seeing a network failure
and retrying forever. No credentials are ever allowed, so nothing else becomes readable.
"""

from django.http import HttpResponse

API_PREFIXES = ("/api/v1/", "/v1/", "/p.gif")
ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization, X-Write-Key"


class CorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        origin = request.META.get("HTTP_ORIGIN")
        if not origin or not request.path.startswith(API_PREFIXES):
            return self.get_response(request)
        if request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in request.META:
            response = HttpResponse(status=204)
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response["Access-Control-Max-Age"] = "86400"
            response["Vary"] = "Origin"
            return response
        response = self.get_response(request)
        allowed = getattr(request, "pz_cors_origin", None)
        if not allowed and 400 <= response.status_code < 500:
            allowed = origin
        if allowed:
            response["Access-Control-Allow-Origin"] = allowed
            response["Vary"] = "Origin"
        return response
