"""Print the runtime requirements of pyproject.toml, one per line, for ``pip install -r``.

The images install dependencies only (the source is copied to /app and found through PYTHONPATH),
so pyproject.toml stays the one list of dependencies. Usage::

    python pyproject_deps.py pyproject.toml [EXTRA ...]

prints ``[project] dependencies`` followed by each named optional extra (e.g. ``local``).
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject_path: str, extras: list[str]) -> list[str]:
    """Core dependencies plus the requested extras; an unknown extra is an error."""
    with open(pyproject_path, "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject_deps: no optional extra {extra!r} (have: {sorted(optional)})")
        reqs.extend(optional[extra])
    return reqs


def main(argv: list[str]) -> None:
    """CLI entry point."""
    if not argv:
        raise SystemExit(__doc__)
    print("\n".join(requirements(argv[0], [e for e in argv[1:] if e])))


if __name__ == "__main__":
    main(sys.argv[1:])
