"""After ``pip install -e .``, ``mypy --strict`` on a user's script resolves rtclient.

setuptools makes an editable install of a top-level package an import hook (a
``MetaPathFinder``) unless the project maps its root explicitly; mypy cannot follow
an import hook and reports ``Cannot find implementation or library stub for module
named "rtclient"``. setup.cfg's ``package_dir = =.`` turns the install into a plain
``.pth`` path. This builds a fresh editable install of a copy of the project in a new
virtual environment (offline: ``--no-deps --no-build-isolation``; the environment sees
this one's packages - mypy and setuptools included - but not its rtclient) and
type-checks a small user script against it, with no ``MYPYPATH``. A module added to
the copy *after* the install is imported too, so the script can only pass through the
fresh install (not this checkout's), and new modules need no reinstall.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = '''
from concurrent.futures import ThreadPoolExecutor

from rtclient import RealtimeClient, SignalingError, WaitTimeoutError, tool
from rtclient._added_after_install import ADDED


@tool
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


def main() -> int:
    total: int = add(2, 3) + ADDED
    with ThreadPoolExecutor(2) as pool:
        client = RealtimeClient(api_key="sk-test", tools=[add], executor=pool)
        try:
            client.connect(timeout=1.0)
        except (SignalingError, WaitTimeoutError):
            pass
        finally:
            client.close()
        lost: int = client.stats()["lost"]
    return total + lost
'''


def run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def test_mypy_strict_resolves_a_fresh_editable_install(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "rtclient", project / "rtclient", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYPY", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # This environment's packages (pip, setuptools, mypy, rtclient's dependencies) after
    # the new one's own, as plain paths: whether this one is a venv or not, and without
    # processing its .pth files (its own rtclient install stays out of sight).
    (site_dir,) = run(
        python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path,
        env=env,
    ).stdout.split()  # fmt: skip
    ours = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    Path(site_dir, "zz_outer_environment.pth").write_text("\n".join(ours) + "\n")

    install = run(
        python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
        "-e", project, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    (project / "rtclient" / "_added_after_install.py").write_text("ADDED: int = 1\n")

    where = run(python, "-c", "import rtclient; print(rtclient.__file__)", cwd=tmp_path, env=env)
    assert where.stdout.strip() == str(project / "rtclient" / "__init__.py"), where.stderr

    user = tmp_path / "user"
    user.mkdir()
    (user / "app.py").write_text(textwrap.dedent(USER_SCRIPT).lstrip())
    # third-party modules' cache entries are reused across runs; rtclient's path is new
    cache = ROOT / ".mypy_cache" / "user-script"
    mypy = run(python, "-m", "mypy", "--strict", "--cache-dir", cache, "app.py", cwd=user, env=env)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    assert "Success: no issues found in 1 source file" in mypy.stdout
    assert sys.executable != str(python)  # (the check ran in the new environment)
