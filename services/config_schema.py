"""The run config as a JSON Schema, for editors that complete and check YAML files
(`troupe schema`; `configs/schema.json` is it, kept current by a test).

Built by pydantic from the config dataclasses (types, enums, defaults), with each field's
docstring as its description, unknown keys refused, and the upper bounds of
`config_limits.LIMITS`. The dataclasses' own validation stays the authority (lower bounds
and cross-field rules live there); the schema is what an editor can check as you type."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
import typing
from typing import Any

from services.config import RunConfig
from services.config_limits import LIMITS


def run_config_schema() -> dict[str, Any]:
    from pydantic import TypeAdapter  # installed with ray[default]; only this command needs it

    schema = TypeAdapter(RunConfig).json_schema()
    definitions = schema.get("$defs", {})
    for cls in _dataclasses(RunConfig):
        node = schema if cls is RunConfig else definitions[cls.__name__]
        node["additionalProperties"] = False
        for name, text in _field_docs(cls).items():
            node["properties"][name]["description"] = text
    for dotted, limit in LIMITS.items():
        *path, field = dotted.split(".")
        node = schema
        for part in path:
            node = definitions[_ref(node["properties"][part])]
        prop = node["properties"][field]
        target = prop.get("items", prop) if prop.get("type") == "array" else prop
        target["maximum"] = limit
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(run_config_schema(), indent=2, sort_keys=False) + "\n"


def _ref(prop: dict[str, Any]) -> str:
    ref = prop.get("$ref") or next(p["$ref"] for p in prop.get("allOf", []) if "$ref" in p)
    return ref.rsplit("/", 1)[1]


def _dataclasses(cls: type) -> list[type]:
    """`cls` and the dataclasses its fields hold, at any depth."""
    found, hints = [cls], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += _dataclasses(hints[f.name])
    return found


def _field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right after it in the class body)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for field, after in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs
