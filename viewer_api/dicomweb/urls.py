"""The absolute base URL of ``/dicomweb`` for the URLs DICOMweb answers carry (RetrieveURL,
BulkDataURI, PS3.18 F.2.6)."""

from __future__ import annotations

from fastapi import Request

__all__ = ["dicomweb_base"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def dicomweb_base(request: Request) -> str:
    """``HUB_DICOMWEB_BASE_URL`` if set, else scheme://host[:port]/dicomweb from the request.

    Some clients (dicomweb-client) send a Host header without the port; when that host is
    the server's own address or loopback, the port the request came in on is added.
    """
    configured = request.app.state.hub.settings.dicomweb_base_url
    if configured:
        return str(configured).rstrip("/")
    base = str(request.base_url).rstrip("/")
    host = request.headers.get("host", "")
    server = request.scope.get("server")
    if host and ":" not in host.rsplit("]", 1)[-1] and server:
        address, port = server
        default = _DEFAULT_PORTS.get(request.url.scheme)
        if port and port != default and (host in _LOOPBACK or host == address):
            base = f"{request.url.scheme}://{host}:{port}{request.scope.get('root_path', '')}"
    return f"{base}/dicomweb"
