"""The login the ``iris`` command line keeps: a URL and a token in a per-user file.

``$XDG_CONFIG_HOME/iris/config.json`` (``~/.config/iris/config.json`` by default), the
directory 0700 and the file 0600, created so from the start (never chmod-ed after a write
that others could have read). Standard library only: ``iris --help`` reads nothing of it.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from iris_client.errors import InputError

FILE_NAME = "config.json"


@dataclass(frozen=True)
class Login:
    """What ``iris login`` saved: the server's URL and its token."""

    url: str
    token: str


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/iris``; a relative XDG_CONFIG_HOME is ignored, as the spec says."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "iris"


def config_path() -> Path:
    return config_dir() / FILE_NAME


def load(path: Path | None = None) -> Login | None:
    """The saved login, or None when there is none; InputError for a file others can read."""
    path = path or config_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    with os.fdopen(fd, encoding="utf-8") as stream:
        mode = stat.S_IMODE(os.fstat(stream.fileno()).st_mode)
        if mode & 0o077:
            raise InputError(
                f"{path} holds a token and is accessible by group or others (mode {mode:04o}): "
                f"run 'chmod 600 {path}', or 'iris logout' and 'iris login' again"
            )
        try:
            data = json.load(stream)
        except (ValueError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not the JSON 'iris login' writes ({error})") from None
    url, token = (data.get("url"), data.get("token")) if isinstance(data, dict) else (None, None)
    if not isinstance(url, str) or not isinstance(token, str):
        raise InputError(f"{path}: expected a JSON object with a 'url' and a 'token'")
    return Login(url=url, token=token)


def save(login: Login, path: Path | None = None) -> Path:
    """Write the login, mode 0600 from its creation, replacing any older one whole."""
    path = path or config_path()
    _make_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump({"url": login.url, "token": login.token}, stream)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove(path: Path | None = None) -> Path | None:
    """Delete the saved login; its path, or None when there was none."""
    path = path or config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


def _make_private_dir(directory: Path) -> None:
    """``directory`` (ours: 0700) and any missing parent (0700, as XDG asks of its base)."""
    for parent in reversed(directory.parents):
        if not parent.exists():
            parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    directory.chmod(0o700)
