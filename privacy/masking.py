"""Masks personal data in event payloads (emails, phones, card numbers, IP addresses, denylisted names) before storage.

Pure Python, no Django: ingestion calls `mask_event` on every stored event, so the cheap checks come first and the
expensive phone matcher only runs on text that has a phone-shaped run of digits.

Decisions worth knowing when reading a masked payload:
- A bare dotted quad in a property (`"131.0.0.0"`) is masked as an IP: nothing tells it apart from an address. A
  product/version token (`"Chrome/131.0.0.0"`, `"v1.2.3.4"`) is kept, like the user agent, which is never scanned.
- Card numbers must pass Luhn and start with 2-9: no network issues numbers starting with 0, and 1 is only the
  airlines' UATP, whereas every millisecond timestamp until 2033 starts with 1.
- With a `default_region`, a bare run of digits that is a valid national number is masked (a phone typed into a form
  looks exactly like that), unless it is glued to an identifier (`ord-0612345678`, `A0612345678`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

EMAIL = "[email]"
PHONE = "[phone]"
CARD = "[card]"
IP = "[ip]"
REDACTED = "[redacted]"

# Context parts that carry free text typed or pasted by someone; the rest (userAgent, library, locale, ip, screen,
# consent, ...) is machine-generated, and scanning it would only produce false positives (version numbers).
PAGE_TEXT_FIELDS = frozenset({"url", "path", "referrer", "search", "title"})

# Every detector needs a digit or an '@' (an IPv6 address without a decimal digit, "abcd::ef", is not taken for one).
_has_trigger = re.compile(r"[\d@]").search

# Local part, '@' or its percent-encoding, domain with a letter TLD. The local part may not start in the middle of a
# word, except right after a percent-escape (`foo%20ann@x.com` masks `ann@x.com`, not `20ann@x.com`).
_EMAIL_RE = re.compile(
    r"(?:(?<=%[0-9A-Fa-f]{2})|(?<![\w.+%-]))"
    r"(?:[\w+-]|%2[Bb])(?:[\w.+-]|%2[Bb])*"
    r"(?:@|%40)"
    r"(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])"
)

# Digit groups separated by single spaces or dashes, at least 13 digits, not glued to a word, a sign, a decimal part,
# an identifier prefix (`sku-...`) or suffix (`...-8cff`: a UUID whose first three groups are all digits).
_CARD_RE = re.compile(r"(?<![\w+.,-])(?=(?:\d[ -]?){12}\d)\d+(?:[ -]\d+)*(?!\w|[.,]\d|-[^\W_])")
# ... and one whose groups are all digits, written in the UUID layout.
_UUID_DIGITS = re.compile(r"\d{8}-\d{4}-\d{4}-\d{4}-\d{12}").fullmatch
_DIGIT_GROUP_RE = re.compile(r"\d+")
_NON_DIGITS_RE = re.compile(r"\D+")

# Starting with a digit rather than the lookbehind lets the regex engine skip ahead to digits.
_IPV4_RE = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\d)")
# A `Name/` right before a dotted quad makes it a product version (`Chrome/131.0.0.0`), unlike a URL path segment
# (`/lookup/10.0.0.1`) or host (`http://10.0.0.1`).
_PRODUCT_TOKEN_RE = re.compile(r"(?:^|[\s(;,])[A-Za-z][\w.+-]{0,40}/\Z")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\w)"
)

# Runs of at least 7 digits in phone notation, dates and Unix timestamps (seconds or milliseconds, 2001-2033)
# excluded. Only a gate: the matcher costs tens of microseconds, and dates and timestamps are the most common digit
# runs in event properties.
_DATE = r"\d{4}-\d\d-\d\d(?!\d)|\d\d?[./-]\d\d?[./-](?:\d{4}|\d\d)(?![./-]?\d)|1\d{9}(?:\d{3})?(?!\d)"
_NATIONAL_HINT_RE = re.compile(rf"(?<![\w-])(?!{_DATE})\(?\d(?:[\s().\-/]{{0,3}}\d){{6,}}")
_INTERNATIONAL_HINT_RE = re.compile(r"\+[\s(]{0,3}\d(?:[\s().\-/]{0,3}\d){6,}")

_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_CARD_MIN = 2 * 10**12
_CARD_MAX = 10**19


@dataclass(frozen=True, slots=True)
class MaskingPolicy:
    """What to mask for one source: names whose whole value is dropped, and whose national phone format to know."""

    denylist: frozenset[str] = frozenset()
    default_region: str | None = None

    def __post_init__(self) -> None:
        # Names come from an admin JSON field, as typed; the comparison with payload keys ignores case.
        object.__setattr__(self, "denylist", frozenset(name.casefold() for name in self.denylist))
        region = (self.default_region or "").upper() or None
        if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
            # Silently matching no national number would leak every phone of the source.
            raise ValueError(f"unknown phone region {self.default_region!r}")
        object.__setattr__(self, "default_region", region)


def mask_value(value: object, policy: MaskingPolicy) -> tuple[object, int]:
    """A masked copy of a JSON value (dict/list/str/number/bool/None) and how many things were masked."""
    masker = _Masker(policy.denylist, policy.default_region)
    masked = masker.value(value)
    return masked, masker.count


def mask_event(*, properties: dict, traits: dict, context: dict, policy: MaskingPolicy) -> tuple[dict, dict, dict, int]:
    """Masked copies of an event's free-form parts. Properties and traits are scanned fully; of the context only
    the parts that carry free text (page: url, path, referrer, search, title; campaign: all values; traits) -
    never userAgent, library, locale, timezone, ip (the ingest path truncates ip itself), screen, etc."""
    masker = _Masker(policy.denylist, policy.default_region)
    # The denylist names properties and traits; a campaign or page field that happens to share a name ("name",
    # "title") is still scanned but kept.
    text_masker = _Masker(frozenset(), policy.default_region)
    masked_properties = masker.value(properties)
    masked_traits = masker.value(traits)
    masked_context = {}
    for key, part in context.items():
        if key == "traits":
            masked_context[key] = masker.value(part)
        elif key == "campaign":
            masked_context[key] = text_masker.value(part)
        elif key == "page" and isinstance(part, dict):
            masked_context[key] = {
                name: text_masker.value(field) if name in PAGE_TEXT_FIELDS else _copy(field)
                for name, field in part.items()
            }
        else:
            masked_context[key] = _copy(part)
    return masked_properties, masked_traits, masked_context, masker.count + text_masker.count


class _Masker:
    __slots__ = ("count", "denylist", "region")

    def __init__(self, denylist: frozenset[str], region: str | None) -> None:
        self.count = 0
        self.denylist = denylist
        self.region = region

    def value(self, value: object) -> object:
        kind = type(value)
        if kind is str:
            # Most strings hold neither a digit nor an '@': answer those without another call.
            return self.text(value) if _has_trigger(value) else value
        if kind is dict:
            return self.mapping(value)
        if kind is list:
            return [self.value(item) for item in value]
        if kind is int or kind is float:
            return self.number(value) if value >= _CARD_MIN else value
        if value is None or kind is bool:
            return value
        # Subclasses (a str enum, an OrderedDict) are rare enough to pay for isinstance.
        if isinstance(value, str):
            return self.text(str(value)) if _has_trigger(value) else str(value)
        if isinstance(value, dict):
            return self.mapping(value)
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.number(value)
        return value

    def mapping(self, mapping: dict) -> dict:
        denylist = self.denylist
        if not denylist:
            return {key: self.value(item) for key, item in mapping.items()}
        masked = {}
        for key, item in mapping.items():
            if isinstance(key, str) and key.casefold() in denylist:
                # Counted only when something is actually dropped, so masking a masked payload counts nothing.
                if not (isinstance(item, str) and item == REDACTED):
                    self.count += 1
                masked[key] = REDACTED
            else:
                masked[key] = self.value(item)
        return masked

    def number(self, number: int | float) -> object:
        integer = number
        if isinstance(number, float):
            if not number.is_integer():  # also False for nan and infinities
                return number
            integer = int(number)
        if _CARD_MIN <= integer < _CARD_MAX and _is_card(str(integer)):
            self.count += 1
            return CARD
        return number

    def text(self, text: str) -> str:
        # One detector's placeholder can give another a word boundary it lacked (`a@b.co1.2.3.4`), so repeat until
        # nothing changes; each replacement removes digits or an '@', which placeholders never contain, so this ends.
        while True:
            text, found = _mask_text_once(text, self.region)
            if not found:
                return text
            self.count += found


def _mask_text_once(text: str, region: str | None) -> tuple[str, int]:
    # Order matters: an email's local part may hold a phone, and an IP address parses as a (national) phone.
    found = 0
    if "@" in text or "%40" in text:
        text, count = _EMAIL_RE.subn(EMAIL, text)
        found += count
    digits = len(_NON_DIGITS_RE.sub("", text))
    if digits >= 13:
        text, count = _replace(_CARD_RE, text, _card_in)
        found += count
    if digits and text.count(":") >= 2:  # before IPv4, which would cut "::ffff:192.0.2.1" in two
        text, count = _replace(_IPV6_RE, text, _ipv6_in)
        found += count
    if digits >= 4 and "." in text:
        text, count = _replace(_IPV4_RE, text, _ipv4_in)
        found += count
    if digits >= 7:
        text, count = _mask_phones(text, region)
        found += count
    return text, found


def _replace(pattern: re.Pattern[str], text: str, masked) -> tuple[str, int]:
    """`text` with each match that `masked(text, match)` answers as (replacement, things masked) replaced."""
    parts = []
    position = 0
    found = 0
    for match in pattern.finditer(text):
        answer = masked(text, match)
        if answer is not None:
            parts.append(text[position : match.start()])
            parts.append(answer[0])
            position = match.end()
            found += answer[1]
    if not parts:
        return text, 0
    parts.append(text[position:])
    return "".join(parts), found


def _card_in(text: str, match: re.Match[str]) -> tuple[str, int] | None:
    run = match.group()
    if _UUID_DIGITS(run):
        return None
    groups = _DIGIT_GROUP_RE.findall(run)
    if 13 <= sum(map(len, groups)) <= 19 and _is_card("".join(groups)):
        return CARD, 1
    if len(groups) == 1:
        return None
    # A card written in groups can run into neighbouring numbers ("4111 1111 1111 1111 2 items", or a pasted list
    # of cards): mask every window of whole groups that is written like a card, left to right.
    spans = [group.span() for group in _DIGIT_GROUP_RE.finditer(run)]
    parts = []
    position = 0
    first = 0
    while first < len(groups):
        last = _card_window(groups, first)
        if last is None:
            first += 1
            continue
        parts.append(run[position : spans[first][0]])
        parts.append(CARD)
        position = spans[last][1]
        first = last + 1
    if not parts:
        return None
    parts.append(run[position:])
    return "".join(parts), len(parts) // 2


def _card_window(groups: list[str], first: int) -> int | None:
    """The last group of a card starting at `first`: groups of 4 or more digits, the last one may be shorter."""
    digits = 0
    for last in range(first, len(groups)):
        digits += len(groups[last])
        if digits > 19:
            return None
        if digits >= 13 and _is_card("".join(groups[first : last + 1])):
            return last
        if len(groups[last]) < 4:
            return None
    return None


def _is_card(digits: str) -> bool:
    if digits[0] in "01":
        return False
    total = sum(int(digit) for digit in digits[-1::-2])
    total += sum(_LUHN_DOUBLED[int(digit)] for digit in digits[-2::-2])
    return total % 10 == 0


def _ipv4_in(text: str, match: re.Match[str]) -> tuple[str, int] | None:
    start = match.start()
    if start and text[start - 1] == "/" and _PRODUCT_TOKEN_RE.search(text, max(0, start - 48), start):
        return None
    try:
        ipaddress.IPv4Address(match.group())
    except ValueError:
        return None
    return IP, 1


def _ipv6_in(text: str, match: re.Match[str]) -> tuple[str, int] | None:
    candidate = match.group()
    if not any(char.isdigit() for char in candidate):
        return None  # "a::b", "::" are code or punctuation far more often than addresses
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    return IP, 1


def _mask_phones(text: str, region: str | None) -> tuple[str, int]:
    view = _phone_view(text) if "%" in text else text
    hint = _NATIONAL_HINT_RE if region else _INTERNATIONAL_HINT_RE
    if (region is None and "+" not in view) or not hint.search(view):
        return text, 0
    parts = []
    position = 0
    for match in PhoneNumberMatcher(view, region, leniency=Leniency.VALID):
        if _glued_to_identifier(view, match.start, match.end):
            continue
        parts.append(text[position : match.start])
        parts.append(PHONE)
        position = match.end
    if not parts:
        return text, 0
    parts.append(text[position:])
    return "".join(parts), len(parts) // 2


def _phone_view(text: str) -> str:
    # Percent-encoded phones in URLs ("phone=%2B44%2020%207946%200958") decoded to the same length, so that the
    # matcher's offsets are the original string's.
    for escape, same_length in (("%2B", "+  "), ("%2b", "+  "), ("%20", "   ")):
        text = text.replace(escape, same_length)
    return text


def _glued_to_identifier(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if before.isalnum() or before == "_" or after.isalnum() or after == "_":
        return True
    if before == "-" and start >= 2 and text[start - 2].isalnum():
        return True
    return after == "-" and end + 1 < len(text) and text[end + 1].isalnum()


def _copy(value: object) -> object:
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    return value


def phone_region(code: str | None) -> str | None:
    """A configured country code if phone numbers can be parsed for it, else None (international only)."""
    code = (code or "").strip().upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


def phone_e164(value: str, region: str | None) -> str | None:
    """A phone number in E.164 (+33612345678), so that one number written two ways is one identifier;
    None when it is not a valid number (national formats need the region)."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
