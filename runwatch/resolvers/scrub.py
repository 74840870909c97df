"""Scrubbing secrets out of free text (log messages, error summaries) before it is stored.

Runners paste whatever their tools print, and tools print credentials: connection strings,
`password=…` pairs, command lines, provider API keys. Nothing like that should reach runwatch's
database, its webhooks or its screens.

It finds *secrets*, not words: a credential's whole value is replaced (a quoted value to its
closing quote, an unquoted one to the next space, `;` or `&`, commas and brackets included
unless they end it), and ordinary text that merely names a credential ("password reset email
sent", "token count: 42", "max_tokens=4096") is left alone. The rules are a table (`RULES`)
drawn from Yelp's detect-secrets plugins (keyword, AWS, Slack, Stripe, JWT, private key,
basic-auth, npm, SendGrid, Twilio, Azure storage, …) and gitleaks' rules; there is no entropy
rule, so hashes, UUIDs and ids survive. detect-secrets itself was not taken as a dependency:
it reports each finding's value rather than its span (redacting would take a second search),
runs one regex per plugin (two dozen passes per line on the log append path), and its entropy
plugins would redact commit hashes.
Here every rule is one alternative of a single precompiled pattern: one pass per text.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Credential names whose value follows `=`, `:`, `=>` or `->`. A name matches when it *ends*
# with one of these (`db_password`, `PGPASSWORD`, `client-secret`, `AccountKey`), so that
# `token_count`, `max_tokens` and `password_reset` are not credential names.
_NAMES = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|account[_-]?key"
    r"|shared[_-]?access[_-]?key|shared[_-]?access[_-]?signature|private[_-]?key"
    r"|credentials?|client[_-]?secret|auth[_-]?key"
)
# Short names that only count as a whole word or after `_`, `.`, `-` (`pass=`, `db.pwd=`,
# `&sig=`), so that `bypass=` or `passed=` are not credentials.
_SHORT_NAMES = r"pass|pwd|sig|auth"
# A value after a separator: quoted (to the closing quote), or unquoted up to whitespace,
# a quote, `;` or `&`; trailing `,` `)` `}` `]` before such an end belong to the text. Written
# as runs of value characters joined by runs of punctuation (possessive, disjoint classes) so
# that it is linear in the text's length.
_VALUE = (
    r"""(?:"(?P<dq>(?:[^"\\\n]|\\.)*)"|'(?P<sq>(?:[^'\\\n]|\\.)*)'|(?P<ph><[^<>\n]{1,80}>)"""
    r"""|(?P<bare>[^\s"'`;&,)}\]]++(?:[,)}\]]++[^\s"'`;&,)}\]]++)*+))"""
)
# Values that stand for no secret: placeholders, masks, references to where the secret is.
_NOT_A_SECRET = re.compile(
    r"(?:null|none|nil|true|false|undefined|redacted|hidden|masked|\*+|x{3,}|\.{3}|…"
    r"|\[REDACTED\]?|<[^<>]*>|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{\{[^{}]*\}\}|%\([\w]+\)s)",
    re.IGNORECASE,
)

# Names whose bare value is redacted whatever it looks like (a password can be a word); after
# other names (token, secret, key…) a bare value must look machine-made.
_PASSWORD_NAME = re.compile(r"pass|pwd", re.IGNORECASE)
_MACHINE_MADE = re.compile(r"[0-9+/=_.~%!@#$^*-]|[a-z][A-Z]|[A-Z]{2}[a-z]")

