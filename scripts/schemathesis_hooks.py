"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

- `error_shape`: every 4xx and 5xx answer is the JSON `{code, error, hint}` that
  docs/openapi.json promises, each a non-empty string.
- `map_case`: `GET /v1/tasks/{id}/logs?follow=true` streams until the task ends; the
  tasks this run creates never end (no agent runs them), so a follow would only wait
  for the request timeout. Follows are asked as plain reads instead (the follow path
  has its own end-to-end tests).
"""

import schemathesis


@schemathesis.check
def error_shape(ctx, response, case):
    """Every error answer is `{code, error, hint}`."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception:
        raise AssertionError(
            f"{response.status_code} answer is not JSON: {response.text[:200]!r}"
        )
    if not isinstance(body, dict):
        raise AssertionError(f"{response.status_code} answer is not an object: {body!r}")
    missing = [
        key
        for key in ("code", "error", "hint")
        if not isinstance(body.get(key), str) or not body.get(key).strip()
    ]
    if missing:
        raise AssertionError(
            f"{response.status_code} answer lacks {', '.join(missing)}: {body!r}"
        )
    return None


@schemathesis.hook
def map_case(context, case):
    query = case.query
    if isinstance(query, dict) and "follow" in query:
        follow = query["follow"]
        values = follow if isinstance(follow, list) else [follow]
        if any(v in (True, "true") for v in values):
            query["follow"] = "false"
    return case
