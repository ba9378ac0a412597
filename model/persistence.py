"""The versioned model store: atomic, checksummed, verified on load.

Layout under ``root`` (``DATA_DIR/models``)::

    <version>/weights.npz   W1 b1 W2 b2 mean std (float64, read with allow_pickle=False)
    <version>/model.json    format version, classes, features, hyperparameters, metrics,
                            history, created_at, sha256 of weights.npz
    CURRENT                 the active version id
    ACTIVATIONS             every version ever made current, one id a line, oldest first
    .versions.lock          held (flock) while CURRENT moves or a version is deleted

A version is written into a temporary directory beside its final place, fsynced, and renamed
into place; CURRENT is replaced with os.replace. A reader never sees half a model, and a
crashed writer leaves only a ``.tmp-<pid>-*`` entry, which :meth:`ModelStore.clean` removes
once that process is gone. ACTIVATIONS is only appended to (and fsynced) after CURRENT moved;
a torn last line is ignored on read, so the log names only versions that were served.

A version is deleted by renaming its directory to a ``.tmp-<pid>-*`` name, then removing it:
once renamed it is gone for every reader, and a crash part-way leaves a leftover that
:meth:`ModelStore.clean` removes. Activating and deleting hold one lock (``.versions.lock``)
across processes, so CURRENT never comes to name a version deleted meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.data import CLASSES, FEATURES
from model.errors import (
    ChecksumMismatchError,
    CorruptModelError,
    DanglingCurrentError,
    InvalidVersionError,
    ModelInUseError,
    ModelNotFoundError,
    NoCurrentModelError,
    NonFiniteWeightsError,
    ShapeError,
    StoreWriteError,
    UnreadableModelError,
)
from model.network import N_CLASSES, N_FEATURES, Model, Params, Standardizer

DEFAULT_DATA_DIR = Path("data")
"""The data directory when none is given (relative to the working directory)."""
FORMAT_VERSION = 1
WEIGHTS = "weights.npz"
METADATA = "model.json"
CURRENT = "CURRENT"
ACTIVATIONS = "ACTIVATIONS"
LOCK = ".versions.lock"
SUMMARY_CACHE_SIZE = 1024  # metadata without history: a few hundred bytes each
ARRAY_NAMES = ("W1", "b1", "W2", "b2", "mean", "std")
# UTC creation time to the microsecond, then 8 random hex digits: sorts by creation, and
# unique across processes (a clash is also caught by the rename into place).
VERSION_PATTERN = r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}$"
_VERSION_RE = re.compile(VERSION_PATTERN)
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StoredModel:
    version: str
    model: Model
    metadata: dict[str, Any]


def new_version_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def check_version_id(version: str) -> str:
    """Return ``version`` if well formed; anything else (a path, say) is refused."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise InvalidVersionError(f"{version!r} is not a version id (like {new_version_id()})")
    return version


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_bytes(model: Model) -> bytes:
    buffer = io.BytesIO()
    arrays = model.params.arrays() | {
        "mean": model.standardizer.mean,
        "std": model.standardizer.std,
    }
    contiguous: dict[str, Any] = {k: np.ascontiguousarray(v, np.float64) for k, v in arrays.items()}
    np.savez(buffer, **contiguous)
    return buffer.getvalue()


def parse_weights(data: bytes, where: str) -> Model:
    """Read and verify the arrays of weights.npz: names, dtypes, shapes, finiteness."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = set(npz.files)
            if names != set(ARRAY_NAMES):
                raise ShapeError(
                    f"{where}: arrays {sorted(names)}, expected exactly {list(ARRAY_NAMES)}"
                )
            arrays = {name: npz[name] for name in ARRAY_NAMES}
    except ValueError as error:  # object arrays refuse to load without pickle
        if isinstance(error, CorruptModelError):
            raise
        raise UnreadableModelError(f"{where}: {error}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError) as error:
        raise UnreadableModelError(f"{where}: not a readable npz archive ({error})") from None

    for name, array in arrays.items():
        if array.dtype != np.float64:
            raise ShapeError(f"{where}: {name} has dtype {array.dtype}, expected float64")
    H = arrays["W1"].shape[0] if arrays["W1"].ndim == 2 else -1
    expected = {
        "W1": (H, N_FEATURES),
        "b1": (H,),
        "W2": (N_CLASSES, H),
        "b2": (N_CLASSES,),
        "mean": (N_FEATURES,),
        "std": (N_FEATURES,),
    }
    for name, shape in expected.items():
        if H < 1 or arrays[name].shape != shape:
            raise ShapeError(f"{where}: {name} has shape {arrays[name].shape}, expected {shape}")
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise NonFiniteWeightsError(f"{where}: {name} holds NaN or infinite values")
    if not (arrays["std"] > 0).all():
        raise NonFiniteWeightsError(f"{where}: std must be positive, got {arrays['std'].tolist()}")
    return Model(
        params=Params(W1=arrays["W1"], b1=arrays["b1"], W2=arrays["W2"], b2=arrays["b2"]),
        standardizer=Standardizer(mean=arrays["mean"], std=arrays["std"]),
    )


def version_metadata(
    version: str, model: Model, weights: bytes, info: Mapping[str, Any] | None
) -> dict[str, Any]:
    """model.json of a new version: ``info`` (hyperparameters, metrics, history, ...) and
    what every store records of it, the weights' sha256 among them."""
    return {
        **dict(info or {}),
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "classes": list(CLASSES),
        "features": list(FEATURES),
        "hidden_units": model.params.hidden_units,
        "weights_sha256": sha256(weights),
    }


