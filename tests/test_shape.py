"""The package's shape, kept: small classes and functions, one home for the wire.

These are the limits the architecture page promises (docs/architecture.md).
A change that breaks one should split the code, not raise the limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .helpers import ROOT

PACKAGE = ROOT / "p2pmr"
MAX_CLASS_LINES = 350
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path)))
            for path in sorted(PACKAGE.rglob("*.py")) if "_pb" not in path.parts]


def _span(node: ast.AST) -> int:
    assert isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    assert node.end_lineno is not None
    return node.end_lineno - node.lineno + 1


def test_no_class_or_function_outgrows_its_limit() -> None:
    too_big = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and _span(node) > MAX_CLASS_LINES:
                too_big.append(f"class {path.relative_to(ROOT)}:{node.name} ({_span(node)})")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    _span(node) > MAX_FUNCTION_LINES:
                too_big.append(f"function {path.relative_to(ROOT)}:{node.name} "
                               f"({_span(node)})")
    assert not too_big, "split these: " + ", ".join(too_big)


def test_only_the_wire_layer_touches_the_generated_protobuf() -> None:
    outside = []
    for path, tree in _modules():
        if path.is_relative_to(PACKAGE / "wire"):
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any("_pb" in name.split(".") or "mapreduce_pb2" in name for name in names):
                outside.append(str(path.relative_to(ROOT)))
    assert not outside, f"go through p2pmr.wire instead: {outside}"


def test_the_architecture_page_names_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(PACKAGE)) for path, _ in _modules()
               if path.stem not in ("__init__", "__main__") and f"`{path.stem}`" not in page]
    assert not missing, f"docs/architecture.md does not map {missing}"
