"""Masking of credentials inside URLs, wherever a URL is printed or logged (settings, check, retries, errors)."""

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
