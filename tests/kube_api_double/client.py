"""A minimal HTTPS client for tests that talk to the API double directly."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request


def call(double, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    """One HTTPS request to the API double, TLS verified against its CA data (as the connection does)."""
    context = ssl.create_default_context(cadata=base64.b64decode(double.ca_data).decode())
    request = urllib.request.Request(double.url + path, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"},
        data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)
