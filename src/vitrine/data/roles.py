"""What a catalog's columns mean (type, colour, gender, brand, ...), read from their names: the templates for captions,
class prompts and shopper-like queries of any catalog are built from these roles, never from KAGL's column names."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

from vitrine.data.prompts import PromptSet, render, resolve_prompts, template_fields
from vitrine.data.schema import CatalogSchema


@lru_cache(maxsize=1)
def _roles_file() -> dict:
    return json.loads(resources.files("vitrine.data").joinpath("prompts", "roles.json").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def column_roles(schema: CatalogSchema) -> dict[str, str]:
    """{role: column} for the schema's categorical columns whose names say a role (first column wins a role)."""
    roles: dict[str, str] = {}
    spec = _roles_file()["roles"]
    for column in schema.facet_fields:
        for role, entry in spec.items():
            if _norm(column) in entry["names"] and role not in roles:
                roles[role] = column
                break
    return roles


def _by_role(template: str, roles: Mapping[str, str]) -> str | None:
    """A role template ('{colour} {type}') rewritten over column names ('{baseColour} {articleType}'), or None."""
    needed = template_fields(template)
    if any(role not in roles for role in needed):
        return None
    return template.format(**{role: "{" + roles[role] + "}" for role in needed})


def caption_templates(schema: CatalogSchema) -> tuple[str, ...]:
    """Training captions for the schema's columns: the role templates it can fill, plus one per other facet."""
    roles = column_roles(schema)
    out = [t for t in (_by_role(t, roles) for t in _roles_file()["captions"]) if t]
    claimed = set(roles.values())
    out += [f"a product with {column} {{{column}}}" for column in schema.facet_fields if column not in claimed]
    return tuple(dict.fromkeys(out))


def query_templates(schema: CatalogSchema) -> tuple[str, ...]:
    """Shopper-like query templates over the schema's columns ('{colour} {type} for {gender}' and the like)."""
    roles = column_roles(schema)
    return tuple(dict.fromkeys(t for t in (_by_role(t, roles) for t in _roles_file()["shopper_queries"]) if t))


def shopper_queries(schema: CatalogSchema, attributes: Mapping[str, str | None]) -> list[str]:
    """The shopper-like queries one product answers (lower-cased, as a shopper types them)."""
    return [text.lower() for text in (render(t, attributes) for t in query_templates(schema)) if text]


def prompts_for_schema(schema: CatalogSchema) -> PromptSet:
    """Class prompts per facet (by its role, or generic) and caption templates: the prompt set of any catalog."""
    spec = _roles_file()
    roles = column_roles(schema)
    role_of = {column: role for role, column in roles.items()}
    attributes = {}
    for column in schema.facet_fields:
        role = role_of.get(column)
        templates = (
            spec["roles"][role]["prompts"] if role else [t.replace("{field}", column) for t in spec["other_prompts"]]
        )
        attributes[column] = tuple(templates)
    return PromptSet(
        name=f"roles:{schema.name}",
        attributes=attributes,
        captions=caption_templates(schema),
        default=("a photo of a {value}", "a product photo of a {value}"),
    )


def prompts_for(spec: str | PromptSet | None, schema: CatalogSchema) -> PromptSet:
    """A source's prompt set: the one named, or for 'auto' (None) KAGL's for a kagl catalog and the schema's roles'
    otherwise."""
    if spec is None or spec == "auto":
        return resolve_prompts("kagl") if schema.name == "kagl" else prompts_for_schema(schema)
    return resolve_prompts(spec)
