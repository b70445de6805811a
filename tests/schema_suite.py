"""The vendored JSON-Schema-Test-Suite (tests/data/json-schema-test-suite), and a reference validator to judge by."""
from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

SUITE = Path(__file__).resolve().parent / "data" / "json-schema-test-suite" / "tests"
DRAFTS = {"draft2020-12": "https://json-schema.org/draft/2020-12/schema",
          "draft7": "http://json-schema.org/draft-07/schema#"}

# The suite's format.json says an invalid format is "only an annotation by default"; extract asserts
# every format (the README promises checked formats), so those cases are expected to come out invalid.
FORMAT_ANNOTATION_CASES = "only an annotation by default"


@dataclass
class Case:
    draft: str
    file: str
    description: str
    schema: Any
    tests: list[dict]

    @property
    def name(self) -> str:
        return f"{self.draft}/{self.file}: {self.description}"


def cases(drafts=tuple(DRAFTS)) -> Iterator[Case]:
    """Every schema of the suite's main directories (not optional/), `$schema` made explicit for draft-07."""
    for draft in drafts:
        for path in sorted((SUITE / draft).glob("*.json")):
            for group in json.loads(path.read_text(encoding="utf-8")):
                schema = group["schema"]
                if isinstance(schema, dict) and "$schema" not in schema:
                    schema = {"$schema": DRAFTS[draft], **schema}
                yield Case(draft, path.name, group["description"], schema, group["tests"])


def format_cases(draft: str = "draft2020-12") -> Iterator[tuple[str, str, Any, bool]]:
    """(format, description, instance, valid) from the suite's optional/format tests."""
    for path in sorted((SUITE / draft / "optional" / "format").glob("*.json")):
        for group in json.loads(path.read_text(encoding="utf-8")):
            fmt = group["schema"].get("format")
            for test in group["tests"]:
                yield fmt, f"{path.name}: {test['description']}", test["data"], test["valid"]


def reference_errors(schema: Any, data: Any) -> list[str]:
    """jsonschema's own validator for the schema's draft, every format checked (the format extras are a
    dependency), references only inside the document, and multipleOf divided exactly, as the
    specification defines it (jsonschema divides floats: -4.01 is no multiple of 0.01 there)."""
    import jsonschema
    from jsonschema_specifications import REGISTRY
    from referencing import Resource
    from referencing.jsonschema import DRAFT202012

    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)

    def multiple_of(validator, divisor, instance, schema):
        if not validator.is_type(instance, "number"):
            return
        exact = lambda v: Fraction(v) if isinstance(v, int) else Fraction(Decimal(repr(v)))  # noqa: E731
        if (exact(instance) / exact(divisor)).denominator != 1:
            yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor!r}")

    cls = jsonschema.validators.extend(base, {"multipleOf": multiple_of})
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry = REGISTRY.with_resource(resource.id() or "", resource)
    validator = cls(schema, registry=registry, format_checker=base.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(data)]
