"""What the web pages need to know who is signed in: their settings, the secret, server-side
sessions and the brake on password guessing.

Sessions live in the users-and-keys database (table `web_sessions`), so they survive a restart
and a sign-out really ends them. The cookie holds only a random 256-bit session id; the table
holds its SHA-256 digest, as it does for API keys, so a copy of the database opens no session.

A key just created on the page waits there too (table `web_new_keys`) for the one page view that
follows the form's redirect: sealed with the session id, which only the browser's cookie holds,
so a copy of the database reveals no key either; taken out (deleted) when shown, and deleted
unseen after NEW_KEY_LIFETIME or when the session ends.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import ConfigError

SECRET_FILE = "session-secret"
MIN_SECRET_LENGTH = 32
SESSION_LIFETIME = timedelta(hours=12)
# Long enough for a redirect on a slow connection, short enough that a key nobody displayed
# does not wait around.
NEW_KEY_LIFETIME = timedelta(minutes=1)
MAX_SESSION_ID_LENGTH = 100
LOGIN_FAILURE_LIMIT = 5
LOGIN_FAILURE_WINDOW = 15 * 60  # seconds

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class WebSettings:
    secure_cookies: bool
    secret: str

    @classmethod
    def from_env(cls, data_dir: Path, environ: Mapping[str, str] = os.environ) -> WebSettings:
        raw = environ.get("QUARRY_SECURE_COOKIES", "").strip().lower()
        if raw not in _TRUE | _FALSE:
            raise ConfigError(f"QUARRY_SECURE_COOKIES must be 1 or 0, got {raw!r}")
        secret = environ.get("QUARRY_SESSION_SECRET", "")
        if secret and len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"QUARRY_SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return cls(secure_cookies=raw in _TRUE,
                   secret=secret or load_or_create_secret(data_dir / SECRET_FILE))

    def derived(self, purpose: str) -> str:
        """A separate key for each use of the secret."""
        return hmac.new(self.secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def load_or_create_secret(path: Path) -> str:
    """The secret in `path`, made on first use: 256 random bits, in a file only the owner can
    read. Two processes starting at once agree on one secret (the file appears whole, by link)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            temporary.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{path} holds no usable secret; delete it to make a new one")
    return secret


# --- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    user_id: int
    email: str
    expires_at: datetime


@dataclass(frozen=True)
class NewKey:
    """A key just created, on its way to the page that shows it once."""
    key: str
    name: str


