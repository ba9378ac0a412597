"""Job ids and model versions given short: any unique prefix, resolved against a listing.

As git and docker take abbreviated ids: a prefix that names one id is that id; one that
names several is an error listing them; a full id is taken as it is, without a listing.
A model version (``20261202T075322.089393Z-1a2b3c4d``) is shown by the eight hex digits
after its dash, so a prefix of those is taken too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from iris_client.errors import InputError
from iris_client.types import JOB_ID

SHORT = 8
HEX = re.compile(r"[0-9a-f]+")
# The versions iris-serve makes (model/persistence.py VERSION_PATTERN).
FULL_VERSION = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}")
MAX_LISTED = 10


def is_full_job_id(text: str) -> bool:
    return JOB_ID.fullmatch(text) is not None


def is_full_version(text: str) -> bool:
    return FULL_VERSION.fullmatch(text) is not None


def version_key(version: str) -> str:
    """What a table shows of a version: its hex suffix, or the whole of another kind."""
    return version.rsplit("-", 1)[1] if is_full_version(version) else version


def short_ids(ids: Sequence[str], least: int = SHORT) -> dict[str, str]:
    """Each id cut to one length of at least ``least``, long enough to tell them apart."""
    unique = list(dict.fromkeys(ids))
    length = least
    while length < max((len(i) for i in unique), default=0):
        if len({i[:length] for i in unique}) == len(unique):
            break
        length += 1
    return {i: i[:length] for i in unique}


def short_versions(versions: Sequence[str]) -> dict[str, str]:
    """Each version as a table shows it: its hex suffix, or the whole version when that
    is not unique or the version is not of iris-serve's kind."""
    keys = {v: version_key(v) for v in dict.fromkeys(versions)}
    clash = len(set(keys.values())) != len(keys)
    return {v: (v if clash else key) for v, key in keys.items()}


def matches(given: str, candidates: Iterable[str], keys: bool = False) -> list[str]:
    """The candidates that ``given`` names: equal to it, else starting with it (or, with
    ``keys``, whose version key starts with it)."""
    candidates = list(dict.fromkeys(candidates))
    if given in candidates:
        return [given]
    return [
        c
        for c in candidates
        if c.startswith(given)
        or (keys and version_key(c) != c and version_key(c).startswith(given))
    ]


def resolve(given: str, candidates: Iterable[str], what: str, *, keys: bool = False) -> str:
    """The one candidate ``given`` names; InputError when it names none or several."""
    if not given:
        raise InputError(f"an empty {what} names nothing")
    found = matches(given, candidates, keys)
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(f"no {what} starts with {given!r}")
    shown = ", ".join(found[:MAX_LISTED])
    more = f" and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
    raise InputError(f"{what} {given!r} is ambiguous: it could be {shown}{more}")


def check_job_prefix(given: str) -> None:
    if not HEX.fullmatch(given) or len(given) > 32:
        raise InputError(f"{given!r} is not a job id (32 hex digits) or a prefix of one")
