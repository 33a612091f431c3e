"""A private PostgreSQL and a private Redis for fault tests that restart them (issue 8, item 2).

The shared servers serve every other test session and must never be restarted, so a test that
needs a database or a broker to go away starts its own: `PrivatePostgres` runs initdb into a
temporary folder and a postmaster on a free port (as the `postgres` OS user: PostgreSQL refuses
to run as root), `PrivateRedis` a redis-server on a free port that, like the deployed one, keeps
nothing on disk. Both can be killed with SIGKILL (a crash: PostgreSQL recovers from its WAL at
the next start, Redis comes back empty) or stopped gracefully (`pg_ctl stop -m fast`, which ends
every client's session; `SHUTDOWN NOSAVE`), then started again on the same port.

`PrivatePostgres.clone_schema(settings_dict)` copies pytest-django's test database (schema and
the rows migrations left: content types, role groups) with pg_dump, so a test can point its own
connection and a worker's DATABASE_URL at the private server without running the migrations.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_NAME = "imageclean_private"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(*args: str, **kwargs) -> subprocess.CompletedProcess:
    command = list(args)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def _processes_in(folder: Path) -> list[int]:
    """Every process whose working directory is `folder`.

    Each PostgreSQL process (postmaster, backends, auxiliary processes) runs in its data
    directory, so this finds them all, including a backend forked an instant before the
    postmaster was killed, which a walk of the postmaster's children could miss; such an orphan
    keeps the shared memory block attached and the next start refuses to run beside it.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    """No such process, or a zombie (killed, not yet reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class PrivatePostgres:
    def __init__(self):
        # Its own folder under /tmp: the postgres user cannot enter pytest's (mode 700) ones.
        self.base = Path(tempfile.mkdtemp(prefix="imageclean-pg-"))
        self.data = self.base / "pgdata"
        self.log = self.base / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def init(self) -> PrivatePostgres:
        shutil.chown(self.base, "postgres", "postgres")
        self.base.chmod(0o755)
        _as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.base}'\n"
                # Speed only: a killed postmaster still recovers from its WAL (the files are
                # in the OS's cache; nothing here simulates the machine losing power).
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 50\nshared_buffers = 32MB\n"
            )
        return self.start()

    def start(self, timeout: float = 60) -> PrivatePostgres:
        # The postmaster runs as this process's child, not daemonised by pg_ctl: once killed it
        # must be reaped, and a container's PID 1 may never reap the orphans it adopts. A
        # killed postmaster left as a zombie keeps its PID alive, and the next start then
        # refuses to run ("lock file postmaster.pid already exists").
        command = [str(PG_BIN / "postgres"), "-D", str(self.data)]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        self.close()
        raise RuntimeError(f"private postgres did not start; {self.log} (tail):\n{tail}")

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend (a crash; the next start recovers)."""
        assert self.process is not None and self.process.poll() is None, "postgres is not running"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            victims = [pid for pid in _processes_in(self.data.resolve()) if not _gone(pid)]
            if not victims:
                self.process.wait(timeout=10)
                return
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            time.sleep(0.05)
        raise RuntimeError(f"postgres processes in {self.data} outlived SIGKILL for 20 s")

    def stop(self, mode: str = "fast") -> None:
        """A graceful shutdown as an operator restarts it: "fast" ends every session."""
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        if self.process is not None:
            self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, name: str = DB_NAME) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def clone_schema(self, settings_dict: dict, name: str = DB_NAME) -> None:
        """Create `name` here as a copy of the database `settings_dict` names."""
        env = {**os.environ, "PGPASSWORD": settings_dict.get("PASSWORD") or ""}
        source = [
            "-h", settings_dict.get("HOST") or "127.0.0.1",
            "-p", str(settings_dict.get("PORT") or 5432),
            "-U", settings_dict.get("USER") or "postgres",
        ]  # fmt: skip
        target = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        subprocess.run([str(PG_BIN / "createdb"), *target, name], check=True, env=env)
        dump = subprocess.run(
            [str(PG_BIN / "pg_dump"), *source, "--no-owner", "--no-privileges",
             settings_dict["NAME"]],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
        subprocess.run(
            [str(PG_BIN / "psql"), *target, "-q", "-v", "ON_ERROR_STOP=1", "-d", name],
            input=dump.stdout, check=True, capture_output=True, env=env,
        )  # fmt: skip


class PrivateRedis:
    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> PrivateRedis:
        import redis

        self.base.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.base),
                "--logfile", str(self.base / "redis.log"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=1).ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: every message in it is gone (nothing is kept on disk)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """A graceful shutdown (SIGTERM; with no save configured it writes nothing)."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=20)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"
