"""A private PostgreSQL server for the tests, from Debian's postgresql package.

    python -m tests.pgserver up     # start it (idempotent); prints its URL
    python -m tests.pgserver down   # stop it

It listens on a UNIX socket in its own directory only (listen_addresses=''), so no test
traffic goes over any network, and it never touches the system's own cluster. One
directory per checkout, so two clones do not share a server.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = Path(os.environ.get("AVMIGRATE_PG_DIR", "/var/tmp")) / (
    "avmigrate-pg-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:10])
DATA, RUN, LOG = BASE / "data", BASE / "run", BASE / "server.log"
USER = "postgres"


def _bin(name: str) -> str:
    found = sorted(str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise SystemExit(f"{name} not found: install Debian's postgresql package (make deps)")
    return found[-1]


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    command = list(args) if os.geteuid() != 0 else ["runuser", "-u", USER, "--", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True)


def url(database: str = "postgres") -> str:
    return f"postgresql://{USER}@/{database}?host={RUN}"


def running() -> bool:
    if not (DATA / "postmaster.pid").exists():
        return False
    done = subprocess.run([_bin("pg_ctl"), "status", "-D", str(DATA)],
                          capture_output=True, text=True, check=False,
                          user=USER if os.geteuid() == 0 else None)
    return done.returncode == 0


def up() -> str:
    if running():
        return url()
    BASE.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(BASE, USER, USER)
    BASE.chmod(0o700)
    RUN.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(RUN, USER, USER)
    if not (DATA / "PG_VERSION").exists():
        _as_postgres(_bin("initdb"), "-D", str(DATA), "-U", USER, "-A", "trust",
                     "--locale=C", "-E", "UTF8")
    options = f"-c listen_addresses='' -c unix_socket_directories={RUN} -c max_connections=200"
    _as_postgres(_bin("pg_ctl"), "-D", str(DATA), "-l", str(LOG), "-o", options, "-w",
                 "-t", "60", "start")
    return url()


def down() -> None:
    if running():
        _as_postgres(_bin("pg_ctl"), "-D", str(DATA), "-m", "fast", "-w", "stop")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "up"
    if what == "up":
        print(up())
    elif what == "down":
        down()
    else:
        raise SystemExit("usage: python -m tests.pgserver up|down")
