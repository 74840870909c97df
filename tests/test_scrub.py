"""The log scrubber finds secrets, not words (issue 10, finding 9): every real-world secret
shape below loses its whole value, and every look-alike survives unchanged. The secret cases
name the part that must disappear; the rest of the line is free to stay."""

from __future__ import annotations

import time

import pytest

from runwatch.resolvers.scrub import REDACTED, clean_text, scrub

A40 = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYab"
HEX32 = "0123456789abcdef0123456789abcdef"
B64_88 = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")

# (text, the part that must not survive)
SECRETS: list[tuple[str, str]] = [
    # the cases of the issue
    ('connect password="correct HUNTER battery staple" now', "HUNTER battery staple"),
    ("Password=abc,HUNTERdef", "HUNTERdef"),
    ("dsn postgres://app:p@ssHUNTER@db/app", "p@ssHUNTER"),
    ("pg_dump --password HUNTER2x --host db", "HUNTER2x"),
    ("pg_dump --password=HUNTER2x", "HUNTER2x"),
    ("curl -u admin:HUNTERpass https://api.example.com", "HUNTERpass"),
    ("curl --user admin:HUNTERpass https://api.example.com", "HUNTERpass"),
    (f"auth ok token {JWT} accepted", JWT.split(".")[2]),
    ("POST https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/abcDEF123ghiJKL456mnoPQR",
     "abcDEF123ghiJKL456mnoPQR"),
    (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={B64_88};"
     "EndpointSuffix=core.windows.net", B64_88[:40]),
    # AWS
    ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
    ("temp ASIAY34FZKBOKMUTVV7A creds", "ASIAY34FZKBOKMUTVV7A"),
    (f"aws_secret_access_key = {A40}", A40),
    (f"AWS_SECRET_ACCESS_KEY={A40}", A40),
    (f'"SecretAccessKey": "{A40}"', A40),
    # GitHub, GitLab
    ("push with ghp_16C7e42F292c6912E7710c838347Ae178B4a done", "ghp_16C7e42F292c6912E7710c8"),
    ("oauth gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c8"),
    ("app ghs_16C7e42F292c6912E7710c838347Ae178B4a", "ghs_16C7e42F292c6912E7710c8"),
    ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
     "github_pat_11ABCDEFG0123456789"),
    ("clone https://x-access-token:ghs_abcdefghijklmnopqrstuvwxyz0123456789@github.com/o/r",
     "ghs_abcdefghijklmnopqrstuvwxyz"),
    ("gitlab glpat-abcdefghij0123456789", "glpat-abcdefghij0123456789"),
    # Slack
    ("slack xoxb-1234567890123-1234567890123-abcdefghijABCDEFGHIJklmn", "xoxb-1234567890123"),
    ("user xoxp-1234567890-1234567890-1234567890-abcdef0123456789", "xoxp-1234567890"),
    ("app-level xapp-1-A0123456789-1234567890123-abcdef0123456789abcdef", "xapp-1-A0123456789"),
    ("workflow https://hooks.slack.com/workflows/T0ABCDEF/A0ABCDEF/123456789/abcDEF123",
     "abcDEF123"),
    ("discord https://discord.com/api/webhooks/123456789012345678/abcDEF-ghiJKL_mnoPQR",
     "abcDEF-ghiJKL_mnoPQR"),
    # Stripe
    ("charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("restricted rk_live_51HabcdefGHIJKLmnopQRSTuv", "51HabcdefGHIJKLmnopQRSTuv"),
    ("test sk_test_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("signing whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    # JWT as a header, basic auth header
    (f"Authorization: Bearer {JWT}", JWT[:30]),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("-H 'Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b'",
     "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"),
    # private keys
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq\n-----END RSA PRIVATE KEY-----",
     "MIIEpAIBAAKCAQEA7bq"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
     "-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAA"),
    ("key: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBx (truncated", "MHcCAQEEIBx"),
    ('{"type": "service_account", "private_key_id": "abc", "private_key": "-----BEGIN PRIVATE '
     'KEY-----\\nMIIEvQIBADANBgkqhkiG9w0B\\n-----END PRIVATE KEY-----\\n", "client_email": '
     '"x@p.iam.gserviceaccount.com"}', "MIIEvQIBADANBgkqhkiG9w0B"),
    # URLs with passwords
    ("mysql://root:S3cr3t!@127.0.0.1:3306/app", "S3cr3t!"),
    ("redis://:HUNTERredis@cache:6379/0", "HUNTERredis"),
    ("amqp://guest:HUNTERmq@rabbit:5672/", "HUNTERmq"),
    ("mongodb+srv://user:HUNTERmongo@cluster0.mongodb.net/db", "HUNTERmongo"),
    ("https://user:HUNTERhttp@example.com/path", "HUNTERhttp"),
    # Azure
    ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;"
     "SharedAccessKey=HUNTERsas0123456789abcdef=", "HUNTERsas0123456789abcdef="),
    ("BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2021-08-06&ss=b"
     "&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig=HUNTERsig%2Babc%3D", "HUNTERsig"),
    ("GET https://a.blob.core.windows.net/c/b?sv=2021-08-06&sr=b&sig=HUNTERsig2%2Fx%3D",
     "HUNTERsig2"),
    # npm, PyPI, SendGrid, Twilio, OpenAI, Google, others
    ("//registry.npmjs.org/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789",
     "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("npm token npm_abcdefghijklmnopqrstuvwxyz0123456789 set",
     "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("twine pypi-AgEIcHlwaS5vcmcCJGFiY2RlZmdoLWlqa2wtbW5vcC1xcnN0LXV2d3h5ejAxMjM0NTY3",
     "AgEIcHlwaS5vcmcCJGFiY2RlZmdo"),
    ("sendgrid 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",
     "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"),
    (f"twilio SK{HEX32} key", f"SK{HEX32}"),
    (f"TWILIO_AUTH_TOKEN={HEX32}", HEX32),
    ("openai sk-proj-abcdefghijklmnopqrstuvwxyzABCDEF0123456789", "abcdefghijklmnopqrstuvwxyz"),
    ("openai sk-abcdefghijklmnopqrstT3BlbkFJabcdefghijklmnopqrst", "abcdefghijklmnopqrst"),
    ("anthropic sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnopqrstuvwxyz"),
    ("maps AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI", "AIzaSyDdI0hCZtE6vySjMm"),
    (f"mailgun key-{HEX32}", HEX32),
    (f"mailchimp {HEX32}-us12", HEX32),
    (f"shopify shpat_{HEX32}", HEX32),
    ("vault hvs.CAESIAbcdefghijklmnopqrstuvwxyz0123", "CAESIAbcdefghijklmnopqrstuvwxyz0123"),
    # pairs, quoted and not
    ("login password=hunter2 ok", "hunter2"),
    ("token: abc123def", "abc123def"),
    ('{"api_key": "k-123"}', "k-123"),
    ("{'client_secret': 'HUNTER secret with spaces'}", "HUNTER secret with spaces"),
    ("PGPASSWORD=HUNTERpg psql -h db", "HUNTERpg"),
    ("DB_PASSWORD: 'HUNTER;with;semicolons'", "HUNTER;with;semicolons"),
    ("export API_KEY=HUNTERapi123", "HUNTERapi123"),
    ("access_token=HUNTERaccess&expires_in=3600", "HUNTERaccess"),
    ("config secret => HUNTERruby", "HUNTERruby"),
    ("refresh_token: HUNTERrefresh, user: bob", "HUNTERrefresh"),
    ("pwd=HUNTERpwd", "HUNTERpwd"),
    ("CREATE USER app IDENTIFIED BY 'HUNTERsql';", "HUNTERsql"),
    ("ALTER ROLE app WITH PASSWORD 'HUNTERrole'", "HUNTERrole"),
    ("docker login -u bob --password-stdin < f; docker login -p HUNTERdocker --token=HUNTERtok",
     "HUNTERtok"),
    ("mysql --password='HUNTER quoted' -h db", "HUNTER quoted"),
    ("runwatch token rw_0a1b2c3d_abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"),
]

