"""kproxy's own refusals as HTTP responses: Kubernetes ``Status`` objects.

kubectl and client-go print the ``message`` of a ``Status`` body as they print the API
server's own refusals, so every failure kproxy reports takes this one shape.
"""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web

from kproxy.errors import KproxyError

CONTENT_TYPE: Final = "application/json"


def status_response(error: KproxyError) -> web.Response:
    """Render ``error`` as the HTTP response carrying its ``Status`` object."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return web.Response(
        status=error.status_code,
        body=json.dumps(error.to_status()).encode(),
        content_type=CONTENT_TYPE,
        headers=headers,
    )
