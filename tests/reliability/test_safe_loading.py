"""No code path unpickles untrusted bytes: every loader in the source is one of the audited
safe ones (safetensors, JSON, memory-mapped raw arrays, `torch.load(weights_only=True)`), and a
file that would be unpickled unsafely is nowhere read. The planted-payload tests for each
place live beside their features (test_checkpoint_errors, test_pretrain)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "bertkit"

UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("dill", "load"),
    ("joblib", "load"),
    ("marshal", "loads"),
    ("shelve", "open"),
}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield node, f.value.id, f.attr
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute):
                yield node, f.value.attr, f.attr


def audit(files: list[Path], root: Path) -> list[str]:
    """Every call in `files` that could unpickle: 'file:line: what'."""
    found = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, owner, name in _calls(tree):
            where = f"{path.relative_to(root)}:{node.lineno}"
            kw = {k.arg: k.value for k in node.keywords}
            if (owner, name) in UNSAFE_CALLS:
                found.append(f"{where}: {owner}.{name}")
            if (owner, name) == ("torch", "load"):
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not safe:
                    found.append(f"{where}: torch.load without weights_only=True")
            if name == "load" and owner in ("np", "numpy"):
                if isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True:
                    found.append(f"{where}: np.load(allow_pickle=True)")
    return found


def test_no_unsafe_deserialisation_in_the_source():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    assert audit(files, SRC) == []


def test_the_audit_flags_unsafe_calls(tmp_path):
    bad = tmp_path / "bad.py"
    code = "import pickle, torch, numpy as np\npickle.load(f)\ntorch.load(p)\n"
    code += (
        "torch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\ntorch.load(p, weights_only=True)\n"
    )
    bad.write_text(code)
    assert audit([bad], tmp_path) == [
        "bad.py:2: pickle.load",
        "bad.py:3: torch.load without weights_only=True",
        "bad.py:4: torch.load without weights_only=True",
        "bad.py:5: np.load(allow_pickle=True)",
    ]
