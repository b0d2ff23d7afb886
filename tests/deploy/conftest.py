"""Without the deploy-check packages, the other modules here are not collected and test_tools fails instead.

A missing package must neither break collection of the whole suite nor pass silently as a skip.
"""

from __future__ import annotations

import importlib.util

# import name -> PyPI name; all of them belong in pyproject's `test` extra.
REQUIRED = {"yaml": "PyYAML", "kubernetes_validate": "kubernetes-validate", "yamllint": "yamllint",
            "check_jsonschema": "check-jsonschema", "jsonschema": "jsonschema"}
MISSING = sorted(pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None)

collect_ignore_glob = ["test_images.py", "test_manifests.py", "test_monitoring.py"] if MISSING else []
