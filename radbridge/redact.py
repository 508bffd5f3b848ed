"""What may be printed: credentials in URLs masked; sender-controlled codes and ids only when standard-shaped."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry credentials in the wild (OAuth, signed URLs, API gateways).
_SECRET_PARAM = re.compile(r"token|key|secret|password|passwd|pwd|sig|signature|credential|auth|code", re.IGNORECASE)


def mask_url(url: str | None) -> str | None:
    """``url`` with any ``user:password@`` and credential-like query values replaced by ``***``.

    A string that does not parse as a URL is returned with anything that looks like ``user:pass@`` masked.
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


def mask_urls_in(text: str) -> str:
    """``text`` with every URL in it masked (library error messages quote the URL they called)."""
    return _URL.sub(lambda m: mask_url(m.group()) or "", text)


# Sender-controlled values (names, displays, JSON keys, code values) never come back out in errors, skip details,
# dead-letter headers or logs: a sender can put a patient's name anywhere. What may be printed is a value whose
# shape is that of a standard code or id (a name never has this shape once it holds a space, comma or caret).
NON_STANDARD_CODE = "<non-standard code>"
NON_STANDARD_ID = "<non-standard id>"
_CODE = re.compile(r"[A-Za-z0-9.\-]{1,20}")
_ID = re.compile(r"[A-Za-z0-9.\-_:]{1,64}")


def safe_code(value: str | None) -> str:
    """``value`` when it is shaped like a standard code (letters, digits, ``.`` and ``-``, at most 20), else a
    placeholder. Use it only where a code is expected; free text (names, displays) is never printed at all."""
    value = (value or "").strip()
    return value if _CODE.fullmatch(value) else NON_STANDARD_CODE


def safe_id(value: str | None) -> str:
    """A message control id or resource id for logs and headers: as sent when id-shaped (at most 64 letters,
    digits, ``.-_:``), else a placeholder, so an operator can still correlate the usual ids."""
    value = (value or "").strip()
    return value if _ID.fullmatch(value) else NON_STANDARD_ID
