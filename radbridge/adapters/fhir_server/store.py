"""FHIR stores: a real server over HTTP (httpx) and an in-memory one with the same transaction semantics.

Both implement radbridge.ports.FhirStore (``transact``, ``read``) plus ``search``. The safety property radbridge
relies on is the server's: a conditional create (``ifNoneExist``) that matches returns the existing resource
untouched, so redelivering a draft never duplicates it and never overwrites a report a radiologist has signed.
"""

from __future__ import annotations

import copy
import ssl
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qsl

import httpx
from pydantic import SecretStr

from ...errors import AuthFailed, StoreRejected, StoreUnavailable, VersionConflict
from ...formats.fhir.writer import bundle_bytes
from ...redact import mask_url
from .auth import tls_context

FHIR_JSON = "application/fhir+json"
RETRYABLE_STATUS = frozenset({408, 429})
SearchParams = Mapping[str, str] | Sequence[tuple[str, str]]


class HttpFhirStore:
    """A FHIR R4 server reached over HTTP(S). Every call has a timeout; TLS is verified unless told otherwise."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        token: SecretStr | str | None = None,
        auth: httpx.Auth | None = None,
        verify: bool | ssl.SSLContext = True,
        ca_bundle: str | Path | None = None,
        max_pages: int = 10,
        transport: httpx.BaseTransport | None = None,
    ):
        """``token``: a static bearer token; ``auth``: anything that signs requests (e.g. auth.ClientCredentials);
        ``verify``: a TLS context (auth.tls_context: CA bundle, client certificate) or a bool."""
        self.base_url = base_url.rstrip("/")
        self.max_pages = max_pages
        headers = {"Accept": FHIR_JSON}
        if token is not None:
            secret = token.get_secret_value() if isinstance(token, SecretStr) else token
            headers["Authorization"] = f"Bearer {secret}"
        tls = verify if isinstance(verify, ssl.SSLContext) or ca_bundle is None else tls_context(ca_bundle)
        self._auth = auth
        # The client opens no connection until the first request: constructing a store is side-effect free.
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout), verify=tls, transport=transport, follow_redirects=False,
            auth=auth,
        )

    def __repr__(self) -> str:  # never shows the token
        return f"HttpFhirStore({mask_url(self.base_url)!r})"

    def close(self) -> None:
        self._client.close()
        close = getattr(self._auth, "close", None)
        if close is not None:
            close()

    def check(self) -> None:
        """Reachable, and our credentials accepted: GET ``/metadata`` (the CapabilityStatement)."""
        self._send("GET", f"{self.base_url}/metadata")

    def __enter__(self) -> "HttpFhirStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ FhirStore

    def transact(self, bundle: dict) -> dict:
        """POST a transaction Bundle; return the transaction-response Bundle."""
        response = self._send("POST", self.base_url, content=bundle_bytes(bundle), payload=bundle)
        body = _json(response)
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            # Without a response Bundle we cannot tell whether it was stored; redelivery is idempotent.
            raise StoreUnavailable(f"FHIR server answered HTTP {response.status_code} without a response Bundle")
        return body

    def read(self, resource_type: str, resource_id: str) -> dict | None:
        response = self._send("GET", f"{self.base_url}/{resource_type}/{resource_id}", missing_ok=True)
        if response.status_code in (404, 410):
            return None
        return _json(response)

    def search(self, resource_type: str, params: SearchParams) -> list[dict]:
        """Resources matching ``params`` (search mode ``match``), following ``next`` links up to ``max_pages``."""
        url: str | None = f"{self.base_url}/{resource_type}"
        query: list[tuple[str, str]] | None = list(params.items()) if isinstance(params, Mapping) else list(params)
        found: list[dict] = []
        for _ in range(self.max_pages):
            if url is None:
                break
            body = _json(self._send("GET", url, params=query))
            for entry in body.get("entry", []) or []:
                if (entry.get("search") or {}).get("mode", "match") == "match" and "resource" in entry:
                    found.append(entry["resource"])
            url = next((link.get("url") for link in body.get("link", []) if link.get("relation") == "next"), None)
            query = None  # the next link carries the query
            if url is not None and not url.startswith(self.base_url):
                # A paging link to another host would receive our bearer token: do not follow it.
                raise StoreRejected("FHIR server returned a paging link outside its base URL")
        return found

    # ------------------------------------------------------------ HTTP

    def _send(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        params: list[tuple[str, str]] | None = None,
        payload: dict | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response:
        headers = {"Content-Type": FHIR_JSON} if content is not None else None
        try:
            response = self._client.request(method, url, content=content, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise StoreUnavailable(f"FHIR server timed out on {method} ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"FHIR server unreachable on {method} ({type(exc).__name__})") from None
        status = response.status_code
        if status < 300 or (missing_ok and status in (404, 410)):
            return response
        detail = _diagnostics(response, payload)
        message = f"FHIR server answered HTTP {status} to {method}" + (f": {detail}" if detail else "")
        if status >= 500 or status in RETRYABLE_STATUS:
            raise StoreUnavailable(message)
        if status in (401, 403):  # an expired token or a revoked grant: the operator's outage, not this message's fault
            raise AuthFailed("fhir", f"FHIR server answered HTTP {status} to {method}: credentials refused")
        if status == 412:  # an If-Match (or ifMatch inside a transaction) found a newer version
            raise VersionConflict(message)
        raise StoreRejected(message)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise StoreUnavailable(f"FHIR server answered HTTP {response.status_code} with a body that is not JSON") from None


# Keys whose values are structure, not content: kept in error messages so they stay useful.
_STRUCTURAL_KEYS = frozenset({"resourceType", "method", "url", "status", "type", "mode"})


def _payload_strings(node: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _payload_strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _payload_strings(v, key)
    elif isinstance(node, str) and key not in _STRUCTURAL_KEYS and len(node) >= 3:
        yield node
        yield from (line for line in node.splitlines() if len(line) >= 3)


def _diagnostics(response: httpx.Response, payload: dict | None, limit: int = 3) -> str:
    """The server's OperationOutcome diagnostics, with anything quoted from our payload cut out."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    texts = [str(i.get("diagnostics") or i.get("code") or "") for i in body.get("issue", [])[:limit]]
    secrets = sorted(set(_payload_strings(payload)), key=len, reverse=True) if payload else []
    cleaned = []
    for text in texts:
        for s in secrets:
            if s in text:
                text = text.replace(s, "[redacted]")
        cleaned.append(text[:300])
    return "; ".join(t for t in cleaned if t)


