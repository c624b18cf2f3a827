"""The code's shape, enforced (issue 14): functions under 80 lines, files under 800, import contracts kept.

Lengths are counted from the `def` line to the function's last line (decorators and docstring included), so
a nested closure counts toward its enclosing function too: a 300-line builder of closures is one function.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ROOTS = ["sdwebui", "webui", "modules", "app.py"]
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 800

ALLOWED_LONG_FUNCTIONS: set[tuple[str, str]] = set()  # (file, function) pairs allowed over the limit: none


def _python_files() -> list[Path]:
    files: list[Path] = []
    for root in ROOTS:
        path = REPO_ROOT / root
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield node.name, start, node.end_lineno - start + 1


def long_functions() -> list[str]:
    found = []
    for path in _python_files():
        rel = path.relative_to(REPO_ROOT).as_posix()
        for name, line, length in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            if length > MAX_FUNCTION_LINES and (rel, name) not in ALLOWED_LONG_FUNCTIONS:
                found.append(f"{rel}:{line} {name}() is {length} lines")
    return found


def test_no_function_is_over_80_lines():
    assert long_functions() == []


def test_no_file_is_over_800_lines():
    long_files = [
        f"{path.relative_to(REPO_ROOT)} is {n} lines"
        for path in _python_files()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    ]
    assert long_files == []


def test_the_allowlist_names_only_functions_that_exist_and_are_long():
    """An entry whose function was split (or renamed) must go, or it would hide the next long function."""
    lengths = {}
    for rel, _ in ALLOWED_LONG_FUNCTIONS:
        tree = ast.parse((REPO_ROOT / rel).read_text(encoding="utf-8"))
        lengths.update({(rel, name): n for name, _, n in _functions(tree)})
    stale = [entry for entry in ALLOWED_LONG_FUNCTIONS if lengths.get(entry, 0) <= MAX_FUNCTION_LINES]
    assert stale == []


def test_the_shape_check_sees_a_long_function(tmp_path, monkeypatch):
    """The check can fail: an 81-line function in a scanned file is reported with its name and length."""
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (tmp_path / "long.py").write_text(f"def too_long():\n{body}\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "ROOTS", ["long.py"])
    assert long_functions() == ["long.py:1 too_long() is 81 lines"]


def test_import_contracts_are_kept():
    """[tool.importlinter] in pyproject.toml: the internal package never imports modules/ or webui/, the
    engine never imports api/jobs/facade/extensions, no cycles between sdwebui's sub-packages."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is in requirements-test.txt"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
