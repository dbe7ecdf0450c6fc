"""`make run` set-up: on first use a demo drop, a snapshot, a demo user and key; then serve.

The demo key is kept in `data/demo-key` (mode 600, git-ignored) so that every `make run` can
print it again; real keys are never stored in plain text.
"""

from __future__ import annotations

import os
import secrets
import sys

from .accounts import Accounts
from .config import Settings
from .progress import ProgressBar, StageLog
from .snapshots import SnapshotStore

DEMO_EMAIL = "demo@quarry.local"


def prepare(settings: Settings, companies: int = 20_000, contacts: int = 200_000) -> str:
    """Make sure there is a snapshot and a demo key; return the key."""
    store = SnapshotStore(settings.data_dir, settings.keep_snapshots)
    if store.current_version() is None:
        from .generate import generate_drop
        from .refresh import refresh

        drop = settings.data_dir / "demo-drop"
        if not (drop / "contacts.parquet").is_file():
            print(f"writing a demo drop to {drop}", file=sys.stderr)
            with ProgressBar() as bar:
                generate_drop(drop, companies, contacts, seed=42, progress=bar.update)
        print("building the first snapshot", file=sys.stderr)
        with StageLog() as stages:
            refresh(store, drop, memory_limit=settings.refresh_memory_limit,
                    progress=stages.stage)
    key_file = settings.data_dir / "demo-key"
    accounts = Accounts(settings.db_path, settings.max_keys_per_user)
    if key_file.is_file():
        key = key_file.read_text().strip()
        if accounts.authenticate(key) is not None:
            return key
    if accounts.get_user(DEMO_EMAIL) is None:
        accounts.create_user(DEMO_EMAIL, secrets.token_urlsafe(16))
    key, _ = accounts.create_key(DEMO_EMAIL, "demo")
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key


def main() -> int:
    settings = Settings.from_env()
    key = prepare(settings)
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    print(f"""
Demo key (user {DEMO_EMAIL}): {key}
Try it:
  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{"seniorities": ["VP", "Director"], "per_page": 3}}' \\
    http://{host}:{port}/v1/contacts/search
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