# ---------------------------------------------------------------- in memory


class MemoryFhirStore:
    """In-memory FHIR store for unit tests and ``--dry-run``: transactions are atomic, conditional create honoured,
    a PUT entry's ``ifMatch`` checked against the stored version (``VersionConflict``, nothing written).

    Search understands token parameters ``identifier``, ``_tag``, ``_security``, ``status`` and ``_id``
    (``system|value``, ``|value`` or ``value``); any other parameter raises rather than matching everything.
    """

    def __init__(self) -> None:
        self._resources: dict[tuple[str, str], dict] = {}
        self._next_id = 1
        self.transactions = 0

    # ------------------------------------------------------------ FhirStore

    def transact(self, bundle: dict) -> dict:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise StoreRejected("expected a transaction Bundle")
        entries = copy.deepcopy(bundle.get("entry") or [])
        mapping: dict[str, str] = {}
        plan: list[tuple[str, str, str, dict | None]] = []  # (outcome, type, id, resource to write)
        pending_ids = self._next_id
        for i, entry in enumerate(entries):
            request = entry.get("request") or {}
            method, url = request.get("method"), request.get("url") or ""
            resource = entry.get("resource")
            if method == "POST":
                rtype = url.split("?")[0]
                existing = self._single_match(rtype, request["ifNoneExist"], i) if request.get("ifNoneExist") else None
                if existing is not None:
                    rid, outcome, resource = existing["id"], "200 OK", None
                else:
                    rid, outcome = str(pending_ids), "201 Created"
                    pending_ids += 1
            elif method == "PUT" and url.count("/") == 1 and "?" not in url:
                rtype, rid = url.split("/")
                self._check_version(rtype, rid, request.get("ifMatch"), i)
                outcome = "200 OK" if (rtype, rid) in self._resources else "201 Created"
            else:
                raise StoreRejected(f"entry {i}: unsupported request {method} {url.split('?')[0]}")
            if resource is not None and resource.get("resourceType") != rtype:
                raise StoreRejected(f"entry {i}: resourceType does not match the request URL")
            if entry.get("fullUrl"):
                mapping[entry["fullUrl"]] = f"{rtype}/{rid}"
            plan.append((outcome, rtype, rid, resource))
        for i, (_, _, _, resource) in enumerate(plan):
            if resource is not None:
                for ref in _references(resource):
                    value = ref["reference"]
                    if value in mapping:
                        ref["reference"] = mapping[value]
                    elif value.startswith("urn:uuid:"):
                        raise StoreRejected(f"entry {i}: unresolved reference {value}")
        # Every check passed: apply all writes, or (above) none.
        self._next_id = pending_ids
        self.transactions += 1
        responses = []
        for outcome, rtype, rid, resource in plan:
            if resource is not None:
                self._write(rtype, rid, resource)
            stored = self._resources[(rtype, rid)]
            version = stored["meta"]["versionId"]
            responses.append(
                {"response": {"status": outcome, "location": f"{rtype}/{rid}/_history/{version}", "etag": f'W/"{version}"'}}
            )
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}

    def read(self, resource_type: str, resource_id: str) -> dict | None:
        found = self._resources.get((resource_type, resource_id))
        return copy.deepcopy(found) if found is not None else None

    def search(self, resource_type: str, params: SearchParams) -> list[dict]:
        items = list(params.items()) if isinstance(params, Mapping) else list(params)
        return [copy.deepcopy(r) for r in self._matches(resource_type, items)]

    # ------------------------------------------------------------ test helpers

    def update(self, resource: dict, *, if_match: str | None = None) -> dict:
        """Write a resource as another system would (e.g. a radiologist signing the draft); ``if_match``
        (``W/"<version>"``) makes it version-aware, as a PUT with If-Match."""
        self._check_version(resource["resourceType"], resource["id"], if_match, 0)
        self._write(resource["resourceType"], resource["id"], copy.deepcopy(resource))
        return self.read(resource["resourceType"], resource["id"])  # type: ignore[return-value]

    def all(self, resource_type: str) -> list[dict]:
        return [copy.deepcopy(r) for (t, _), r in sorted(self._resources.items()) if t == resource_type]

    # ------------------------------------------------------------ internals

    def _write(self, rtype: str, rid: str, resource: dict) -> None:
        previous = self._resources.get((rtype, rid))
        version = int(previous["meta"]["versionId"]) + 1 if previous else 1
        resource = dict(resource, id=rid)
        resource["meta"] = {**(resource.get("meta") or {}), "versionId": str(version)}
        self._resources[(rtype, rid)] = resource

    def _check_version(self, rtype: str, rid: str, if_match: str | None, index: int) -> None:
        if if_match is None:
            return
        stored = self._resources.get((rtype, rid))
        current = stored["meta"]["versionId"] if stored else None
        if current is None or if_match not in (f'W/"{current}"', f'"{current}"'):
            raise VersionConflict(f"entry {index}: version conflict: If-Match {if_match} but current is {current}")

    def _single_match(self, rtype: str, query: str, index: int) -> dict | None:
        matches = self._matches(rtype, parse_qsl(query, keep_blank_values=True))
        if len(matches) > 1:
            raise StoreRejected(f"entry {index}: conditional create matched {len(matches)} resources")
        return matches[0] if matches else None

    def _matches(self, rtype: str, params: Iterable[tuple[str, str]]) -> list[dict]:
        params = list(params)
        for name, _ in params:
            if name not in _TOKEN_PATHS:
                raise ValueError(f"MemoryFhirStore cannot search on {name!r}")
        return [
            r
            for (t, _), r in sorted(self._resources.items())
            if t == rtype and all(_token_match(_TOKEN_PATHS[n](r), v) for n, v in params)
        ]


def _codings(resource: dict, *path: str) -> list[dict]:
    node: Any = resource
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return list(node or [])


_TOKEN_PATHS = {
    "identifier": lambda r: [{"system": i.get("system"), "code": i.get("value")} for i in r.get("identifier", [])],
    "_tag": lambda r: _codings(r, "meta", "tag"),
    "_security": lambda r: _codings(r, "meta", "security"),
    "status": lambda r: [{"code": r.get("status")}],
    "_id": lambda r: [{"code": r.get("id")}],
}


def _token_match(candidates: list[dict], value: str) -> bool:
    """FHIR token search: ``system|code``, ``|code`` (no system) or ``code``; comma means OR."""
    for alternative in value.split(","):
        if "|" in alternative:
            system, code = alternative.split("|", 1)
            if any((c.get("system") or "") == system and c.get("code") == code for c in candidates):
                return True
        elif any(c.get("code") == alternative for c in candidates):
            return True
    return False


def _references(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for v in node.values():
            yield from _references(v)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v)

