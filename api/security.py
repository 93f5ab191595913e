"""Passwords and bearer tokens.

Passwords are hashed with scrypt (stdlib :func:`hashlib.scrypt`, memory-hard; n=2**14, r=8, p=1, a 16-byte
salt), stored as ``scrypt$n$r$p$salt$hash``. Tokens are 256-bit random strings handed to the client once; the
database keeps only their SHA-256, so a leaked table does not leak sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
#: Longest password accepted: scrypt of megabytes is a denial of service.
MAX_PASSWORD_LENGTH = 256


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    if not 8 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password has 8 to {MAX_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string; False for anything malformed."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