# Text that must survive exactly as it is.
LOOKALIKES: list[str] = [
    "password reset email sent",
    "token count: 42",
    "rows=100",
    "550e8400-e29b-41d4-a716-446655440000",
    # commit hashes: not secrets, and no entropy rule (a log names the commit it deployed)
    "deployed commit 3f786850e387550fdab836ed7e6dc881de23001b to prod",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "2024-05-01T12:00:00Z finished in 35.2s",
    "https://example.com/path?q=1&page=2",
    "api_key rotation scheduled",
    "max_tokens=4096",
    "token_count=12",
    "tokens: 1500 used",
    "password_reset=true",
    "secret_name=prod-db",
    "Passwords must be at least 12 characters",
    "password: ********",
    "password=$DB_PASSWORD",
    "password=${PGPASSWORD}",
    "token: null",
    "api_key=<your key here>",
    "password: [REDACTED]",
    "has_password=true",
    "password_length=16",
    "tokenizer=bpe",
    "Basic authentication failed for user bob",
    "Bearer token expired, refreshing",
    "Authorization header missing",
    "SELECT password_hash FROM users WHERE id = 1",
    "postgres://db.internal:5432/app",
    "connecting to redis://cache:6379/0",
    "git@github.com:org/repo.git",
    "mail bob@example.com about it",
    "mailto:ops@example.com",
    "bypass=true",
    "passed=12 failed=0",
    "compass=north",
    "see https://api.slack.com/messaging/webhooks for setup",
    "sk-learn version 1.4",
    "AKIA is the prefix of AWS access key ids",
    "the key: value store is ready",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ci@host",
    "-----BEGIN PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----",
    "loaded 12,345 rows from orders (batch 7/9)",
    "progress=0.75 phase=load resource=orders",
    "HTTP 401 Unauthorized: invalid token",
    "secret rotation completed for 3 services",
    "--password-file /run/secrets/db",
    "pg_dump --no-password --host db",
    "curl -u $USER https://example.com",
    "eyJhbGciOiJIUzI1NiJ9 is a JWT header",
    "retry after=5s attempt=3/8",
    "elapsed=00:01:02 status=ok",
    "file C:\\Users\\bob\\passwords.txt not found",
    "id=42 name=orders pipeline_id=7 run_id=9223372036854775807",
    "timestamp=1714564800 tz=UTC",
    "checksum md5=d41d8cd98f00b204e9800998ecf8427e",
    "0x7ffee3b2c9a8 segfault at address",
    "Token: expected ':' at line 3",
]


