"""The HBase jars: resolved from ``hbase/pom.xml`` by Maven into a cache outside the repo.

The cache key is a hash of the pom, so changing the pinned version fetches a new set and a
cached set is reused as long as the pom is unchanged. Maven's own local repository
(``~/.m2``) also keeps the downloads, so a re-fetch after ``rm -rf`` of the cache is quick.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from hbase.errors import MavenError

log = logging.getLogger(__name__)

RUNTIME_DIR = Path(__file__).resolve().parent
POM = RUNTIME_DIR / "pom.xml"
CACHE_ENV = "SEQSTORE_CACHE_DIR"
# A directory of already-fetched jars (the Docker image sets it); skips Maven entirely.
LIB_ENV = "SEQSTORE_HBASE_LIB"
MVN_TIMEOUT_S = 1200

_UNREACHABLE = re.compile(
    r"(Could not transfer|UnknownHost|Connection refused|Connect to .* failed|"
    r"timed out|Network is unreachable|No route to host|Could not resolve)",
    re.IGNORECASE,
)


def hbase_version() -> str:
    """The HBase version pinned in the pom, e.g. ``2.6.1-hadoop3``."""
    match = re.search(r"<hbase\.version>([^<]+)</hbase\.version>", POM.read_text())
    if match is None:
        raise MavenError(f"{POM} has no <hbase.version> property")
    return match.group(1)


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "seqstore"


def lib_dir() -> Path:
    """Where the jars for the current pom live (may not exist yet)."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return cache_root() / f"hbase-{hbase_version()}-{digest}" / "lib"


def cached() -> Path | None:
    """The jar directory if it is complete, else None."""
    preset = os.environ.get(LIB_ENV)
    if preset:
        return Path(preset)
    lib = lib_dir()
    return lib if (lib.parent / "COMPLETE").exists() else None


def fetch(*, quiet: bool = True, maven_args: tuple[str, ...] = ()) -> Path:
    """Return the jar directory, fetching the jars with Maven first if needed.

    Idempotent: a complete cache is reused without running Maven. The copy lands in a
    temporary directory that is renamed into place only when Maven succeeded, so an
    interrupted fetch never leaves a half-filled cache behind.

    Raises:
        MavenError: ``mvn`` is not installed, Maven Central is unreachable, or Maven failed.
    """
    done = cached()
    if done is not None:
        return done
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenError(
            "Maven ('mvn') is not installed; it fetches the HBase jars.",
            hint="Install it (Debian/Ubuntu: apt-get install maven; macOS: brew install maven), "
            "or run HBase in Docker instead: docker compose -f docker/compose.yml up",
        )
    lib = lib_dir()
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib.", dir=lib.parent))
    cmd = [
        mvn, "-B", "-f", str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
        *maven_args,
    ]
    if quiet:
        cmd.insert(2, "-q")
    log.info("fetching HBase %s jars with Maven into %s", hbase_version(), lib)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MVN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise MavenError(
            f"Maven did not finish fetching the HBase jars within {MVN_TIMEOUT_S} s.",
            hint="Check that Maven Central is reachable (mvn -v; your proxy settings in ~/.m2/settings.xml).",
        ) from exc
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        output = (proc.stdout + proc.stderr).strip()
        tail = "\n".join(output.splitlines()[-15:])
        if _UNREACHABLE.search(output):
            raise MavenError(
                "Maven could not download the HBase jars: Maven Central is unreachable.",
                hint="Check your network or proxy (~/.m2/settings.xml), then retry; "
                "or run HBase in Docker: docker compose -f docker/compose.yml up",
                log_tail=tail,
            )
        raise MavenError(f"Maven failed to resolve {POM} (exit {proc.returncode}).", log_tail=tail)
    if lib.exists():
        shutil.rmtree(lib)
    os.replace(staging, lib)
    (lib.parent / "COMPLETE").write_text(hbase_version() + "\n")
    return lib
