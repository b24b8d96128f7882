"""The one HTTP client for OpenAI-compatible endpoints (`kifabrik serve`, vLLM, llama.cpp's server).

Plain urllib: no extra dependency, and the URL is always one the user named.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from kifabrik.errors import KifabrikError


def post_json(url: str, body: dict[str, Any], *, api_key: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """POST `body` as JSON and return the JSON answer; HTTP and connection errors become one clear error."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    req = urllib.request.Request(url, json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the user names the URL
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise KifabrikError(f"{url}: HTTP {exc.code}: {detail}", hint="check the endpoint URL, model name and API key") from None
    except (urllib.error.URLError, OSError) as exc:
        raise KifabrikError(f"{url}: cannot reach the endpoint ({exc})", hint="is the server running?") from None
    except json.JSONDecodeError:
        raise KifabrikError(f"{url}: the answer is not JSON", hint="is this an OpenAI-compatible endpoint?") from None
