"""The dashboard: the static page at ``/`` and its assets under ``/ui/``, from service/ui/.

The files are read once, when this module is imported, into a fixed table: a request names
an entry of that table or gets a 404 problem, so no request ever reaches the file system.
Every answer carries the page's security headers and an ETag, so a reload costs a 304.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.errors import ProblemError

router = APIRouter(include_in_schema=False)

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time: the ETag makes that a 304 without a body.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of service/ui/ with a known suffix, by name."""
    assets: dict[str, Asset] = {}
    for entry in resources.files("service").joinpath("ui").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in MEDIA_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[entry.name] = Asset(body, MEDIA_TYPES[suffix], etag)
    return assets


ASSETS = load_assets()


def serve(request: Request, asset: Asset) -> Response:
    headers = SECURITY_HEADERS | {"ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
def page(request: Request) -> Response:
    return serve(request, ASSETS["index.html"])


@router.api_route("/ui/{name}", methods=["GET", "HEAD"])
def asset(request: Request, name: str) -> Response:
    found = ASSETS.get(name)
    if found is None:
        raise ProblemError(404, f"no dashboard file {name[:80]!r}", headers=SECURITY_HEADERS)
    return serve(request, found)
