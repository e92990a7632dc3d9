"""Imports flow one way (docs/ARCHITECTURE.md): the commands are leaves that no library module
imports, no command imports another, and what they share (lpipdiff/arguments/) imports no command.
Every import is read, those inside functions too, since a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lpipdiff"

# Each command (a module, or a subpackage with everything in it), and who besides itself may
# import it: ``python -m lpipdiff`` starts the command line, whose ``export`` and ``push`` run the
# Hub's. The train and evaluate commands are started by name (lpipdiff.cli.commands.DELEGATED).
COMMANDS = {
    "lpipdiff.cli": {"lpipdiff.__main__"},
    "lpipdiff.training.train": set(),
    "lpipdiff.evaluation.evaluate": set(),
    "lpipdiff.hub": {"lpipdiff.cli.commands"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from X import name`` also
    counts as ``X.name``, which may be a submodule."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_commands_are_imported_only_by_themselves_and_their_starters():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in imported_modules(path):
            for command, starters in COMMANDS.items():
                if within(imported, command) and not within(importer, command) and importer not in starters:
                    wrong.append(f"{importer} imports {command}")
    assert not wrong, "modules that import a command (move what they need below it, e.g. to lpipdiff/arguments/):\n" + (
        "\n".join(sorted(set(wrong)))
    )


def test_the_import_reader_sees_lazy_and_relative_imports():
    module = PACKAGE / "training" / "train.py"
    found = imported_modules(module)
    assert "lpipdiff.arguments.errors" in found  # imported inside main()
    assert "lpipdiff.model.unet" in found  # from ..model.unet import PatchFusionUNet
    assert module_name(PACKAGE / "cli" / "__init__.py") == "lpipdiff.cli"