@pytest.mark.parametrize("text,secret", SECRETS)
def test_secret_shapes_are_redacted(text: str, secret: str):
    scrubbed = scrub(text)
    assert secret not in scrubbed, scrubbed
    assert REDACTED in scrubbed, scrubbed


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalikes_survive(text: str):
    assert scrub(text) == text


def test_the_table_is_large_enough():
    assert len(SECRETS) >= 50 and len(LOOKALIKES) >= 50


@pytest.mark.parametrize("text,expected", [
    ('password="correct HUNTER battery staple" ok', 'password="[REDACTED]" ok'),
    ("Password=abc,HUNTERdef", "Password=[REDACTED]"),
    ("postgres://app:p@ssHUNTER@db", "postgres://app:[REDACTED]@db"),
    ("--password X", "--password [REDACTED]"),
    ("curl -u user:pass x", "curl -u user:[REDACTED] x"),
    ("password=abc, user=bob", "password=[REDACTED], user=bob"),
    ("{password=abc}", "{password=[REDACTED]}"),
    ("https://hooks.slack.com/services/T/B/X", "https://hooks.slack.com/[REDACTED]"),
    ("a;AccountKey=k+/=;b", "a;AccountKey=[REDACTED];b"),
])
def test_context_is_kept_around_the_secret(text: str, expected: str):
    assert scrub(text) == expected


def test_appends_stay_fast():
    """The scrubber is on the log append path: one precompiled pass. A generous bound that only
    a pathological (backtracking) pattern would exceed; the long lines are the shapes that
    were quadratic in drafts of the patterns."""
    lines = [*LOOKALIKES, *(t for t, _ in SECRETS)] * 20
    lines += ["x" * 4000, "password=" + "a," * 2000, "-" * 4000, "password=a" + ")]}" * 1300,
              "a://b:" * 660, "--password " * 360, 'password="' + "\\" * 1990,
              "eyJab.eyJab." * 330, "Bearer a1" * 440, "-u a:" * 790]
    started = time.perf_counter()
    for line in lines:
        clean_text(line, 4000)
    per_line = (time.perf_counter() - started) / len(lines)
    assert per_line < 0.002, f"{per_line * 1e6:.0f} µs per line"
