"""Reading JSON request bodies: size limits, gzip/deflate, and errors that say where parsing failed."""

from __future__ import annotations

import json
import zlib

from personalization.api.errors import BadRequest, PayloadTooLarge


def _inflate(data: bytes, *, wbits: int, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(f"body could not be decompressed: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body is over the limit of {max_bytes} bytes")
    return out


def read_body(request, *, max_bytes: int) -> bytes:
    """The raw, decompressed body of a Django request, within `max_bytes`."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"body is {length} bytes, over the limit of {max_bytes}")
    data = request.body
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"body is {len(data)} bytes, over the limit of {max_bytes}")
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding == "gzip":
        data = _inflate(data, wbits=16 + zlib.MAX_WBITS, max_bytes=max_bytes)
    elif encoding == "deflate":
        data = _inflate(data, wbits=zlib.MAX_WBITS, max_bytes=max_bytes)
    elif encoding not in ("", "identity"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported (use gzip or deflate)")
    return data


def read_json(request, *, max_bytes: int):
    data = read_body(request, max_bytes=max_bytes)
    if not data.strip():
        raise BadRequest("body is empty; send a JSON object")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_non_finite, parse_float=_finite_float)
    except _NotFinite as exc:
        raise BadRequest(f"body has a number JSON cannot carry: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise BadRequest(f"body has a number out of range: {str(exc)[:120]}") from None


class _NotFinite(ValueError):
    pass


def _non_finite(literal: str):
    raise _NotFinite(literal)


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise _NotFinite(literal[:40])
    return value
