"""Checks before a process opens the SQLite file: its mode and where its path leads.

The file holds task arguments and results, so it is created readable and
writable by its owner only (0600). SQLite gives the ``-wal`` and ``-shm`` files
it creates beside it the same mode as the database file.

A path in a directory other users can write to could be a symbolic link one of
them planted, sending the queue (and what tasks return) to a file of their
choosing: a link owned by anyone but this process's user or root is refused.
A directory writable by everyone without the sticky bit (``/tmp`` has it) lets
anyone replace the file itself, so it draws a warning, as does an existing
database file that every user may read or write. See docs/security.md.
"""

from __future__ import annotations

import logging
import os
import stat

from gopherq.errors import BrokerUnavailable, ConfigurationError

logger = logging.getLogger("gopherq.sqlite")

FILE_MODE = 0o600
# O_NOFOLLOW and O_CLOEXEC are POSIX: elsewhere the open goes without them.
_CREATE = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
_SIDE_FILES = ("-wal", "-shm")
_warned: set[str] = set()  # paths already warned about, once per process


def prepare_file(path: str) -> None:
    """Check the database at ``path`` and create it with mode 0600 if it is missing.

    Raises ``ConfigurationError`` when the path (or the ``-wal`` or ``-shm`` beside
    the file it leads to) is a symbolic link owned by another user than this
    process's or root, ``BrokerUnavailable`` when the file cannot be created.
    """
    _check_link(path)
    real = os.path.realpath(path)
    for suffix in _SIDE_FILES:
        _check_link(real + suffix)
    for directory in {os.path.dirname(path), os.path.dirname(real)}:
        _check_directory(directory)
    try:
        os.close(os.open(real, _CREATE, FILE_MODE))
    except FileExistsError:
        _check_existing(real)
    except OSError as exc:
        raise BrokerUnavailable(f"SQLite {path}: cannot create the file: {exc.strerror}") from exc


def _check_link(path: str) -> None:
    try:
        info = os.lstat(path)
    except OSError:  # missing, or unreadable: opening it says more
        return
    if stat.S_ISLNK(info.st_mode) and info.st_uid not in (_euid(), 0):
        raise ConfigurationError(
            f"refusing SQLite path {path}: a symbolic link owned by another user "
            f"(uid {info.st_uid}) could redirect the queue; use the real path"
        )


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else 0  # no user ids outside POSIX


def _check_directory(directory: str) -> None:
    try:
        mode = os.stat(directory or ".").st_mode
    except OSError:
        return
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        _warn_once(
            directory,
            "SQLite file in %s: every user may write to that directory (and it lacks the "
            "sticky bit), so anyone can replace the database; use a private directory",
            directory,
        )


def _check_existing(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and mode & (stat.S_IROTH | stat.S_IWOTH):
        _warn_once(
            path,
            "SQLite file %s is open to every user (mode %03o); chmod 600 it and its -wal "
            "and -shm files",
            path,
            stat.S_IMODE(mode),
        )


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)
