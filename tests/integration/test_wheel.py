"""The package as users install it: build the wheel, install it into a fresh virtualenv, run the demo.

The wheel is built the way ``pip install .`` builds it (isolated, with the build backend from
PyPI), from a copy of the checkout so no ``build/`` left in the tree can leak into it. The fresh
virtualenv has no packages of its own but the wheel: so that pip does not download Ray again,
a ``.pth`` file puts this suite's site-packages (the same third-party dependencies) after the
venv's own. That path line does not run the editable install's import hook, so the checkout is
not importable from the venv: only the installed wheel is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIPPED = [
    "store/py.typed", "ray_jobs/examples/__init__.py", "ray_jobs/examples/models.py",
    "ray_jobs/examples/torch_model.py", "ray_jobs/examples/schema.json", "hbase/pom.xml",
    "hbase/conf/hbase-site.xml.template", "hbase/conf/log4j2.properties", "store/idl/hbase2.thrift",
]
NOT_CHECKOUT = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                      ".hypothesis", "seqstore-demo", "seqstore-reports")


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what points Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The built wheel and the build's output (pip -v shows the backend's warnings)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=NOT_CHECKOUT)
    built = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(root / "dist"), str(src)],
                cwd=root, env=clean_env())
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = (root / "dist").glob("seqstore-*.whl")
    return path, built.stdout + built.stderr


def test_wheel_holds_every_file_the_code_loads_and_builds_quietly(wheel: tuple[Path, str]) -> None:
    path, log = wheel
    names = set(zipfile.ZipFile(path).namelist())
    assert [f for f in SHIPPED if f not in names] == []
    assert not any(n.startswith("tests/") for n in names)
    warnings = [line.strip() for line in log.splitlines() if re.search(r"[A-Za-z]Warning\b|would be ignored", line)]
    assert warnings == []


def test_demo_runs_from_a_fresh_virtualenv_with_the_wheel(
    wheel: tuple[Path, str], hbase_server: HBaseServer, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                     str(wheel[0])], env=clean_env())
    assert installed.returncode == 0, installed.stderr

    outside = tmp_path / "elsewhere"  # cwd outside the checkout: nothing imports from the source tree
    outside.mkdir()
    where = run([str(python), "-c", "import store, hbase, ray_jobs.examples.models as m; "
                 "print(store.__file__, hbase.__file__, m.__file__, sep='\\n')"], cwd=outside, env=clean_env())
    assert where.returncode == 0, where.stderr
    for module_file in where.stdout.split():
        assert Path(module_file).is_relative_to(site), module_file

    demo = run([str(venv / "bin" / "seqstore"), "demo", "--users", "200", "--events", "5000", "--workers", "1",
                "--json", "--work-dir", str(outside / "demo")], cwd=outside, env=clean_env())
    assert demo.returncode == 0, demo.stderr[-3000:]
    stages = {s["stage"]: s for s in json.loads(demo.stdout)["stages"]}
    assert stages["score"]["rows"] == 200 and stages["export"]["rows"] > 0
