"""A real PostgreSQL server for the tests (``pytest_plugins = ["postgres_support"]``).

Debian's ``postgresql`` package puts the server under /usr/lib/postgresql/<version>/bin
(``.ci/run`` installs it when missing). The ``postgres_url`` fixture runs ``initdb`` and
``pg_ctl`` in a folder of its own on a free loopback port, creates a database and hands
back its SQLAlchemy URL; the server stops at the end of the session. The server refuses
to run as root, so under root (CI) it runs as the ``postgres`` user of the package, or
``nobody``.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def server_bin() -> Path | None:
    """The newest installed server's bin folder (or the one on PATH), None if none is."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None, args: list[str], **kw) -> subprocess.CompletedProcess:
    if user is not None:
        args = ["runuser", "-u", user, "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="session")
def postgres_url():
    """``postgresql+psycopg://nas@127.0.0.1:<port>/nas`` on a fresh server."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install -e '.[postgres]'")
    bin_dir = server_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    user = None
    if os.geteuid() == 0:  # initdb refuses root
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists")
    top = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    data = top / "data"
    if user is not None:
        os.chown(top, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    r = _run_as(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", "nas", "--auth=trust",
                       "--no-sync", "-E", "UTF8", "--locale=C"])
    assert r.returncode == 0, r.stdout + r.stderr
    port = None
    for _ in range(5):  # a port taken between probing it and the server binding it: retry
        port = _free_port()
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={top} "
                "-c fsync=off -c max_connections=100")
        r = _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(top / "log"),
                           "-o", opts, "-w", "-t", "60", "start"])
        if r.returncode == 0:
            break
    assert r.returncode == 0, r.stdout + r.stderr + (top / "log").read_text()
    try:
        r = _run_as(None, [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                           "-U", "nas", "nas"])
        assert r.returncode == 0, r.stderr
        yield f"postgresql+psycopg://nas@127.0.0.1:{port}/nas"
    finally:
        _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(top, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    t0 = time.time()
    while not predicate():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
