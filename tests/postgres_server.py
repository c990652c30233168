"""A throwaway PostgreSQL server for tests: `initdb` + `pg_ctl` in a temp dir.

The server listens only on a Unix socket inside its own temporary directory
(no TCP port, so parallel runs never collide), trusts local connections, and
is stopped and deleted at the end of the session. Durability is switched off
(`fsync=off`): the data is thrown away anyway.

The binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/
<version>/bin`, newest first) or from PATH. They refuse to run as root, so
as root they run as the `postgres` user (`runuser -u postgres --`) on a
directory that user owns. Tests skip only when no binaries exist at all
(`.ci/run` installs the package where `initdb` is missing).
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

SUPERUSER = "postgres"
START_TIMEOUT_S = 60


def find_bindir():
    """The directory holding initdb and pg_ctl, or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(v) for v in p.split("/")[-2].split(".") if v.isdigit()],
        reverse=True,
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    for bindir in candidates:
        if all(
            os.access(os.path.join(bindir, b), os.X_OK) for b in ("initdb", "pg_ctl")
        ):
            return bindir
    return None


class PostgresServer:
    """A running server; `url(database)` gives SQLAlchemy URLs for Optuna."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="pg-")  # short: socket paths <= 107 bytes
        self.data = os.path.join(self.root, "data")
        self.as_user = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)  # KeyError: no postgres user to run as
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", SUPERUSER, "--"]

    def _run(self, binary, *args, timeout=START_TIMEOUT_S):
        command = [*self.as_user, os.path.join(self.bindir, binary), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{binary} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        return result

    def start(self):
        self._run(
            "initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust",
            "--no-sync", "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        options = (
            f"-c listen_addresses='' -k {self.root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "server.log"),
            "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start",
        )  # fmt: skip
        return self

    def create_database(self, name=None):
        """A new empty database; its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:10]}"
        self._run("createdb", "-h", self.root, "-U", SUPERUSER, name)
        return self.url(name)

    def url(self, database):
        # A plain postgresql:// URL, as users write it (psycopg 3 under SQLAlchemy 2.1).
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}"

    def stop(self):
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
