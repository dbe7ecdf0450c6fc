"""`make run` set-up: on first use a demo drop, a snapshot, a demo user and key; then serve.

The demo key is printed once, when it is made, and stored only as a hash like every key
(SPEC 2); a later `make run` says how to make a new one.
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
DEMO_COMPANIES, DEMO_CONTACTS, DEMO_SEED = 20_000, 200_000, 42  # the README's examples use it
NEW_KEY = f".venv/bin/quarry tokens create --user {DEMO_EMAIL} --name demo | tail -1"


def prepare(settings: Settings, companies: int = DEMO_COMPANIES,
            contacts: int = DEMO_CONTACTS) -> str | None:
    """Make sure there is a snapshot and a demo user with a key. Returns the key when it was
    made now; None when the demo user already has an active key (it cannot be shown again)."""
    store = SnapshotStore(settings.data_dir, settings.keep_snapshots)
    if store.current_version() is None:
        from .generate import generate_drop
        from .refresh import refresh

        drop = settings.data_dir / "demo-drop"
        if not (drop / "contacts.parquet").is_file():
            print(f"writing a demo drop to {drop}", file=sys.stderr)
            with ProgressBar() as bar:
                generate_drop(drop, companies, contacts, seed=DEMO_SEED, progress=bar.update)
        print("building the first snapshot", file=sys.stderr)
        with StageLog() as stages:
            refresh(store, drop, memory_limit=settings.refresh_memory_limit,
                    progress=stages.stage)
    # Earlier versions kept the demo key here in plain text; the key itself stays valid.
    (settings.data_dir / "demo-key").unlink(missing_ok=True)
    accounts = Accounts(settings.db_path, settings.max_keys_per_user)
    if accounts.get_user(DEMO_EMAIL) is None:
        accounts.create_user(DEMO_EMAIL, secrets.token_urlsafe(16))
    elif any(key.state == "active" for key in accounts.list_keys(DEMO_EMAIL)):
        return None
    key, _ = accounts.create_key(DEMO_EMAIL, "demo")
    return key


def main() -> int:
    from .cli import PRIVATE_UMASK

    os.umask(PRIVATE_UMASK)  # the demo snapshot is written here, not by `quarry refresh`
    settings = Settings.from_env()
    key = prepare(settings)
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    if key is None:
        print(f"""
The demo key of {DEMO_EMAIL} was shown when it was made and is not stored. A new one:
  {NEW_KEY}
Open http://{host}:{port}/ for the documentation and the API tokens page.
""")
        return 0
    print(f"""
Demo key (user {DEMO_EMAIL}), shown only now: copy it.
  {key}
Try it:
  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{"seniorities": ["VP", "Director"], "per_page": 3}}' \\
    http://{host}:{port}/v1/contacts/search
Open http://{host}:{port}/ for the documentation and the API tokens page.
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
