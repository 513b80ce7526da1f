"""What ``pip install rtclient`` installs is enough to import every module it ships.

The demo, ``rtclient emulator`` and the pytest plugin run on a plain install; an import
that only the ``test``/``dev`` extras happen to satisfy would pass here and fail on a
user's machine, so the imports are checked against ``install_requires`` itself.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_ONLY = {"pytest"}  # rtclient.testing is loaded by pytest itself
# Optional features: module -> (the extra that installs it, the one file that may import it)
EXTRAS_ONLY = {"opentelemetry": ("otel", "rtclient/metrics.py")}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def install_requires() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    return {_name(line) for line in lines if line.strip() and not line.strip().startswith("#")}


def with_dependencies(names: set[str]) -> set[str]:
    """The distributions a plain install brings: the named ones and what they require."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower())
    return seen


def third_party_imports() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "rtclient").rglob("*.py"):
        here: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                here.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                here.add(node.module.split(".")[0])
        relative = path.relative_to(ROOT).as_posix()
        found |= {m for m in here if EXTRAS_ONLY.get(m, ("", ""))[1] != relative}
    return found - set(sys.stdlib_module_names) - {"rtclient"} - PLUGIN_ONLY


def test_optional_imports_are_in_their_extra() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    for module, (extra, _) in EXTRAS_ONLY.items():
        lines = config["options.extras_require"][extra].splitlines()
        assert any(_name(line).replace("-", ".").startswith(module) for line in lines), extra


def test_every_import_of_the_package_is_installed_with_it() -> None:
    installed = with_dependencies(install_requires())
    owners = metadata.packages_distributions()
    missing = {
        module: owners.get(module, ["?"])
        for module in third_party_imports()
        # (Python 3.10 does not map every distribution; most are named like their module)
        if not {d.lower() for d in owners.get(module, [module])} & installed
    }
    assert not missing, f"imported but not in install_requires (or their dependencies): {missing}"


def test_the_check_sees_the_emulators_schema_dependency() -> None:
    assert {"openai", "pydantic", "aiortc", "janus", "loguru", "aiohttp"} <= third_party_imports()
