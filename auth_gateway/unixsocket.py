"""The gateway's optional Unix socket (GATEWAY_UNIX_SOCKET), beside its TCP port.

A proxy on the same host (nginx asking ``/_auth/verify`` for every request, say) reaches the
gateway through it for less than loopback TCP costs both sides. The process that binds the
socket owns its path for as long as it holds an exclusive lock on ``PATH.lock`` (flock: the
kernel releases it when the process dies, however it dies). Holding the lock, it knows that a
socket file already at the path was left by a gateway that is gone, and replaces it; without
the lock, it refuses to start. It creates the file with the configured permission bits (who may
connect), and removes it as soon as it begins to drain (new connections are then refused at
once, not left waiting in a backlog nobody reads), always before releasing the lock, so that it
never removes a successor's socket; a successor can start once the lock is released. With
several workers the supervisor binds it once and every worker accepts on the same socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat

from apikeys_shared.errors import ConfigError

__all__ = ["UnixSocket"]

BACKLOG = 1024


class UnixSocket:
    """A bound, listening Unix stream socket, and the path it owns (see the module docstring).

    ``name`` is what error messages call the setting (the variable or ``--unix``).
    """

    def __init__(self, path: str, mode: int, name: str = "GATEWAY_UNIX_SOCKET") -> None:
        self.path = path
        self._lock = _lock(path, name)
        try:
            _clear_stale(path, name)
            self.sock = _bind(path, mode, name)
        except BaseException:
            os.close(self._lock)
            raise
        self._unlinked = self._closed = False

    def unlink(self) -> None:
        """Remove the file (idempotent): from now on a new connection is refused at once,
        while the connections already made are still served."""
        if self._unlinked:
            return
        self._unlinked = True
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # ours: nobody else binds here while we hold the lock

    def close(self) -> None:
        """Remove the file, stop listening, release the path; idempotent."""
        if self._closed:
            return
        self.unlink()
        self._closed = True
        self.sock.close()
        os.close(self._lock)


def _lock(path: str, name: str) -> int:
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot open the lock file {lock_path!r}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise ConfigError(
            f"{name}: another gateway is using {path!r} (it holds {lock_path!r})"
        ) from exc
    return fd


def _clear_stale(path: str, name: str) -> None:
    """Remove a socket file left by a gateway that is gone; refuse anything else at ``path``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{name}: cannot check {path!r}: {exc}") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"{name}: {path!r} exists and is not a socket")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"{name}: cannot remove the stale socket {path!r}: {exc}") from exc


def _bind(path: str, mode: int, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() makes the file with the umask's complement: set so that it has exactly ``mode``
    # from the start (no chmod afterwards, which would follow a symlink put in its place).
    previous = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{name}: cannot listen on {path!r}: {exc}") from exc
    finally:
        os.umask(previous)
    return sock
