"""Every config, schema and settings class reads through `vitrine.config_file.ConfigFile`, and refuses an unknown key
and a value of the wrong type the same way: a ConfigError that names the config and the key."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from tests.support.modules import import_every_module

import vitrine
from vitrine.config_file import ConfigFile
from vitrine.errors import ConfigError

SOURCE = Path(vitrine.__file__).parent


def config_classes() -> list[type]:
    import_every_module()
    found, todo = [], list(ConfigFile.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


CLASSES = config_classes()


def test_the_configs_users_write_are_all_config_files():
    names = {cls.__name__ for cls in CLASSES}
    expected = {"TrainConfig", "CirTrainConfig", "RegionTrainConfig", "DualConfig", "CNNConfig", "PromptSet",
                "CatalogSchema", "ServeSettings", "IndexOptions", "ImageTransform", "SplitConfig"}
    assert expected <= names, f"not read through ConfigFile: {sorted(expected - names)}"


def test_no_other_class_reads_a_dict_of_its_own():
    """A `from_dict` outside ConfigFile would be a second way to read a config."""
    config_names = {cls.__name__ for cls in CLASSES}
    own = [
        f"{path.relative_to(SOURCE)}:{node.name}"
        for path in SOURCE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.name not in config_names and node.name != "ConfigFile"
        and any(isinstance(f, ast.FunctionDef) and f.name == "from_dict" for f in node.body)
    ]
    assert not own, own


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_an_unknown_key_is_refused_by_name(cls):
    with pytest.raises(ConfigError, match=r"unknown keys \['no_such_key'\]"):
        cls.from_dict({"no_such_key": 1})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_a_wrong_type_is_refused_by_field(cls):
    fields = [f for f in dataclasses.fields(cls) if f.type in ("int", "bool", "str", "float")]
    if not fields:
        pytest.skip(f"{cls.__name__} has no plain int, bool, str or float field")
    with pytest.raises(ConfigError, match=f"field '{fields[0].name}' must be"):
        cls.from_dict({fields[0].name: [1, 2]})
