"""Scrubbing secrets out of free text (log messages, error summaries) before it is stored.

Runners paste whatever their tools print, and tools print credentials: connection strings,
`password=…` pairs, provider API keys. Nothing like that should reach runwatch's database, its
webhooks or its screens. The patterns prefer redacting a harmless string to keeping a secret.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Provider keys recognisable on their own.
_KEYS = re.compile(
    r"""
    \b(?:
        (?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}      # Stripe-style secret/restricted keys
      | (?:AKIA|ASIA)[A-Z0-9]{16}                      # AWS access key ids
      | gh[pousr]_[A-Za-z0-9]{20,}                     # GitHub tokens
      | github_pat_[A-Za-z0-9_]{20,}
      | xox[abposr]-[A-Za-z0-9-]{8,}                   # Slack tokens
      | glpat-[A-Za-z0-9_-]{16,}                       # GitLab
      | AIza[0-9A-Za-z_-]{30,}                         # Google API keys
      | sk-[A-Za-z0-9_-]{20,}                          # OpenAI-style keys
      | rw_[0-9a-f]{4,16}_[A-Za-z0-9_-]{16,}           # runwatch's own tokens
      | whsec_[A-Za-z0-9+/=]{16,}                      # webhook signing secrets
    )
    """,
    re.VERBOSE,
)
# `password=…`, `token: …`, `"api_key": "…"`, `secret -> …`: the value after a credential name.
_PAIRS = re.compile(
    r"""
    (?P<key>\b[\w.-]*?
        (?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key
          |private[_-]?key|client[_-]?secret|credentials?)
    [\w.-]*)
    (?P<sep>["']?\s*(?:=|:|=>|->)\s*["']?)
    (?P<value>[^\s"',;&)}\]]+)
    """,
    re.VERBOSE | re.IGNORECASE,
)
# `scheme://user:secret@host`: the password part of a URL.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<pw>[^/\s@]+)(?=@)",
                           re.IGNORECASE)
# `Authorization: Bearer …` / `Basic …` values.
_AUTH_HEADER = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})")
# A PEM private key block.
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
                  re.DOTALL)


def scrub(text: str) -> str:
    """The text with every secret it appears to hold replaced by `[REDACTED]`."""
    text = _PEM.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['scheme']} {REDACTED}", text)
    text = _PAIRS.sub(
        lambda m: m["value"] if m["value"] == REDACTED
        else f"{m['key']}{m['sep']}{REDACTED}", text)
    return _KEYS.sub(REDACTED, text)


def clean_text(text: str, limit: int) -> str:
    """Free text as it is stored: NUL (which PostgreSQL cannot store) made visible, secrets
    scrubbed, and an over-long text truncated with a visible marker rather than refused."""
    text = scrub(text.replace("\x00", "\ufffd"))
    if len(text) <= limit:
        return text
    return f"{text[:limit]} …[truncated {len(text) - limit} characters]"
