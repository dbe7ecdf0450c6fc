"""Tests for service.accounts: users, passwords and API keys in SQLite."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import sqlite3
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service import accounts as accounts_module
from service.accounts import AccountError, Accounts, KeyInfo, KeyLimitReached, User

PASSWORD = "correct horse battery"
BOB_PASSWORD = "bob's long password"


# scrypt costs ~50 ms: hash the two fixture users once and copy the finished file per test.
@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "accounts.db"
    accounts = Accounts(path)
    accounts.create_user("alice@example.com", PASSWORD)
    accounts.create_user("bob@example.com", BOB_PASSWORD)
    accounts.close()  # the last connection closed checkpoints the WAL into this one file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def db_path(tmp_path: Path, template_db: Path) -> Path:
    path = tmp_path / "accounts.db"
    shutil.copy(template_db, path)
    return path


@pytest.fixture
def acc(db_path: Path) -> Accounts:
    return Accounts(db_path)


@pytest.fixture
def alice(acc: Accounts) -> User:
    user = acc.get_user("alice@example.com")
    assert user is not None
    return user


@pytest.fixture
def bob(acc: Accounts) -> User:
    user = acc.get_user("bob@example.com")
    assert user is not None
    return user


def raw(path: Path) -> sqlite3.Connection:
    """A separate connection, standing in for another process (the CLI)."""
    return sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)


def set_prefix(path: Path, key_id: int, prefix: str) -> None:
    with raw(path) as conn:
        conn.execute("UPDATE api_keys SET prefix = ? WHERE id = ?", (prefix, key_id))


def set_last_used(path: Path, key_id: int, value: str | None) -> None:
    with raw(path) as conn:
        conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (value, key_id))


def stored_last_used(path: Path, key_id: int) -> str | None:
    with raw(path) as conn:
        row = conn.execute("SELECT last_used_at FROM api_keys WHERE id = ?", (key_id,))
        return row.fetchone()[0]


def assert_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


# --- database file ---------------------------------------------------------------------------


def test_creates_parent_folder_schema_wal_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "accounts.db"
    Accounts(path)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "api_keys"} <= tables
    Accounts(path)  # opening an existing database again is fine


def test_connection_settings(acc: Accounts) -> None:
    with acc._connect() as conn:  # private, but these settings are part of the contract
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_times_are_stored_as_utc_iso_text(acc: Accounts, db_path: Path) -> None:
    acc.create_key("alice@example.com", "ci")
    with raw(db_path) as conn:
        (user_created,) = conn.execute("SELECT created_at FROM users LIMIT 1").fetchone()
        (key_created,) = conn.execute("SELECT created_at FROM api_keys LIMIT 1").fetchone()
    for text in (user_created, key_created):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", text)


# --- users -----------------------------------------------------------------------------------


def test_template_users_exist(alice: User, bob: User) -> None:
    assert alice.email == "alice@example.com"
    assert bob.email == "bob@example.com"
    assert alice.id != bob.id
    assert_utc(alice.created_at)


def test_create_user_normalizes_email(acc: Accounts) -> None:
    user = acc.create_user("  Carol@Example.COM ", "12345678")  # exactly the minimum length
    assert user.email == "carol@example.com"
    assert_utc(user.created_at)
    assert acc.get_user("CAROL@example.com") == user
    assert acc.get_user("nobody@example.com") is None
    assert acc.get_user("not an email") is None


def test_duplicate_email_is_refused(acc: Accounts) -> None:
    with pytest.raises(AccountError, match="user alice@example.com already exists"):
        acc.create_user(" ALICE@example.com", "another password")


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "alice@.com",
        "al ice@example.com",
        "a@b@example.com",
        "alice@example.com.",
        "al\x00ice@example.com",
        "a" * 243 + "@example.com",  # 255 characters
    ],
)
def test_invalid_email_is_refused(acc: Accounts, email: str) -> None:
    with pytest.raises(AccountError):
        acc.create_user(email, "long enough password")


def test_email_of_254_characters_is_accepted(acc: Accounts) -> None:
    email = "a" * 242 + "@example.com"
    assert len(email) == 254
    assert acc.create_user(email, "long enough password").email == email


@pytest.mark.parametrize("password", ["", "1234567", "x" * 1025, None])
def test_invalid_password_is_refused(acc: Accounts, password: str) -> None:
    with pytest.raises(AccountError, match="password"):
        acc.create_user("carol@example.com", password)
    with pytest.raises(AccountError, match="password"):
        acc.set_password("alice@example.com", password)
    assert acc.get_user("carol@example.com") is None


def test_password_is_stored_as_scrypt_with_parameters(db_path: Path) -> None:
    with raw(db_path) as conn:
        (stored,) = conn.execute(
            "SELECT password_hash FROM users WHERE email = 'alice@example.com'"
        ).fetchone()
    algorithm, n, r, p, salt, digest = stored.split("$")
    assert (algorithm, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert PASSWORD.encode() not in db_path.read_bytes()


def test_check_password(acc: Accounts, alice: User) -> None:
    assert acc.check_password("alice@example.com", PASSWORD) == alice
    assert acc.check_password(" Alice@Example.com ", PASSWORD) == alice
    assert acc.check_password("alice@example.com", PASSWORD + "x") is None
    assert acc.check_password("alice@example.com", BOB_PASSWORD) is None
    assert acc.check_password("alice@example.com", "x" * 5000) is None


def test_check_password_spends_a_hash_on_unknown_users(
    acc: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_scrypt = hashlib.scrypt

    def counting_scrypt(*args, **kwargs):
        calls.append(kwargs.get("n"))
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(accounts_module.hashlib, "scrypt", counting_scrypt)
    assert acc.check_password("nobody@example.com", PASSWORD) is None
    assert acc.check_password("not an email", PASSWORD) is None
    # Same work as for a real user, so response time does not tell which emails exist.
    assert calls == [2**14, 2**14]


def test_set_password(acc: Accounts, alice: User) -> None:
    acc.set_password("ALICE@example.com", "a brand new password")
    assert acc.check_password("alice@example.com", "a brand new password") == alice
    assert acc.check_password("alice@example.com", PASSWORD) is None
    assert acc.check_password("bob@example.com", BOB_PASSWORD) is not None  # untouched
    with pytest.raises(AccountError, match="no user"):
        acc.set_password("nobody@example.com", "a brand new password")


# --- keys ------------------------------------------------------------------------------------


def test_key_format(acc: Accounts, alice: User) -> None:
    key, info = acc.create_key("alice@example.com", "  laptop  ")
    other, _ = acc.create_key("alice@example.com", "laptop")
    assert key != other
    for k in (key, other):
        assert re.fullmatch(r"qry_[A-Za-z0-9_-]{43}", k)  # 32 random bytes, url-safe base64
    assert len(set(key[4:])) > 10  # crude check that the body is not constant
    assert info.prefix == key[:12]
    assert info.name == "laptop"
    assert info.user_id == alice.id
    assert info.state == "active"
    assert info.last_used_at is None and info.revoked_at is None
    assert_utc(info.created_at)
    assert key not in repr(info)


def test_a_user_has_at_most_20_active_keys_and_revoked_ones_do_not_count(
    acc: Accounts, alice: User
) -> None:
    keys = [acc.create_key("alice@example.com", f"key {n}")[0] for n in range(20)]
    with pytest.raises(KeyLimitReached, match="already has 20 active keys") as refused:
        acc.create_key("alice@example.com", "one more")
    assert refused.value.limit == 20 and isinstance(refused.value, AccountError)
    assert len(acc.list_keys("alice@example.com")) == 20  # nothing was written
    acc.create_key("bob@example.com", "bob's own")  # per user: bob is not held back
    acc.revoke_key(keys[0][:12])
    acc.create_key("alice@example.com", "in place of key 0")


def test_the_key_cap_holds_for_concurrent_creations(db_path: Path) -> None:
    limited = Accounts(db_path, max_keys_per_user=3)
    created, refused = [], []

    def create(n: int) -> None:
        try:
            created.append(Accounts(db_path, max_keys_per_user=3).create_key(
                "alice@example.com", f"key {n}"))
        except KeyLimitReached:
            refused.append(n)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 3 and len(refused) == 5
    assert len(limited.list_keys("alice@example.com")) == 3


def test_create_key_for_unknown_user_is_refused(acc: Accounts) -> None:
    with pytest.raises(AccountError, match="no user nobody@example.com"):
        acc.create_key("nobody@example.com", "laptop")


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bad\nname", "esc\x1b[31m", None])
def test_invalid_key_name_is_refused(acc: Accounts, name: str) -> None:
    with pytest.raises(AccountError, match="name"):
        acc.create_key("alice@example.com", name)
    assert acc.list_keys("alice@example.com") == []


@pytest.mark.parametrize(("name", "code"), [
    ("invoice\u202efdp.exe", "U+202E"), ("zero\u200bwidth", "U+200B"), ("\ufeffbom", "U+FEFF"),
    ("line\u2028break", "U+2028"), ("soft\u00adhyphen", "U+00AD"), ("tag\U000e0041", "U+E0041")])
def test_key_name_with_a_format_character_is_refused(acc: Accounts, name: str, code: str) -> None:
    """A bidi override (U+202E) or another invisible format character would show a name other
    than the one stored: refused, naming the code point."""
    with pytest.raises(AccountError, match=re.escape(f"formatting characters (it has {code})")):
        acc.create_key("alice@example.com", name)
    assert acc.list_keys("alice@example.com") == []


def test_key_name_of_100_characters_is_accepted(acc: Accounts) -> None:
    _, info = acc.create_key("alice@example.com", "n" * 100)
    assert info.name == "n" * 100


def test_database_never_contains_plaintext_key(acc: Accounts, db_path: Path) -> None:
    keeper = raw(db_path)  # an open connection keeps the -wal file from being checkpointed away
    keeper.execute("SELECT count(*) FROM users").fetchone()
    try:
        keys = [acc.create_key("alice@example.com", f"key {i}")[0] for i in range(3)]
        for key in keys:
            assert acc.authenticate(key) is not None
        acc.revoke_key(keys[0])
        acc.set_password("alice@example.com", "a password never stored")
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0
        blob = db_path.read_bytes() + wal.read_bytes()
    finally:
        keeper.close()
    # Sanity: we are looking at the right bytes, the digests are there.
    assert hashlib.sha256(keys[1].encode()).hexdigest().encode() in blob
    for key in keys:
        assert key.encode() not in blob
        assert key[12:].encode() not in blob  # the secret part beyond the listed prefix
        assert key[12:30].encode() not in blob
    assert b"a password never stored" not in blob


# --- authenticate ----------------------------------------------------------------------------


def test_authenticate_valid_key(acc: Accounts, alice: User) -> None:
    key, created = acc.create_key("alice@example.com", "laptop")
    info = acc.authenticate(key)
    assert isinstance(info, KeyInfo)
    assert (info.id, info.user_id, info.prefix, info.state) == (
        created.id,
        alice.id,
        created.prefix,
        "active",
    )


def test_authenticate_unknown_key(acc: Accounts) -> None:
    key, _ = acc.create_key("alice@example.com", "laptop")
    last = "A" if key[-1] != "A" else "B"
    assert acc.authenticate(key[:-1] + last) is None
    assert acc.authenticate("qry_" + "x" * 43) is None


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda key: "",
        lambda key: "qry_",
        lambda key: key[4:],  # without the prefix
        lambda key: "QRY_" + key[4:],
        lambda key: "Bearer " + key,
        lambda key: key + "\n",
        lambda key: " " + key,
        lambda key: key + "a" * 200,  # absurd length
        lambda key: key[:-1] + "é",
        lambda key: key[:-1] + "\udc80",  # lone surrogate must not crash hashing
        lambda key: None,
        lambda key: key.encode(),
    ],
)
def test_authenticate_malformed_key(acc: Accounts, make_bad) -> None:
    key, _ = acc.create_key("alice@example.com", "laptop")
    assert acc.authenticate(make_bad(key)) is None
    assert acc.authenticate(key) is not None


@pytest.mark.parametrize(
    "bad", ["", "Bearer qry_abc", "qry_" + "a" * 197, "qry_" + "a" * 100_000, "qry_é", None]
)
def test_malformed_key_is_refused_without_touching_the_database(
    acc: Accounts, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    def no_connect(*args, **kwargs):
        raise AssertionError("authenticate opened the database for a malformed key")

    acc.close()  # so that any database access would have to open a connection
    monkeypatch.setattr(accounts_module.sqlite3, "connect", no_connect)
    assert acc.authenticate(bad) is None


def test_revoked_key_is_refused_at_once_even_from_another_instance(
    acc: Accounts, db_path: Path
) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    assert acc.authenticate(key) is not None  # a positive answer must not be cached
    Accounts(db_path).revoke_key(info.prefix)  # e.g. the CLI, in another process
    assert acc.authenticate(key) is None


def test_authenticate_sets_last_used_at(acc: Accounts, db_path: Path) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    assert stored_last_used(db_path, info.id) is None
    seen = acc.authenticate(key)
    assert seen is not None and seen.last_used_at is not None
    assert_utc(seen.last_used_at)
    [listed] = acc.list_keys("alice@example.com")
    assert listed.last_used_at == seen.last_used_at


def test_authenticate_writes_last_used_at_at_most_every_30_seconds(
    acc: Accounts, db_path: Path
) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    recent = (datetime.now(UTC) - timedelta(seconds=10)).isoformat(timespec="microseconds")
    set_last_used(db_path, info.id, recent)
    assert acc.authenticate(key).last_used_at == datetime.fromisoformat(recent)
    assert stored_last_used(db_path, info.id) == recent  # not rewritten

    old = (datetime.now(UTC) - timedelta(seconds=45)).isoformat(timespec="microseconds")
    set_last_used(db_path, info.id, old)
    seen = acc.authenticate(key)
    assert stored_last_used(db_path, info.id) > old
    assert seen.last_used_at > datetime.fromisoformat(old)


def test_busy_database_does_not_fail_authentication(acc: Accounts, db_path: Path) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    writer = raw(db_path)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        seen = acc.authenticate(key)  # wants to write last_used_at, cannot
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert seen is not None and seen.id == info.id
    assert elapsed < 2  # far below the busy timeout used for real writes
    assert stored_last_used(db_path, info.id) is None


def test_busy_timeout_is_restored_after_a_failed_touch(acc: Accounts, db_path: Path) -> None:
    key, _ = acc.create_key("alice@example.com", "laptop")
    writer = raw(db_path)
    writer.execute("BEGIN IMMEDIATE")
    assert acc.authenticate(key) is not None  # its touch gives up quickly
    # Release the lock after longer than the touch's short timeout: a normal write must wait.
    releaser = threading.Timer(0.3, lambda: writer.execute("ROLLBACK"))
    releaser.start()
    try:
        acc.create_key("alice@example.com", "second")
    finally:
        releaser.join()
        writer.close()
    assert len(acc.list_keys("alice@example.com")) == 2


def test_connection_stays_usable_after_errors(acc: Accounts) -> None:
    with pytest.raises(AccountError):
        acc.create_user("alice@example.com", "long enough password")  # fails inside a transaction
    with pytest.raises(AccountError):
        acc.list_keys("nobody@example.com")  # fails inside a read transaction
    assert acc.create_key("alice@example.com", "after errors")[1].state == "active"
    acc.close()
    acc.close()  # harmless twice; the next call reconnects
    assert [k.name for k in acc.list_keys("alice@example.com")] == ["after errors"]


# --- list ------------------------------------------------------------------------------------


def test_list_keys_newest_first_and_without_secrets(acc: Accounts, alice: User) -> None:
    created = [acc.create_key("alice@example.com", name) for name in ("one", "two", "three")]
    acc.create_key("bob@example.com", "bob's")
    acc.revoke_key(created[1][1].prefix)

    listed = acc.list_keys(" ALICE@example.com")
    assert [k.name for k in listed] == ["three", "two", "one"]
    assert [k.id for k in listed] == [info.id for _, info in reversed(created)]
    assert [k.prefix for k in listed] == [key[:12] for key, _ in reversed(created)]
    assert [k.state for k in listed] == ["active", "revoked", "active"]
    assert all(k.user_id == alice.id for k in listed)
    assert listed[0].created_at >= listed[1].created_at >= listed[2].created_at
    text = repr(listed)
    for key, _ in created:
        assert key[12:] not in text

    assert acc.list_keys("bob@example.com")[0].name == "bob's"
    with pytest.raises(AccountError, match="no user"):
        acc.list_keys("nobody@example.com")


# --- revoke ----------------------------------------------------------------------------------


def test_revoke_by_listed_prefix(acc: Accounts) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    other, _ = acc.create_key("alice@example.com", "server")
    revoked = acc.revoke_key(info.prefix)
    assert revoked.id == info.id and revoked.state == "revoked"
    assert_utc(revoked.revoked_at)
    assert acc.authenticate(key) is None
    assert acc.authenticate(other) is not None
    [listed] = [k for k in acc.list_keys("alice@example.com") if k.id == info.id]
    assert listed.revoked_at == revoked.revoked_at


def test_revoke_by_shorter_prefix_and_by_full_key(acc: Accounts) -> None:
    key1, info1 = acc.create_key("alice@example.com", "one")
    key2, info2 = acc.create_key("alice@example.com", "two")
    assert acc.revoke_key(key1[:8]).id == info1.id  # unambiguous with 2 keys, bar a 1/2^24 fluke
    assert acc.revoke_key(f"  {key2}\n").id == info2.id  # pasted whole, with stray whitespace
    assert acc.authenticate(key2) is None


def test_revoke_is_idempotent(acc: Accounts) -> None:
    _, info = acc.create_key("alice@example.com", "laptop")
    first = acc.revoke_key(info.prefix)
    time.sleep(0.002)
    assert acc.revoke_key(info.prefix) == first


@pytest.mark.parametrize("prefix", ["", "qry_", "qry_a", "     qry_a  "])
def test_revoke_prefix_too_short(acc: Accounts, prefix: str) -> None:
    acc.create_key("alice@example.com", "laptop")
    with pytest.raises(AccountError, match="at least 6 characters"):
        acc.revoke_key(prefix)


def test_revoke_unknown_prefix_or_key(acc: Accounts) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    with pytest.raises(AccountError, match="no key with prefix qry_zzzzzz"):
        acc.revoke_key("qry_zzzzzz")
    # A whole key that shares the stored prefix but is not the key: its hash decides.
    forged = key[:12] + "A" * 35
    with pytest.raises(AccountError, match="no key with prefix") as caught:
        acc.revoke_key(forged)
    assert forged not in str(caught.value)  # only the listed-prefix part is echoed
    assert forged[12:] not in str(caught.value)
    with pytest.raises(AccountError, match="no key"):
        acc.revoke_key(info.prefix + "extra")  # longer than a prefix, not a key
    assert acc.authenticate(key) is not None


def test_revoke_error_never_echoes_a_whole_key(acc: Accounts) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    set_prefix(acc.path, info.id, "qry_SAMEPREF")
    other_key, other = acc.create_key("alice@example.com", "other")
    set_prefix(acc.path, other.id, "qry_SAMEPREF")
    with pytest.raises(AccountError) as caught:
        acc.revoke_key(key)  # the stored prefix no longer matches: "no key"
    assert key[12:] not in str(caught.value)
    assert acc.authenticate(other_key) is not None


def test_revoke_ambiguous_prefix(acc: Accounts, db_path: Path) -> None:
    key1, info1 = acc.create_key("alice@example.com", "one")
    key2, info2 = acc.create_key("alice@example.com", "two")
    set_prefix(db_path, info1.id, "qry_ABCDEFG1")
    set_prefix(db_path, info2.id, "qry_ABCDEFG2")
    for given in ("qry_AB", "qry_ABCDEFG"):
        with pytest.raises(AccountError, match=rf"prefix {given} is ambiguous: 2 keys match"):
            acc.revoke_key(given)
    assert acc.authenticate(key1) is not None and acc.authenticate(key2) is not None
    # "_" must be literal, not a LIKE wildcard, and matching is case-sensitive.
    for given in ("qryXABCDEFG1", "qry_abcdefg1"):
        with pytest.raises(AccountError, match="no key"):
            acc.revoke_key(given)
    assert acc.revoke_key("qry_ABCDEFG1").id == info1.id
    assert acc.authenticate(key1) is None
    assert acc.authenticate(key2) is not None


def test_revoke_restricted_to_user(acc: Accounts, alice: User, bob: User, db_path: Path) -> None:
    alice_key, alice_info = acc.create_key("alice@example.com", "alice's")
    bob_key, bob_info = acc.create_key("bob@example.com", "bob's")
    with pytest.raises(AccountError, match="no key"):
        acc.revoke_key(bob_info.prefix, user_id=alice.id)
    with pytest.raises(AccountError, match="no key"):
        acc.revoke_key(bob_key, user_id=alice.id)
    assert acc.authenticate(bob_key) is not None

    # A prefix shared across users is ambiguous globally but not within one user's keys.
    set_prefix(db_path, alice_info.id, "qry_SHARED01")
    set_prefix(db_path, bob_info.id, "qry_SHARED02")
    with pytest.raises(AccountError, match="ambiguous"):
        acc.revoke_key("qry_SHARED")
    assert acc.revoke_key("qry_SHARED", user_id=bob.id).id == bob_info.id
    assert acc.authenticate(bob_key) is None
    assert acc.authenticate(alice_key) is not None


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_authenticate_while_another_connection_writes(
    acc: Accounts, db_path: Path
) -> None:
    keys = [acc.create_key("alice@example.com", f"worker {i}")[0] for i in range(4)]
    doomed_key, doomed = acc.create_key("bob@example.com", "doomed")
    writer_done = threading.Event()
    errors: list[BaseException] = []
    results: list[bool] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            i = 0
            while not writer_done.is_set():
                ok = acc.authenticate(keys[(n + i) % len(keys)]) is not None
                with lock:
                    results.append(ok)
                i += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def writer() -> None:
        # Stands in for the CLI: a separate instance and raw connection, writing in a loop.
        try:
            other = Accounts(db_path)
            conn = raw(db_path)
            for _ in range(15):
                other.create_key("bob@example.com", "churn")
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE api_keys SET last_used_at = NULL")  # force touch writes
                time.sleep(0.005)  # hold the write lock for a moment
                conn.execute("COMMIT")
                time.sleep(0.01)
            conn.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            writer_done.set()

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    writer_thread = threading.Thread(target=writer)
    for t in [*workers, writer_thread]:
        t.start()
    acc.revoke_key(doomed.prefix)
    for t in [writer_thread, *workers]:
        t.join(timeout=30)

    assert not errors, errors
    assert len(results) > 8 and all(results)
    assert len(acc.list_keys("bob@example.com")) == 16
    assert acc.authenticate(doomed_key) is None
    assert all(acc.authenticate(key) is not None for key in keys)


def test_many_threads_keep_authenticating_while_the_write_lock_is_held(
    acc: Accounts, db_path: Path
) -> None:
    key, info = acc.create_key("alice@example.com", "laptop")
    results: list[KeyInfo | None] = []
    writer = raw(db_path)
    writer.execute("BEGIN IMMEDIATE")
    try:
        threads = [
            threading.Thread(target=lambda: results.append(acc.authenticate(key))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=3)  # well under the 5 s busy timeout of real writes
        assert not any(t.is_alive() for t in threads)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert len(results) == 8
    assert all(r is not None and r.id == info.id for r in results)