class WebSessions:
    """Server-side sessions in the users-and-keys SQLite file (WAL mode, set by Accounts)."""

    def __init__(self, db_path: Path, lifetime: timedelta = SESSION_LIFETIME,
                 new_key_lifetime: timedelta = NEW_KEY_LIFETIME) -> None:
        self.db_path = Path(db_path)
        self.lifetime, self.new_key_lifetime = lifetime, new_key_lifetime
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS web_sessions ("
                " id_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL, email TEXT NOT NULL,"
                " created_at TEXT NOT NULL, expires_at TEXT NOT NULL)")
            conn.execute(
                "CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_id)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS web_new_keys ("
                " id INTEGER PRIMARY KEY, session_hash TEXT NOT NULL, user_id INTEGER NOT NULL,"
                " name TEXT NOT NULL, nonce TEXT NOT NULL, sealed TEXT NOT NULL,"
                " expires_at TEXT NOT NULL)")
            conn.execute(
                "CREATE INDEX IF NOT EXISTS web_new_keys_session ON web_new_keys (session_hash)")

    def start(self, user_id: int, email: str) -> str:
        """A new session; the returned id goes into the cookie and nowhere else."""
        session_id = secrets.token_urlsafe(32)
        now = _now()
        with self._connect() as conn:
            conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (_fmt(now),))
            conn.execute(
                "INSERT INTO web_sessions (id_hash, user_id, email, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (_digest(session_id), user_id, email, _fmt(now), _fmt(now + self.lifetime)))
        return session_id

    def get(self, session_id: str) -> Session | None:
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH or not session_id.isascii():
            return None
        with self._connect() as conn:
            row = conn.execute(
                "SELECT user_id, email, expires_at FROM web_sessions"
                " WHERE id_hash = ? AND expires_at > ?", (_digest(session_id), _fmt(_now()))
            ).fetchone()
        if row is None:
            return None
        return Session(user_id=row[0], email=row[1], expires_at=datetime.fromisoformat(row[2]))

    def end(self, session_id: str) -> None:
        if session_id and len(session_id) <= MAX_SESSION_ID_LENGTH and session_id.isascii():
            digest = _digest(session_id)
            with self._connect() as conn:
                conn.execute("DELETE FROM web_new_keys WHERE session_hash = ?", (digest,))
                conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (digest,))

    def end_all(self, user_id: int) -> int:
        """Sign a user out everywhere (after a password change)."""
        with self._connect() as conn:
            conn.execute("DELETE FROM web_new_keys WHERE user_id = ?", (user_id,))
            return conn.execute("DELETE FROM web_sessions WHERE user_id = ?", (user_id,)).rowcount

    # --- a new key, across the redirect that answers its form ----------------------------------

    def hold_new_key(self, session_id: str, user_id: int, key: str, name: str) -> None:
        """Keep `key` for the next `take_new_keys` of this session, sealed with its id."""
        nonce = secrets.token_bytes(12)
        sealed = _cipher(session_id).encrypt(nonce, key.encode("ascii"), name.encode())
        now = _now()
        with self._connect() as conn:
            conn.execute("DELETE FROM web_new_keys WHERE expires_at <= ?", (_fmt(now),))
            conn.execute(
                "INSERT INTO web_new_keys (session_hash, user_id, name, nonce, sealed,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (_digest(session_id), user_id, name, nonce.hex(), sealed.hex(),
                 _fmt(now + self.new_key_lifetime)))

    def take_new_keys(self, session_id: str) -> list[NewKey]:
        """The keys held for this session and not yet expired, oldest first; they are deleted,
        so each is shown once, even to two page views at the same moment."""
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH or not session_id.isascii():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "DELETE FROM web_new_keys WHERE session_hash = ?"
                " RETURNING id, name, nonce, sealed, expires_at",
                (_digest(session_id),)).fetchall()
        now, held, cipher = _fmt(_now()), [], _cipher(session_id)
        for _, name, nonce_hex, sealed_hex, expires_at in sorted(rows):
            if expires_at <= now:
                continue
            try:
                key = cipher.decrypt(bytes.fromhex(nonce_hex), bytes.fromhex(sealed_hex),
                                     name.encode())
            except (InvalidTag, ValueError):  # altered in the database: never shown
                continue
            held.append(NewKey(key=key.decode("ascii"), name=name))
        return held

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: a page view makes one or two of these, ~1 ms each.
        with closing(sqlite3.connect(self.db_path, isolation_level=None)) as conn:
            conn.execute("PRAGMA busy_timeout = 5000")
            yield conn


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def _cipher(session_id: str) -> AESGCM:
    """Seals a held key: AES-256-GCM (authenticated; the key's name is bound to it as associated
    data) under a key derived from the session id. The session id (256 random bits) is only in
    the cookie; the database holds its SHA-256, from which the cipher key cannot be had."""
    return AESGCM(hashlib.sha256(b"quarry new key\0" + session_id.encode("ascii")).digest())


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


# --- password guessing -------------------------------------------------------------------------


class LoginThrottle:
    """Failed sign-ins per email and per client address, in memory (one server process).

    After LOGIN_FAILURE_LIMIT failures within LOGIN_FAILURE_WINDOW for an email or from an
    address, further attempts are refused, without checking the password, until the oldest of
    them is older than the window. An attempt counts as a failure from the moment it starts, so
    a burst of parallel guesses cannot slip past the limit; a success takes it back.
    """

    MAX_TRACKED = 100_000  # keys remembered at most; stale ones are dropped first

    def __init__(self, limit: int = LOGIN_FAILURE_LIMIT, window: float = LOGIN_FAILURE_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, email: str, address: str) -> int:
        """Seconds until an attempt is allowed again; 0 when it is allowed now."""
        now = self.clock()
        wait = 0.0
        for key in self._keys(email, address):
            times = self._recent(key, now)
            if len(times) >= self.limit:
                wait = max(wait, times[-self.limit] + self.window - now)
        return int(wait) + 1 if wait > 0 else 0

    def attempt(self, email: str, address: str) -> None:
        now = self.clock()
        if len(self._failures) >= self.MAX_TRACKED:
            self._sweep(now)
        for key in self._keys(email, address):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, email: str, address: str) -> None:
        """The attempt was right: forget the email's failures, take this one back for the
        address (its earlier failures stay: they may have been guesses at other accounts)."""
        email_key, address_key = self._keys(email, address)
        self._failures.pop(email_key, None)
        times = self._failures.get(address_key)
        if times:
            times.pop()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        if len(self._failures) >= self.MAX_TRACKED:  # a flood of distinct keys: oldest half go
            by_age = sorted(self._failures, key=lambda key: self._failures[key][-1])
            for key in by_age[: len(by_age) - self.MAX_TRACKED // 2]:
                del self._failures[key]

    @staticmethod
    def _keys(email: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("email", email.strip().lower()[:254]), ("address", address)
