"""CORS for browser calls to the collection and public API, driven by each source's allowed origins.

A preflight carries no key, so it is answered for any origin; the real request is then checked
against its source's origins (403 otherwise) and only an allowed origin gets
`Access-Control-Allow-Origin` back.
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
        if allowed:
            response["Access-Control-Allow-Origin"] = allowed
            response["Vary"] = "Origin"
        return response
