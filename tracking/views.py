"""Pages and files served to visitors' browsers: the JS snippet and the demo storefront."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import rjsmin
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import render
from django.urls import reverse

from tracking.models import Source

SNIPPET_PATH = Path(__file__).resolve().parent / "static" / "tracking" / "pz.js"


@lru_cache(maxsize=1)
def snippet() -> tuple[str, bytes]:
    """The minified snippet and its content version (changes whenever the script does)."""
    code = rjsmin.jsmin(SNIPPET_PATH.read_text()).encode()
    return hashlib.sha256(code).hexdigest()[:12], code


def snippet_url(request: HttpRequest | None = None) -> str:
    path = reverse("snippet-versioned", kwargs={"version": snippet()[0]})
    base = settings.PUBLIC_URL.rstrip("/") or (request.build_absolute_uri("/").rstrip("/") if request else "")
    return base + path


def embed_code(source: Source, *, host: str) -> str:
    """The tag a site owner pastes into their pages: a tiny queue stub that loads pz.js async."""
    script = f"{host.rstrip('/')}{reverse('snippet-versioned', kwargs={'version': snippet()[0]})}"
    return (
        "<script>\n"
        "!function(w,d){w.pz=w.pz||function(){(w.pz.q=w.pz.q||[]).push(arguments)};"
        f"var s=d.createElement('script');s.async=1;s.src='{script}';"
        "d.head.appendChild(s)}(window,document);\n"
        f"pz('init','{source.write_key}',{{host:'{host.rstrip('/')}',cookieDays:{source.cookie_days}}});\n"
        "pz('page');\n"
        "</script>"
    )


def _js(code: bytes, cache_control: str) -> HttpResponse:
    response = HttpResponse(code, content_type="application/javascript; charset=utf-8")
    response["Cache-Control"] = cache_control
    response["Access-Control-Allow-Origin"] = "*"
    return response


def snippet_latest(request: HttpRequest) -> HttpResponse:
    # The unversioned URL is for quick tries; embed codes use the versioned one.
    return _js(snippet()[1], "public, max-age=300")


def snippet_versioned(request: HttpRequest, version: str) -> HttpResponse:
    current, code = snippet()
    if version != current:
        # Pages embedding an older version get the current one rather than a broken script.
        return HttpResponsePermanentRedirect(reverse("snippet-versioned", kwargs={"version": current}))
    return _js(code, "public, max-age=31536000, immutable")


def demo_store(request: HttpRequest) -> HttpResponse:
    """A small storefront that embeds the snippet, to click around and watch events arrive."""
    from tracking.demo import catalogue

    source = Source.objects.filter(name=request.GET.get("source", "Demo storefront"), is_active=True).first()
    if source is None:
        raise Http404("no demo source: run `python manage.py seed_demo` first")
    host = request.build_absolute_uri("/").rstrip("/")
    context = {"source": source, "host": host, "embed_code": embed_code(source, host=host), "products": catalogue()}
    return render(request, "demo/store.html", context)
