"""Users and API keys, stored in a small SQLite file.

Plaintext keys and passwords never touch the disk: keys are kept as SHA-256 digests (they carry
256 random bits, so a fast hash is enough), passwords as salted scrypt hashes. Each thread uses
its own connection, never shared, so the module is safe from any number of threads and
processes; WAL mode lets the HTTP workers read while the CLI writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

KEY_PREFIX = "qry_"
KEY_SHOWN_CHARS = 12  # stored and listed prefix: "qry_" + 8 random chars (48 bits)
MIN_REVOKE_PREFIX = 6
MAX_KEY_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_KEY_NAME_LENGTH = 100
REFUSED_NAME_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}  # control, format, line/paragraph breaks
MAX_KEYS_PER_USER = 20  # active keys; the default of QUARRY_MAX_KEYS_PER_USER
TOUCH_INTERVAL = timedelta(seconds=30)
BUSY_TIMEOUT_MS = 5000
TOUCH_BUSY_TIMEOUT_MS = 100  # last_used_at is a nicety: never make a request wait long for it

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_SALT_BYTES, SCRYPT_DKLEN = 16, 32


class AccountError(Exception):
    """One-line, user-facing reason (unknown user, duplicate email, bad prefix...)."""


class KeyLimitReached(AccountError):
    """The user already has as many active keys as allowed (QUARRY_MAX_KEYS_PER_USER)."""

    def __init__(self, email: str, limit: int):
        super().__init__(f"{email} already has {limit} active keys, the most a user may have "
                         "(QUARRY_MAX_KEYS_PER_USER); revoke one before creating another")
        self.limit = limit


@dataclass(frozen=True)
class User:
    id: int
    email: str
    created_at: datetime


@dataclass(frozen=True)
class KeyInfo:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def state(self) -> str:
        return "revoked" if self.revoked_at is not None else "active"


class Accounts:
    def __init__(self, path: Path | str, max_keys_per_user: int = MAX_KEYS_PER_USER) -> None:
        self.path = Path(path)
        # Every key has its own rate limit and export slots: without a cap a user could
        # multiply their share of the server by creating keys.
        self.max_keys_per_user = max_keys_per_user
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The file holds password hashes: create it private before SQLite creates it world-readable
        # (SQLite gives the -wal and -shm files the same mode). Only when it is missing: closing
        # a descriptor of an open database drops the POSIX locks of every SQLite connection of
        # this process to it, and another process may then delete the WAL under them.
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._connect() as conn:
            # WAL is a property of the file, so setting it once here covers every later connection.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise AccountError(f"cannot use WAL journal mode for {self.path} (got {mode})")
        with self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    # --- users -------------------------------------------------------------------------------

    def create_user(self, email: str, password: str) -> User:
        email = _normalize_email(email)
        stored = _hash_password(_check_new_password(password))  # slow: keep it out of the lock
        now = _now()
        try:
            with self._transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?)",
                    (email, stored, _fmt(now)),
                )
        except sqlite3.IntegrityError:
            raise AccountError(f"user {email} already exists") from None
        return User(id=cur.lastrowid, email=email, created_at=now)

    def set_password(self, email: str, password: str) -> None:
        email = _normalize_email(email)
        stored = _hash_password(_check_new_password(password))
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE users SET password_hash = ? WHERE email = ?", (stored, email)
            )
            if cur.rowcount == 0:
                raise AccountError(f"no user {email}")

    def get_user(self, email: str) -> User | None:
        try:
            email = _normalize_email(email)
        except AccountError:
            return None
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, email, created_at FROM users WHERE email = ?", (email,)
            ).fetchone()
        return _user(row) if row is not None else None

    def check_password(self, email: str, password: str) -> User | None:
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            return None  # independent of the email, so it reveals nothing about who exists
        try:
            email = _normalize_email(email)
        except AccountError:
            email = None
        row = None
        if email is not None:
            with self._connect() as conn:
                row = conn.execute(
                    "SELECT id, email, created_at, password_hash FROM users WHERE email = ?",
                    (email,),
                ).fetchone()
        if row is None:
            _hash_password(password)  # same cost as a real check: timing must not reveal emails
            return None
        return _user(row) if _verify_password(password, row["password_hash"]) else None

    # --- keys --------------------------------------------------------------------------------

    def create_key(self, email: str, name: str) -> tuple[str, KeyInfo]:
        email = _normalize_email(email)
        name = _normalize_key_name(name)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = _now()
        with self._transaction() as conn:
            user = conn.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()
            if user is None:
                raise AccountError(f"no user {email}")
            # Counted inside the write transaction, so concurrent creations cannot pass it.
            active = conn.execute("SELECT count(*) FROM api_keys WHERE user_id = ?"
                                  " AND revoked_at IS NULL", (user["id"],)).fetchone()[0]
            if active >= self.max_keys_per_user:
                raise KeyLimitReached(email, self.max_keys_per_user)
            cur = conn.execute(
                "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (user["id"], name, key[:KEY_SHOWN_CHARS], _key_hash(key), _fmt(now)),
            )
        info = KeyInfo(
            id=cur.lastrowid,
            user_id=user["id"],
            name=name,
            prefix=key[:KEY_SHOWN_CHARS],
            created_at=now,
            last_used_at=None,
            revoked_at=None,
        )
        return key, info

    def list_keys(self, email: str) -> list[KeyInfo]:
        email = _normalize_email(email)
        with self._connect() as conn:
            conn.execute("BEGIN")  # one snapshot for both queries
            user = conn.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()
            if user is None:
                raise AccountError(f"no user {email}")
            rows = conn.execute(_KEYS_OF_USER, (user["id"],)).fetchall()
            conn.execute("COMMIT")
        return [_key_info(row) for row in rows]

    def revoke_key(self, prefix: str, *, user_id: int | None = None) -> KeyInfo:
        text = prefix.strip() if isinstance(prefix, str) else ""
        if len(text) < MIN_REVOKE_PREFIX:
            raise AccountError(f"prefix must be at least {MIN_REVOKE_PREFIX} characters")
        # The caller may have pasted the whole key: never echo more than a listed prefix.
        shown = text if len(text) <= KEY_SHOWN_CHARS else text[:KEY_SHOWN_CHARS] + "..."
        args = {"text": text, "n": len(text), "user_id": user_id, "hash": _key_hash(text)}
        with self._transaction() as conn:
            rows = conn.execute(_KEYS_BY_PREFIX_OR_KEY, args).fetchall()
            if not rows:
                raise AccountError(f"no key with prefix {shown}")
            if len(rows) > 1:
                raise AccountError(
                    f"prefix {shown} is ambiguous: {len(rows)} keys match; give more characters"
                )
            info = _key_info(rows[0])
            if info.revoked_at is not None:
                return info
            now = _now()
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_fmt(now), info.id))
        return replace(info, revoked_at=now)

    def authenticate(self, key: str) -> KeyInfo | None:
        if (
            not isinstance(key, str)
            or not key.startswith(KEY_PREFIX)
            or len(key) > MAX_KEY_LENGTH
            or not key.isascii()
        ):
            return None
        digest = _key_hash(key)
        with self._connect() as conn:
            # fetchall, not fetchone: it finishes the statement, so no read snapshot stays open
            # to make the UPDATE below fail with a stale-snapshot error.
            rows = conn.execute(_KEY_BY_HASH, (digest,)).fetchall()
            if not rows or not hmac.compare_digest(rows[0]["key_hash"], digest):
                return None
            info = _key_info(rows[0])
            if info.revoked_at is not None:
                return None
            now = _now()
            if info.last_used_at is not None and now - info.last_used_at < TOUCH_INTERVAL:
                return info
            conn.execute(f"PRAGMA busy_timeout = {TOUCH_BUSY_TIMEOUT_MS}")
            try:
                # The WHERE keeps a burst of concurrent first uses down to a single real write.
                conn.execute(
                    "UPDATE api_keys SET last_used_at = ?"
                    " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                    (_fmt(now), info.id, _fmt(now - TOUCH_INTERVAL)),
                )
            except sqlite3.OperationalError:
                return info  # DB busy (e.g. the CLI is writing): the key is still valid
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return replace(info, last_used_at=now)

    def close(self) -> None:
        """Close the calling thread's connection (other threads' close when those threads end)."""
        conn = getattr(self._local, "conn", None)
        self._local.__dict__.clear()
        if conn is not None:
            conn.close()

    # --- connections -------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = self._thread_connection()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    self.close()  # unusable: the next call opens a fresh one

    def _thread_connection(self) -> sqlite3.Connection:
        # One connection per thread, kept open: opening one per call costs ~1 ms, mostly because
        # closing the last connection checkpoints and deletes the WAL file. Keyed by pid too,
        # since an SQLite connection must not be used across a fork.
        if getattr(self._local, "pid", None) != os.getpid():
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, not sqlite3's implicit ones.
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn, self._local.pid = conn, os.getpid()
        return self._local.conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            # IMMEDIATE takes the write lock up front, so read-then-write cannot fail halfway
            # with SQLITE_BUSY when another process wrote in between.
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")


# --- storage -----------------------------------------------------------------------------------

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id)",
)

_KEY_BY_HASH = (
    "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at, key_hash"
    " FROM api_keys WHERE key_hash = ?"
)
_KEYS_OF_USER = (
    "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at"
    " FROM api_keys WHERE user_id = ? ORDER BY created_at DESC, id DESC"
)
# A short text matches the start of stored prefixes (substr, not LIKE: "_" is a LIKE wildcard);
# a longer one must be a whole key: its hash decides. A full scan is fine at this table's size.
_KEYS_BY_PREFIX_OR_KEY = (
    "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys"
    " WHERE (substr(prefix, 1, :n) = :text"
    "        OR (length(:text) > length(prefix) AND substr(:text, 1, length(prefix)) = prefix"
    "            AND key_hash = :hash))"
    "   AND (:user_id IS NULL OR user_id = :user_id)"
)


def _user(row: sqlite3.Row) -> User:
    return User(id=row["id"], email=row["email"], created_at=_parse(row["created_at"]))


def _key_info(row: sqlite3.Row) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=_parse(row["created_at"]),
        last_used_at=_parse(row["last_used_at"]),
        revoked_at=_parse(row["revoked_at"]),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(moment: datetime) -> str:
    # Fixed width (always microseconds, always +00:00), so text order in SQL is time order.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


# --- validation --------------------------------------------------------------------------------

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def _normalize_email(email: str) -> str:
    if not isinstance(email, str):
        raise AccountError("email must be text")
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH:
        raise AccountError(f"email is too long (at most {MAX_EMAIL_LENGTH} characters)")
    if not _EMAIL_RE.fullmatch(email) or not email.isprintable():
        raise AccountError(f"not a valid email address: {email!r}")
    return email


def _check_new_password(password: str) -> str:
    if not isinstance(password, str):
        raise AccountError("password must be text")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _normalize_key_name(name: str) -> str:
    if not isinstance(name, str):
        raise AccountError("key name must be text")
    name = name.strip()
    if not 1 <= len(name) <= MAX_KEY_NAME_LENGTH:
        raise AccountError(f"key name must be 1 to {MAX_KEY_NAME_LENGTH} characters")
    # `quarry tokens list` prints one line per key: a newline or escape code would forge lines;
    # an invisible format character (U+202E reverses the text after it) would show the page or
    # the terminal a name other than the one stored; U+2028/U+2029 break lines too.
    for ch in name:
        if unicodedata.category(ch) in REFUSED_NAME_CATEGORIES:
            raise AccountError("key name must not contain control characters or invisible "
                               f"formatting characters (it has U+{ord(ch):04X})")
    return name


# --- hashing -----------------------------------------------------------------------------------


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        # OpenSSL's default 32 MiB ceiling would block raising n or r later: allow what they need.
        maxmem=128 * r * (n + p + 2),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hash_password(password: str) -> str:
    """Stored as scrypt$n$r$p$salt$hash so the parameters can be raised later."""
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _verify_password(password: str, stored: str) -> bool:
    try:
        algorithm, n, r, p, salt, expected = stored.split("$")
        if algorithm != "scrypt":
            return False
        expected_bytes = base64.b64decode(expected, validate=True)
        actual = _scrypt(
            password,
            base64.b64decode(salt, validate=True),
            int(n),
            int(r),
            int(p),
            len(expected_bytes),
        )
    except ValueError:
        return False  # unreadable stored hash: refuse rather than crash the login page
    return hmac.compare_digest(actual, expected_bytes)