# (name, pattern): each pattern is one alternative of the combined expression, most opening
# with a lookahead on their first character so that ordinary text fails fast; its named
# groups `keep` (text kept before the secret) and `secret` say what is replaced. A rule
# without `secret` is replaced whole.
RULES: tuple[tuple[str, str], ...] = (
    # -----BEGIN RSA PRIVATE KEY----- … -----END RSA PRIVATE KEY----- (GCP service-account
    # JSON holds one with `\n` escapes: the same block). An unterminated block to the end.
    ("private_key_block",
     r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
     r"(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"),
    # Webhook URLs that are their own credential: only the host stays.
    ("slack_webhook",
     r"(?P<keep_slack>https?://hooks\.slack\.com/)(?P<secret_slack>(?:services|workflows"
     r"|triggers)/[A-Za-z0-9+/_=-]+)"),
    ("discord_webhook",
     r"(?P<keep_discord>https?://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/)"
     r"(?P<secret_discord>\d+/[A-Za-z0-9_-]+)"),
    # scheme://user:password@host: the password, to the last `@` of the authority (a
    # password may hold `@`: postgres://app:p@ss@db). Matched from `://` (the scheme stays
    # as it is), which is cheaper than trying a scheme at every word.
    ("url_password",
     r"(?P<keep_url>(?<=[A-Za-z0-9])://[^\s/:@]*:)(?P<secret_url>[^\s/]+)(?=@)"),
    # Authorization: Bearer …/Basic …/Token …; a bare `Bearer xyz` only when xyz looks like
    # a credential (a digit or symbol, or a lower-to-upper case change) and not a word.
    ("authorization_header",
     r"(?P<keep_auth>(?=[BTD])\b(?:Bearer|Basic|Token|Digest)\s+)(?P<secret_auth>"
     r"(?=[A-Za-z0-9._~+/=-]*?(?:[0-9._~+/=-]|[a-z][A-Z]))[A-Za-z0-9._~+/=-]{8,})"),
    # curl -u user:pass / --user user:pass / --proxy-user: the password.
    ("basic_auth_flag",
     r"(?P<keep_curl>(?=-)(?<![\w-])(?:-u|--user|--proxy-user|-U)(?:\s+|=)[\"']?[^\s:\"']+:)"
     r"(?P<secret_curl>[^\s\"']+)"),
    # --password X, --password=X, --db-token "X", --api-key=X.
    ("cli_flag",
     r"(?P<keep_flag>(?=-)(?<![\w-])--?[\w-]*?(?:" + _NAMES + r"|pass|pwd)(?:=|\s+))"
     r"(?P<secret_flag>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|[^\s\"'-][^\s\"']*)"),
    # SQL: IDENTIFIED BY 'x', PASSWORD 'x'.
    ("sql_password",
     r"(?=[IiPp])(?i:(?P<keep_sql>\b(?:IDENTIFIED\s+BY|PASSWORD)\s+))"
     r"(?P<secret_sql>'(?:[^'\n]|'')*')"),
    # name=value pairs: `password="correct horse"`, `"api_key": "k"`, `token: abc`,
    # `AccountKey=…;`, `&sig=…`. The match starts at the name's last word (`db_password`
    # matches from `password`): what comes before it is kept anyway. The lookahead on the
    # names' first letters lets most positions fail at once (a 5x saving on ordinary text).
    ("credential_pair",
     r"(?P<keep_pair>(?=[acpstACPST])(?i:(?:" + _NAMES + r")|(?:(?<![\w.-])|(?<=[_.-]))(?:"
     + _SHORT_NAMES + r"))\b[\"']?\s*(?:=>|->|=|:)\s*)" + _VALUE),
    # Provider keys recognisable on their own (gitleaks / detect-secrets shapes).
    ("provider_key",
     r"\b(?:"
     r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16}"  # AWS
     r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
     r"|glpat-[A-Za-z0-9_-]{20,}|gldt-[A-Za-z0-9_-]{20,}"  # GitLab
     r"|xox[abposre]-[A-Za-z0-9-]{8,}|xapp-\d-[A-Za-z0-9-]{10,}"  # Slack
     r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}|whsec_[A-Za-z0-9+/=]{16,}"  # Stripe
     r"|AIza[0-9A-Za-z_-]{30,}"  # Google API keys
     r"|sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
     r"|npm_[A-Za-z0-9]{36}"  # npm
     r"|pypi-[A-Za-z0-9_-]{50,}"  # PyPI
     r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"  # SendGrid
     r"|SK[0-9a-fA-F]{32}"  # Twilio API keys
     r"|key-[0-9a-f]{32}"  # Mailgun
     r"|[0-9a-f]{32}-us\d{1,2}"  # Mailchimp
     r"|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"  # Shopify
     r"|hv[sb]\.[A-Za-z0-9_-]{24,}"  # HashiCorp Vault
     r"|dop_v1_[a-f0-9]{64}"  # DigitalOcean
     r"|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,}"  # Square
     r"|rw_[0-9a-f]{4,16}_[A-Za-z0-9_-]{16,}"  # runwatch's own tokens
     r")\b"),
    # JSON Web Tokens: three base64url segments, the first two JSON objects (`eyJ`).
    ("jwt", r"(?=e)\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"),
)
_PATTERN = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in RULES))
_SUFFIX = {"slack_webhook": "slack", "discord_webhook": "discord", "url_password": "url",
           "authorization_header": "auth", "basic_auth_flag": "curl", "cli_flag": "flag",
           "sql_password": "sql"}


def _pair(match: re.Match[str]) -> str:
    if match.group("ph") is not None:  # `api_key=<your key here>`
        return match.group(0)
    for group, quote in (("dq", '"'), ("sq", "'"), ("bare", "")):
        value = match.group(group)
        if value is None:
            continue
        if not value or _NOT_A_SECRET.fullmatch(value):
            return match.group(0)
        # A bare word after a token-like name is prose ("Token: expected ':'"); a password
        # may be any word.
        if group == "bare" and not _PASSWORD_NAME.search(match.group("keep_pair")) \
                and not _MACHINE_MADE.search(value) and len(value) < 20:
            return match.group(0)
        return f"{match.group('keep_pair')}{quote}{REDACTED}{quote}"
    return match.group(0)


def _replace(match: re.Match[str]) -> str:
    rule = match.lastgroup
    if rule == "credential_pair":
        return _pair(match)
    suffix = _SUFFIX.get(rule or "")
    if suffix is None:
        return REDACTED
    secret = match.group(f"secret_{suffix}")
    if rule == "cli_flag" and _NOT_A_SECRET.fullmatch(secret.strip("\"'")):
        return match.group(0)
    quote = secret[0] if secret[:1] in {'"', "'"} and rule in {"cli_flag", "sql_password"} \
        else ""
    return f"{match.group(f'keep_{suffix}')}{quote}{REDACTED}{quote}"


def scrub(text: str) -> str:
    """The text with every secret it appears to hold replaced by `[REDACTED]`."""
    return _PATTERN.sub(_replace, text)


def clean_text(text: str, limit: int) -> str:
    """Free text as it is stored: NUL (which PostgreSQL cannot store) made visible, secrets
    scrubbed, and an over-long text truncated with a visible marker rather than refused."""
    text = scrub(text.replace("\x00", "\ufffd"))
    if len(text) <= limit:
        return text
    return f"{text[:limit]} …[truncated {len(text) - limit} characters]"
