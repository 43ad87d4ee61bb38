"""Redaction: evidence is stored and shown; secrets must not be. Values of secret-looking
environment variables and credential-shaped pieces of text are masked."""

from __future__ import annotations

import os
import re
from typing import Mapping

_SECRET_ENV = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY)", re.IGNORECASE)
_SECRET_PATTERNS = (
    re.compile(r"(?i)((?:aws_)?secret_access_key|aws_session_token|password|token|secret)"
               r"(\s*[=:]\s*['\"]?)([^'\"\s,&}]+)"),
    re.compile(r"(?i)(\w+://[^/\s:@]+:)([^@\s/]+)(@)"),  # scheme://user:password@host
    re.compile(r"\bA(?:K|S)IA[A-Z0-9]{16}\b"),  # AWS access key ids (long-term, temporary)
)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with secret values from the environment and credential-looking pieces masked."""
    env = os.environ if environ is None else environ
    for key, value in env.items():
        if value and len(value) >= 4 and _SECRET_ENV.search(key):
            text = text.replace(value, "***")
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)
    return _SECRET_PATTERNS[2].sub("<aws-access-key-id>", text)


__all__ = ["redact"]
