"""docs/architecture.md stays true: its layer diagram is `tests/test_architecture.py`'s LAYERS, and every module,
file and name it points at exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.test_architecture import LAYERS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "vitrine"
DOC = ROOT / "docs" / "architecture.md"
LAYER_LINE = re.compile(r"^ layer (\d+)\s+(.+?)(?:\s{2,}|$)")


def diagram_layers(text: str) -> dict[int, set[str]]:
    """{layer number: packages} from the fenced diagram's ` layer N  a, b   description` lines."""
    block = text.split("```\n", 2)[1]
    layers = {}
    for line in block.splitlines():
        if match := LAYER_LINE.match(line):
            layers[int(match.group(1))] = {name.strip() for name in match.group(2).split(",")}
    return layers


def module_file(parts: list[str]) -> Path | None:
    path = PACKAGE.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return path if path.is_dir() else None  # a namespace package: no names of its own


def top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def dotted_name_exists(dotted: str) -> bool:
    """`vitrine.a.b` is a module, or `vitrine.a.b.Name[.attr]` a module and a name defined at its top level."""
    parts = dotted.split(".")[1:]
    for cut in range(len(parts), 0, -1):
        found = module_file(parts[:cut])
        if found is not None:
            return cut == len(parts) or (found.is_file() and parts[cut] in top_level_names(found))
    return False


def named_references(text: str) -> tuple[set[str], set[str]]:
    """The backticked `vitrine.x.y` names and the `dir/file.py` paths (under src/vitrine, or the repository's)."""
    spans = re.findall(r"`([^`\n]+)`", text)
    dotted = {m.group(0).rstrip(".") for s in spans for m in re.finditer(r"\bvitrine(?:\.[A-Za-z_]\w*)+", s)}
    paths = {s for s in spans if re.fullmatch(r"[\w./-]+\.py", s)}
    return dotted, paths


def test_the_diagram_is_the_architecture_tests_layers():
    layers = diagram_layers(DOC.read_text(encoding="utf-8"))
    assert layers == dict(enumerate(LAYERS)), (
        "docs/architecture.md's diagram and tests/test_architecture.py's LAYERS differ"
    )


def test_every_module_and_file_the_doc_names_exists():
    dotted, paths = named_references(DOC.read_text(encoding="utf-8"))
    assert len(dotted) >= 20 and len(paths) >= 10, "the doc names fewer modules than it did: did the parsing break?"
    assert not sorted(n for n in dotted if not dotted_name_exists(n)), "names no module defines"
    missing = sorted(p for p in paths if not ((PACKAGE / p).is_file() or (ROOT / p).is_file()))
    assert not missing, f"files that do not exist: {missing}"


def test_a_renamed_module_is_caught():
    assert dotted_name_exists("vitrine.embed.bank") and dotted_name_exists("vitrine.index.store.VectorStore")
    assert not dotted_name_exists("vitrine.cir.features.image_bank")  # moved to vitrine.embed.bank
    assert not dotted_name_exists("vitrine.index.store.NoSuchStore")
    assert diagram_layers("```\n layer 0  errors, constants   x\n layer 1  vitrine\n```\n") == {
        0: {"errors", "constants"}, 1: {"vitrine"},
    }
