"""TGI's published OpenAPI spec as a JSON-Schema validator, so clients and our server can be held to it.

The spec (``../shared/reference/tgi-openapi.json`` beside the repository) is OpenAPI 3.0, which marks optional
values with ``nullable: true``; JSON Schema has no such keyword, so each nullable schema is rewritten as
``anyOf: [schema, {"type": "null"}]`` before validation. Everything else is used as published.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

DEFAULT_SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "tgi-openapi.json"


class ContractViolation(ValueError):
    """A request or response does not match TGI's OpenAPI schema."""


def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


class TgiContract:
    """Validates JSON bodies against the spec's component schemas, by component name or by route."""

    def __init__(self, spec_path: Path | str | None = None):
        path = Path(spec_path) if spec_path else DEFAULT_SPEC
        self.spec: dict = json.loads(path.read_text(encoding="utf-8"))
        self.version: str = self.spec.get("info", {}).get("version", "")
        self._schemas = {"components": {"schemas": _json_schema(self.spec["components"]["schemas"])}}
        self._validators: dict[str, Draft202012Validator] = {}

    @property
    def components(self) -> list[str]:
        return sorted(self._schemas["components"]["schemas"])

    def _validator(self, component: str) -> Draft202012Validator:
        if component not in self._validators:
            if component not in self._schemas["components"]["schemas"]:
                raise KeyError(f"no component schema {component!r} in the TGI spec")
            root = copy.copy(self._schemas)
            root["$ref"] = f"#/components/schemas/{component}"
            self._validators[component] = Draft202012Validator(root)
        return self._validators[component]

    def errors(self, component: str, instance: Any) -> list[str]:
        """Human-readable violations (empty when valid), each prefixed with the JSON path."""
        out = []
        for err in sorted(self._validator(component).iter_errors(instance), key=lambda e: list(e.absolute_path)):
            # anyOf (from nullable) hides the real reason one level down; best_match digs it out
            err = best_match([err]) or err
            out.append(f"{component}{''.join(f'[{p!r}]' for p in err.absolute_path)}: {err.message}")
        return out

    def validate(self, component: str, instance: Any) -> None:
        problems = self.errors(component, instance)
        if problems:
            raise ContractViolation("; ".join(problems))

    def _operation(self, method: str, path: str) -> dict:
        try:
            return self.spec["paths"][path][method.lower()]
        except KeyError:
            raise KeyError(f"{method.upper()} {path} is not in the TGI spec") from None

    def request_component(self, method: str, path: str) -> str | None:
        content = self._operation(method, path).get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema", {})
        return _ref_name(schema)

    def response_component(self, method: str, path: str, status: int, media_type: str = "application/json") -> str | None:
        responses = self._operation(method, path).get("responses", {})
        if str(status) not in responses:
            raise ContractViolation(f"{method.upper()} {path}: status {status} is not a documented response")
        schema = responses[str(status)].get("content", {}).get(media_type, {}).get("schema", {})
        return _ref_name(schema)

    def validate_request(self, method: str, path: str, body: Any) -> None:
        component = self.request_component(method, path)
        if component:
            self.validate(component, body)

    def validate_response(self, method: str, path: str, status: int, body: Any, media_type: str = "application/json") -> None:
        """Checks the status is documented for the route and the body matches that status's schema."""
        component = self.response_component(method, path, status, media_type)
        if component:
            self.validate(component, body)


def _ref_name(schema: dict) -> str | None:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else None


@functools.lru_cache(maxsize=4)
def load_contract(spec_path: str | None = None) -> TgiContract:
    return TgiContract(spec_path)
