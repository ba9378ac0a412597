"""Copy a data directory's models into PostgreSQL: ``python -m service.postgres.migrate DATA_DIR``.

Every version under ``DATA_DIR/models`` is read, verified exactly as a load verifies it
(sha256, arrays, hidden_units) and inserted with its bytes unchanged, so its id, metadata and
checksum are the same in the database. A damaged version is refused with a line saying why and
the others are still copied. ``CURRENT`` becomes the database's current version only when the
database has none yet: a second run (or a run after replicas have trained and activated newer
versions) never moves the served model back. Running it again copies nothing new.

The database URL comes from ``IRIS_DATABASE_URL``. Exit status: 0 when every version is in the
database, 1 when a version was refused or the database could not be reached, 2 for a usage
error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import (
    CorruptModelError,
    DanglingCurrentError,
    ModelStoreError,
    NoCurrentModelError,
    StoreUnavailableError,
)
from model.persistence import CURRENT, METADATA, WEIGHTS, ModelStore
from service.postgres import migrations
from service.postgres.connection import Database, DatabaseUnavailableError
from service.postgres.models import PostgresModelStore


@dataclass
class MigrationReport:
    """What a run did, version by version."""

    schema_version: int = 0
    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    current: str | None = None
    """The database's current version after the run."""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"database schema version {self.schema_version}"]
        out += [f"copied {version}" for version in self.copied]
        out += [f"already in the database {version}" for version in self.present]
        out += [f"refused {version}: {reason}" for version, reason in self.refused]
        out += self.notes
        out.append(
            f"{len(self.copied)} copied, {len(self.present)} already there, "
            f"{len(self.refused)} refused"
        )
        return out


def migrate_data_dir(data_dir: str | Path, url: str) -> MigrationReport:
    """Copy every valid version of ``data_dir`` and its CURRENT into the database at ``url``.

    Raises StoreUnavailableError when the database cannot be reached, FileNotFoundError when
    ``data_dir`` holds no models directory.
    """
    files = ModelStore(Path(data_dir) / "models")
    if not files.root.is_dir():
        raise FileNotFoundError(f"{files.root} is not a directory: nothing to migrate")
    report = MigrationReport()
    with Database(url, max_size=2, name="iris-migrate") as db:
        try:
            with db.connection() as conn:
                report.schema_version = migrations.apply(conn)
        except DatabaseUnavailableError as error:  # the operator's command: say where and why
            raise StoreUnavailableError(f"the database is unavailable: {error.reason}") from None
        store = PostgresModelStore(db)
        stored = set(store.versions())
        for version in files.versions():
            _copy(files, store, version, version in stored, report)
        _copy_current(files, store, report)
    return report


def _copy(
    files: ModelStore,
    store: PostgresModelStore,
    version: str,
    stored: bool,
    report: MigrationReport,
) -> None:
    path = files.path(version)
    try:
        metadata = (path / METADATA).read_text(encoding="utf-8")
        weights = (path / WEIGHTS).read_bytes()
    except (OSError, UnicodeDecodeError) as error:
        report.refused.append((version, f"cannot read it: {error}"))
        return
    if stored:
        _compare(store, version, metadata, report)
        return
    try:
        inserted = store.insert_verified(version, metadata, weights)
    except CorruptModelError as error:
        report.refused.append((version, str(error)))
        return
    (report.copied if inserted else report.present).append(version)


def _compare(
    store: PostgresModelStore, version: str, metadata: str, report: MigrationReport
) -> None:
    """A version already in the database must be the same one (same weights checksum)."""
    try:
        ours = json.loads(metadata).get("weights_sha256")
    except (json.JSONDecodeError, AttributeError):
        ours = None
    try:
        theirs = store.summary(version).get("weights_sha256")
    except CorruptModelError as error:
        report.refused.append((version, f"the copy in the database is damaged: {error}"))
        return
    if ours != theirs:
        report.refused.append(
            (version, "differs from the version of that id in the database (left unchanged)")
        )
    else:
        report.present.append(version)


def _copy_current(files: ModelStore, store: PostgresModelStore, report: MigrationReport) -> None:
    try:
        wanted: str | None = files.current()
    except NoCurrentModelError:
        wanted = None
        report.notes.append(f"{files.root / CURRENT} is missing: no version to activate")
    except DanglingCurrentError as error:
        wanted = None
        report.notes.append(f"{error}: no version to activate")
    refused = {version for version, _ in report.refused}
    if wanted is not None and wanted in refused:
        report.notes.append(f"CURRENT names {wanted}, which was refused: not activated")
        wanted = None
    if wanted is None:
        try:
            report.current = store.current()
        except ModelStoreError:
            report.current = None
        return
    before = store.activate_if_none(wanted)
    if before is None:
        report.notes.append(f"activated {wanted} (CURRENT)")
        report.current = wanted
    elif before == wanted:
        report.notes.append(f"{wanted} (CURRENT) is already the database's current version")
        report.current = wanted
    else:
        report.notes.append(
            f"kept the database's current version {before}; "
            f"the data directory's CURRENT is {wanted} (activate it to switch)"
        )
        report.current = before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="iris-serve migrate",
        description="Copy DATA_DIR's model versions and CURRENT into the database named by "
        "IRIS_DATABASE_URL (idempotent; every checksum verified).",
    )
    parser.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        type=Path,
        nargs="?",
        default=Path(os.environ.get("IRIS_DATA_DIR", "data")),
        help="the data directory to copy (default: IRIS_DATA_DIR, else ./data)",
    )
    args = parser.parse_args(argv)
    url = os.environ.get("IRIS_DATABASE_URL", "").strip()
    if not url:
        print(
            "migrate: IRIS_DATABASE_URL is not set: name the database to copy into", file=sys.stderr
        )
        return 2
    try:
        report = migrate_data_dir(args.data_dir, url)
    except FileNotFoundError as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 2
    except (StoreUnavailableError, ModelStoreError) as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 1 if report.refused else 0


if __name__ == "__main__":
    sys.exit(main())
