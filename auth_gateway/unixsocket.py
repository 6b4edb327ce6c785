"""The gateway's optional Unix socket (GATEWAY_UNIX_SOCKET), beside its TCP port.

A proxy on the same host (nginx asking ``/_auth/verify`` for every request, say) reaches the
gateway through it for less than loopback TCP costs both sides. The process that binds the
socket owns its file: it replaces a stale one left by a crash (nothing answers on it), refuses
to start when another process still listens there, sets the file's permission bits (who may
connect), and removes the file when it stops, unless another process has replaced it meanwhile.
With several workers the supervisor binds it once and every worker accepts on the same socket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from apikeys_shared.errors import ConfigError

__all__ = ["UnixSocket"]

_BACKLOG = 1024


class UnixSocket:
    """A bound, listening Unix stream socket and the file it owns."""

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, mode)
            sock.listen(_BACKLOG)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"GATEWAY_UNIX_SOCKET: cannot listen on {path!r}: {exc}") from exc
        self.sock = sock
        self._inode = os.stat(path).st_ino

    def close(self) -> None:
        """Stop listening and remove the file, if it is still the one bound here (idempotent)."""
        self.sock.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)


def _clear_stale(path: str) -> None:
    """Remove a socket file nothing listens on; refuse anything else at ``path``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"GATEWAY_UNIX_SOCKET: {path!r} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a process that is gone
        return
    except OSError as exc:
        raise ConfigError(f"GATEWAY_UNIX_SOCKET: cannot check {path!r}: {exc}") from exc
    finally:
        probe.close()
    raise ConfigError(f"GATEWAY_UNIX_SOCKET: another process is listening on {path!r}")
