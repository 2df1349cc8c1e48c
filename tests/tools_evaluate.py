"""Import shim: the evaluation tool's main for tests (tools/ is not a package)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("tools_evaluate_cli", Path(__file__).resolve().parents[1] / "tools" / "evaluate.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
evaluate_main = _mod.main