def parse_metadata(version: str, text: str) -> dict[str, Any]:
    """model.json's content, checked: an object with a weights checksum, in this format."""
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableModelError(f"version {version}: {METADATA} is not JSON: {error}") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("weights_sha256"), str):
        raise UnreadableModelError(f"version {version}: {METADATA} has no weights_sha256")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UnreadableModelError(
            f"version {version}: format_version {metadata.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    return metadata


def verified(version: str, metadata: dict[str, Any], weights: bytes, kind: str) -> StoredModel:
    """A stored version, once its weights match their checksum, read as valid arrays (names,
    dtypes, shapes, finite) and agree with the metadata's hidden_units. ``kind`` names where
    the bytes lived ("file", "row") in the error."""
    if sha256(weights) != metadata["weights_sha256"]:
        raise ChecksumMismatchError(
            f"version {version}: {WEIGHTS} does not match its recorded sha256 "
            f"(the {kind} is damaged or was changed)"
        )
    model = parse_weights(weights, f"version {version}")
    if metadata.get("hidden_units") != model.params.hidden_units:
        raise ShapeError(
            f"version {version}: {METADATA} says hidden_units "
            f"{metadata.get('hidden_units')!r}, the weights have {model.params.hidden_units}"
        )
    return StoredModel(version=version, model=model, metadata=metadata)


class ModelStore:
    """Versions of the model under one directory (``DATA_DIR/models``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # version -> (model.json's inode, size, mtime in ns), its summary
        self._summaries: OrderedDict[str, tuple[tuple[int, int, int], dict[str, Any]]] = (
            OrderedDict()
        )
        self._summaries_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------

    def path(self, version: str) -> Path:
        return self.root / check_version_id(version)

    def versions(self) -> list[str]:
        """Every stored version id, oldest first (ids sort by creation)."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if _VERSION_RE.fullmatch(entry.name) and entry.is_dir()
        )

    def current(self) -> str:
        """The active version id; raises if CURRENT is missing or names no stored version."""
        try:
            text = (self.root / CURRENT).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise NoCurrentModelError(
                f"no active model: {self.root / CURRENT} is missing"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise DanglingCurrentError(f"cannot read {self.root / CURRENT}: {error}") from None
        if not _VERSION_RE.fullmatch(text) or not (self.root / text).is_dir():
            raise DanglingCurrentError(
                f"{self.root / CURRENT} names {text[:80]!r}, which is not a stored version"
            )
        return text

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.path(version)
        try:
            text = (path / METADATA).read_text(encoding="utf-8")
        except FileNotFoundError:
            if not path.is_dir():
                raise ModelNotFoundError(f"no stored model version {version}") from None
            raise UnreadableModelError(f"version {version}: {METADATA} is missing") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UnreadableModelError(f"version {version}: {METADATA}: {error}") from None
        return parse_metadata(version, text)

    def summary(self, version: str) -> dict[str, Any]:
        """model.json without its per-epoch history, cached.

        A stored version never changes, but a version directory can be removed or restored
        by hand: each call checks model.json's inode, size and mtime (one stat) and reads it
        again when they differ, or raises as :meth:`metadata` does when it is gone.
        """
        try:
            stat = (self.path(version) / METADATA).stat()
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            signature = None
        with self._summaries_lock:
            cached = self._summaries.get(version)
            if cached is not None and signature is not None and cached[0] == signature:
                self._summaries.move_to_end(version)
                return cached[1]
            self._summaries.pop(version, None)
        summary = {k: v for k, v in self.metadata(version).items() if k != "history"}
        if signature is not None:  # taken before the read: a change during it is seen next
            with self._summaries_lock:
                self._summaries[version] = (signature, summary)
                while len(self._summaries) > SUMMARY_CACHE_SIZE:
                    self._summaries.popitem(last=False)
        return summary

    def activations(self) -> list[str]:
        """Versions ever made current, oldest first, each once at its latest activation.

        Lines that are not version ids (a torn last write, damage) are skipped.
        """
        try:
            text = (self.root / ACTIVATIONS).read_bytes().decode("ascii", errors="replace")
        except OSError:
            return []
        latest: dict[str, int] = {}
        for number, line in enumerate(text.split("\n")):
            if _VERSION_RE.fullmatch(line):
                latest.pop(line, None)
                latest[line] = number
        return list(latest)

    def load(self, version: str) -> StoredModel:
        """Load and verify a version: checksum, array names, shapes, dtypes, finiteness."""
        metadata = self.metadata(version)
        try:
            data = (self.path(version) / WEIGHTS).read_bytes()
        except OSError as error:
            if not self.path(version).is_dir():  # deleted since its metadata was read
                raise ModelNotFoundError(f"no stored model version {version}") from None
            raise UnreadableModelError(f"version {version}: {WEIGHTS}: {error}") from None
        return verified(version, metadata, data, "file")

    def load_current(self) -> StoredModel:
        return self.load(self.current())

    # -- writing -------------------------------------------------------------------------

    def save(
        self, model: Model, info: Mapping[str, Any] | None = None, *, activate: bool = False
    ) -> str:
        """Store ``model`` as a new version (and make it current if asked); returns its id.

        ``info`` adds keys to model.json (hyperparameters, metrics, history, ...).
        """
        with translate_os_errors(f"cannot save the model in {self.root}"):
            self.root.mkdir(parents=True, exist_ok=True)
            weights = weights_bytes(model)
            tmp = self.root / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            tmp.mkdir()
            try:
                write_file(tmp / WEIGHTS, weights)
                version = self._place(tmp, model, weights, dict(info or {}))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(self.root)
        if activate:
            self.activate(version)
        return version

    def _place(self, tmp: Path, model: Model, weights: bytes, info: dict[str, Any]) -> str:
        """Write model.json for a fresh id and rename ``tmp`` to it, retrying on a clash."""
        for _ in range(5):
            version = new_version_id()
            metadata = version_metadata(version, model, weights, info)
            meta_path = tmp / METADATA
            meta_path.unlink(missing_ok=True)
            write_file(meta_path, json.dumps(metadata, indent=2, allow_nan=False).encode())
            fsync_dir(tmp)
            try:
                os.rename(tmp, self.root / version)
                return version
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        raise StoreWriteError("could not find a free version id after 5 tries")

    def activate(self, version: str) -> None:
        """Point CURRENT at ``version`` after verifying it (roll forward or back)."""
        self.load(version)
        what = f"cannot activate version {version} in {self.root}"
        with self._locked(what), translate_os_errors(what):
            if not self.path(version).is_dir():  # deleted since it was verified
                raise ModelNotFoundError(f"no stored model version {version}")
            tmp = self.root / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.current"
            try:
                write_file(tmp, (version + "\n").encode("ascii"))
                os.replace(tmp, self.root / CURRENT)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(self.root)
            self._log_activation(version)

    def delete(self, version: str) -> None:
        """Remove a stored version; the one CURRENT names is refused (ModelInUseError).

        Under the lock that activation holds, the version's directory is renamed away (from
        then on no reader finds it), then removed. ACTIVATIONS keeps its id: a version named
        there that is gone is skipped by whoever falls back.
        """
        path = self.path(version)
        if not path.is_dir():
            raise ModelNotFoundError(f"no stored model version {version}")
        what = f"cannot delete version {version} in {self.root}"
        with self._locked(what):
            if self._named_current() == version:
                raise ModelInUseError(
                    f"version {version} is the current version (the one served): "
                    "activate another version first"
                )
            trash = self.root / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.deleted"
            with translate_os_errors(what):
                try:
                    os.rename(path, trash)
                except FileNotFoundError:  # deleted by another process meanwhile
                    raise ModelNotFoundError(f"no stored model version {version}") from None
                fsync_dir(self.root)
        with self._summaries_lock:
            self._summaries.pop(version, None)
        shutil.rmtree(trash, ignore_errors=True)  # what a crash leaves, clean() removes

    def _named_current(self) -> str | None:
        """The text of CURRENT (None when there is none), valid or not."""
        try:
            return (self.root / CURRENT).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise DanglingCurrentError(
                f"cannot read {self.root / CURRENT}: {error}; nothing was deleted"
            ) from None

    @contextlib.contextmanager
    def _locked(self, what: str) -> Iterator[None]:
        """Exclusive, across processes, while CURRENT moves or a version is deleted."""
        with translate_os_errors(what):
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def adopt_current(self) -> str | None:
        """Start ACTIVATIONS from CURRENT in a store written before the log existed; returns
        the version recorded, None when there was nothing to do."""
        if (self.root / ACTIVATIONS).exists():
            return None
        version = self.current()
        self.load(version)  # only a version that can be served counts as active before
        with translate_os_errors(f"cannot record the activation in {self.root}"):
            self._log_activation(version)
        return version

    def _log_activation(self, version: str) -> None:
        """Append ``version`` to ACTIVATIONS and fsync; a torn previous line is closed first."""
        path = self.root / ACTIVATIONS
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, (("\n" if torn else "") + version + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if size == 0:
            fsync_dir(self.root)

    def clean(self) -> list[str]:
        """Remove leftovers of interrupted writes whose process is gone; returns their names."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for entry in self.root.iterdir():
            if not entry.name.startswith(TMP_PREFIX):
                continue
            pid = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry.name)
        return removed


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def translate_os_errors(what: str) -> Iterator[None]:
    """Turn an OSError of a write (full disk, read-only directory) into a StoreWriteError."""
    try:
        yield
    except StoreWriteError:
        raise
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        where = f" ({error.filename})" if error.filename else ""
        raise StoreWriteError(f"{what}: {reason}{where}") from error
