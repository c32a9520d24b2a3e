"""Web authentication: a bearer token or HTTP Basic users, both read from files (never the command line).

Token: ``Authorization: Bearer <token>``, or the ``fer_token`` cookie that ``/?token=<token>`` sets once
(so a browser can open the app). Users file: one ``user:secret`` per line, the secret either the plain
password (keep the file 0600) or ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` (``hash_password``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from dashboard.config import AuthConfig, read_users

COOKIE = "fer_token"


def hash_password(password: str, iterations: int = 200_000, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def _check_secret(stored: str, given: str) -> bool:
    if stored.startswith("pbkdf2_sha256$"):
        try:
            _, iterations, salt, digest = stored.split("$")
            got = hashlib.pbkdf2_hmac("sha256", given.encode(), bytes.fromhex(salt), int(iterations))
        except ValueError:
            return False
        return hmac.compare_digest(got.hex(), digest)
    return hmac.compare_digest(stored.encode(), given.encode())


class Authenticator:
    """Checks a request's headers/cookies against the configured token and users."""

    def __init__(self, cfg: AuthConfig):
        self.token = Path(cfg.token_file).read_text().strip() if cfg.token_file else ""
        self.users: dict[str, str] = read_users(cfg.users_file) if cfg.users_file else {}
        # configured means enforced: an empty token file or users file locks everyone out, it never opens up
        self.enabled = bool(cfg.token_file or cfg.users_file)

    def check_token(self, token: str) -> bool:
        return bool(self.token) and hmac.compare_digest(self.token.encode(), token.encode())

    def user(self, authorization: str | None, cookie_token: str | None) -> str | None:
        """The authenticated user ("token" for the token), or None."""
        if not self.enabled:
            return "anonymous"
        if cookie_token and self.check_token(cookie_token):
            return "token"
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.check_token(value.strip()):
            return "token"
        if scheme.lower() == "basic" and self.users:
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            if user in self.users and _check_secret(self.users[user], password):
                return user
        return None

    @property
    def challenge(self) -> str:
        return 'Basic realm="fer-edge dashboard"' if self.users else 'Bearer realm="fer-edge dashboard"'
