"""Prompt templates as data: class prompts for zero-shot tagging and captions for training."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vitrine.config_file import ConfigFile
from vitrine.errors import ConfigError

_FORMATTER = string.Formatter()


def template_fields(template: str) -> tuple[str, ...]:
    """The `{field}` names a template uses."""
    return tuple(name for _, name, _, _ in _FORMATTER.parse(template) if name)


def render(template: str, values: Mapping[str, str | None]) -> str | None:
    """Fill a template, or return None when any field it needs is missing."""
    needed = template_fields(template)
    if any(not values.get(name) for name in needed):
        return None
    return template.format(**{name: values[name] for name in needed})


@dataclass(frozen=True)
class PromptSet(ConfigFile):
    """Templates per attribute (for tagging) and caption templates (for training)."""

    config_name = "prompt set"
    builtins = ("vitrine.data", "prompts")

    name: str = "custom"
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    captions: tuple[str, ...] = ()
    default: tuple[str, ...] = ("a photo of a {value}",)

    def __post_init__(self):
        for key, templates in self.attributes.items():
            if not templates:
                raise ConfigError(f"prompt set {self.name!r}: attribute {key!r} has no templates")
            for template in templates:
                if template_fields(template) != ("value",):
                    raise ConfigError(
                        f"attribute template {template!r} for {key!r} must use exactly one field, {{value}}"
                    )

    def class_prompts(self, attribute: str, value: str) -> list[str]:
        """All prompts for one class value, for prompt ensembling."""
        templates = self.attributes.get(attribute, self.default)
        return [template.format(value=value) for template in templates]

    def render_captions(self, values: Mapping[str, str | None]) -> list[str]:
        """Every caption template that the item's attributes can fill."""
        return [text for text in (render(t, values) for t in self.captions) if text]


def builtin_prompts(name: str = "kagl") -> PromptSet:
    return PromptSet.builtin(name)


def resolve_prompts(spec: str | Path | PromptSet | None) -> PromptSet:
    """A prompt set object, a builtin name, or a JSON path; None means the KAGL set."""
    return PromptSet.resolve(spec)
