"""A private PostgreSQL primary with a streaming standby, for failover tests.

The machine's PostgreSQL is never touched: ``PostgresPair`` makes two clusters of its own with
the installed server binaries (``initdb``, ``pg_basebackup -R``, ``pg_ctl``) in a directory of
its own under /tmp, on the ports it is given, and removes everything when it stops. PostgreSQL
refuses to run as root, so when the tests run as root the binaries run as the ``postgres`` user
(``runuser``), in a directory that user owns.

The standby streams from the primary through a ``FaultProxy``, so that a test can cut
replication and show what a failover then loses. ``synchronous=True`` names the standby in the
primary's ``synchronous_standby_names``: a commit returns only once the standby has flushed it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.faultproxy import FaultProxy
from tests.support.procs import require_free_ports

__all__ = ["PG_BIN", "PostgresNode", "PostgresPair"]


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert found, "the PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)"
    return found[-1].parent


PG_BIN = _pg_bin()
STANDBY_NAME = "standby"
_AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 60
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 4
wal_keep_size = 64MB
hot_standby = on
# Nothing here survives the test, and a killed primary is never started again: spare the
# shared disk the flushes.
fsync = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
"""


def _run(*args: str | Path) -> str:
    # Output to a file, not a pipe: the server that ``pg_ctl start`` leaves running would hold
    # a pipe open, and reading it to its end would never return.
    with tempfile.TemporaryFile() as output:
        done = subprocess.run([*_AS_POSTGRES, *map(str, args)], stdout=output,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
        if done.returncode != 0:
            output.seek(0)
            text = output.read().decode(errors="replace")
            raise RuntimeError(f"{Path(args[0]).name} failed: {text}")
        output.seek(0)
        return output.read().decode(errors="replace")


class PostgresNode:
    """One cluster: its data directory and port."""

    def __init__(self, name: str, base: Path, port: int) -> None:
        self.name = name
        self.data = base / name
        self.port = port
        self.log = base / f"{name}.log"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        _run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def kill(self) -> None:
        """Stop at once, as a crash would: no checkpoint, every connection dropped."""
        _run(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def promote(self) -> None:
        """Turn a standby into a primary and wait until it takes writes."""
        _run(PG_BIN / "pg_ctl", "-D", self.data, "-w", "-t", "60", "promote")

    def stop_quietly(self) -> None:
        """Stop the server if it runs (for clean-up)."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.kill()

    def append_settings(self, text: str) -> None:
        """Add lines to the cluster's postgresql.auto.conf (read at the next start)."""
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(text)


class PostgresPair:
    """A primary and a standby streaming from it through a fault proxy; see the module doc."""

    def __init__(self, primary_port: int, standby_port: int, replication_port: int, *,
                 synchronous: bool, database: str = "apikeys") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="apikeys-failover-pg-"))
        self.synchronous = synchronous
        self.database = database
        self.primary = PostgresNode("primary", self.base, primary_port)
        self.standby = PostgresNode("standby", self.base, standby_port)
        self.replication = FaultProxy("127.0.0.1", primary_port, listen_port=replication_port)

    @property
    def url(self) -> str:
        """key_service's URL: both servers, and only the one that takes writes will do."""
        hosts = "&".join(f"host=127.0.0.1:{n.port}" for n in (self.primary, self.standby))
        return (f"postgresql+asyncpg://postgres@/{self.database}?{hosts}"
                "&target_session_attrs=read-write")

    def node_url(self, node: PostgresNode) -> str:
        """An asyncpg DSN of one server alone."""
        return f"postgresql://postgres@127.0.0.1:{node.port}/{self.database}"

    def start(self) -> PostgresPair:
        """initdb the primary, start it, make the database, clone and start the standby."""
        try:
            require_free_ports([self.primary.port, self.standby.port], "a private PostgreSQL")
            if _AS_POSTGRES:
                user = pwd.getpwnam("postgres")
                os.chown(self.base, user.pw_uid, user.pw_gid)
            primary = self.primary
            _run(PG_BIN / "initdb", "-D", primary.data, "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions")
            primary.append_settings(_SETTINGS.format(port=primary.port, socket_dir=self.base))
            (primary.data / "pg_hba.conf").write_text(
                "local all all trust\n"
                "host all all 127.0.0.1/32 trust\n"
                "host replication all 127.0.0.1/32 trust\n"
            )
            primary.start()
            self._sql(f'CREATE DATABASE "{self.database}"')
            standby = self.standby
            _run(PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                 "-U", "postgres", "-D", standby.data, "-R", "-X", "stream", "--no-sync",
                 "--checkpoint=fast")
            # A promoted standby has no standby of its own: it must not wait for one.
            standby.append_settings(
                f"port = {standby.port}\n"
                "synchronous_standby_names = ''\n"
                f"primary_conninfo = 'host=127.0.0.1 port={self.replication.port} "
                f"user=postgres application_name={STANDBY_NAME}'\n"
            )
            standby.start()
            if self.synchronous:
                # Only now: with no standby connected, every commit would wait for one.
                self._sql(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
                self._sql("SELECT pg_reload_conf()")
                self._wait_for_sync()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self._sql("SELECT pg_current_wal_lsn()").strip()
        query = f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
        deadline = time.monotonic() + timeout
        while _run(PG_BIN / "psql", "-h", "127.0.0.1", "-p", str(self.standby.port),
                   "-U", "postgres", "-d", "postgres", "-qAt", "-c", query).strip() != "t":
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.1)

    def _sql(self, statement: str) -> str:
        """Run one statement on the primary with psql; its output."""
        return _run(PG_BIN / "psql", "-h", "127.0.0.1", "-p", str(self.primary.port),
                    "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt",
                    "-c", statement)

    def _wait_for_sync(self) -> None:
        deadline = time.monotonic() + 30
        query = "SELECT sync_state FROM pg_stat_replication"
        while self._sql(query).strip() != "sync":
            assert time.monotonic() < deadline, "the standby did not become synchronous"
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop both servers and remove every file."""
        self.standby.stop_quietly()
        self.primary.stop_quietly()
        if self.base.exists():
            self.replication.close()
            shutil.rmtree(self.base, ignore_errors=True)
