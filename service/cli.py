"""The `quarry` command line (SPEC section 6).

Every command exits 0 on success, and on failure prints one line `quarry: <reason>` to stderr
and exits non-zero (2 for bad input, 1 for anything else).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import signal
import sys
from pathlib import Path

from .config import ConfigError, Settings


class CommandError(Exception):
    """A one-line reason a command was refused."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.run(args, settings) or 0
    except KeyboardInterrupt:
        print("quarry: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `quarry ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # every failure ends as one line, never a traceback
        from .accounts import AccountError
        from .snapshots import SnapshotError

        expected = (CommandError, ConfigError, AccountError, SnapshotError, ValueError, OSError)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, expected):
            message = f"unexpected error: {type(exc).__name__}: {message}"
        print(f"quarry: {message}", file=sys.stderr)
        bad_input = (CommandError, ConfigError, AccountError, ValueError)
        return 2 if isinstance(exc, bad_input) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quarry", description="Quarry: a B2B data API.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_serve)

    generate = commands.add_parser("generate", help="write a synthetic drop")
    generate.add_argument("--out", required=True, type=Path)
    generate.add_argument("--companies", type=int, default=20_000)
    generate.add_argument("--contacts", type=int, default=200_000)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    generate.set_defaults(run=cmd_generate)

    refresh = commands.add_parser("refresh", help="build a snapshot from a drop and switch to it")
    refresh.add_argument("--source", required=True, type=Path)
    refresh.add_argument("--max-bad-share", type=float, default=0.01)
    refresh.set_defaults(run=cmd_refresh)

    sql = commands.add_parser("sql", help="run an SQL file against the current snapshot")
    sql.add_argument("file", type=Path)
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.set_defaults(run=cmd_sql)

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True, metavar="ACTION")
    for name, run, text in (("create", cmd_users_create, "create a user"),
                            ("set-password", cmd_users_set_password, "reset a password")):
        action = users.add_parser(name, help=text)
        action.add_argument("email")
        action.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of stdin")
        action.set_defaults(run=run)

    tokens = commands.add_parser("tokens", help="manage API keys").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION")
    create = tokens.add_parser("create", help="create a key and print it")
    create.add_argument("--user", required=True)
    create.add_argument("--name", required=True)
    create.set_defaults(run=cmd_tokens_create)
    listing = tokens.add_parser("list", help="list a user's keys")
    listing.add_argument("--user", required=True)
    listing.set_defaults(run=cmd_tokens_list)
    revoke = tokens.add_parser("revoke", help="revoke the key with this prefix")
    revoke.add_argument("prefix")
    revoke.set_defaults(run=cmd_tokens_revoke)

    snapshots = commands.add_parser("snapshots", help="list or switch snapshots").add_subparsers(
        dest="snapshots_command", required=True, metavar="ACTION")
    snapshots.add_parser("list", help="list kept snapshots").set_defaults(run=cmd_snapshots_list)
    use = snapshots.add_parser("use", help="switch the service to a kept snapshot")
    use.add_argument("version")
    use.set_defaults(run=cmd_snapshots_use)
    export = commands.add_parser("export", help="export a whole search to a file")
    export.add_argument("--format", required=True, choices=("ndjson", "csv", "parquet", "arrow"))
    export.add_argument("--out", required=True, type=Path)
    export.add_argument("--filters", default="{}", help="the request fields as a JSON object")
    export.add_argument("--companies", action="store_true",
                        help="export companies (default: contacts)")
    export.set_defaults(run=cmd_export)
    return parser


# --- commands --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from .access_log import configure_access_log
    from .app import create_app
    from .memory import use_jemalloc
    from .server import uvicorn_options

    use_jemalloc()

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # Finish the requests in flight, then exit 0; uvicorn would re-raise the signal.
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self.handle_exit)
            yield

    config = uvicorn.Config(create_app(settings), host=args.host, port=args.port,
                            log_level="warning", timeout_graceful_shutdown=10,
                            **uvicorn_options())
    configure_access_log()
    print(f"quarry: serving on http://{args.host}:{args.port} (data: {settings.data_dir})",
          file=sys.stderr)
    Server(config).run()
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from .generate import generate_drop
    from .progress import ProgressBar

    with ProgressBar() as bar:
        counts = generate_drop(args.out, args.companies, args.contacts, seed=args.seed,
                               fmt=args.format, progress=bar.update)
    print(f"wrote {counts['companies']:,} companies and {counts['contacts']:,} contacts "
          f"to {args.out}")
    return 0


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    from .progress import StageLog
    from .refresh import refresh
    from .snapshots import SnapshotStore

    store = SnapshotStore(settings.data_dir, settings.keep_snapshots)
    with StageLog() as stages:
        result = refresh(store, args.source, max_bad_share=args.max_bad_share,
                         memory_limit=settings.refresh_memory_limit, progress=stages.stage)
    for name, reasons in result.rejected.items():
        for reason, count in reasons.items():
            print(f"rejected {count:,} {name} rows: {reason}")
    print(f"snapshot {result.version} is current: {result.companies:,} companies, "
          f"{result.contacts:,} contacts ({result.seconds:.1f} s)")
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from .sql_runner import format_rows, run_sql_file

    columns, rows = run_sql_file(settings, args.file)
    sys.stdout.write(format_rows(columns, rows, args.format))
    return 0


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    user = _accounts(settings).create_user(args.email, _read_password(args.password_stdin))
    print(f"created user {user.email}")
    return 0


def cmd_users_set_password(args: argparse.Namespace, settings: Settings) -> int:
    accounts = _accounts(settings)
    if accounts.get_user(args.email) is None:
        raise CommandError(f"no user {args.email.strip().lower()}")
    accounts.set_password(args.email, _read_password(args.password_stdin))
    from .web_auth import WebSessions

    ended = WebSessions(settings.db_path).end_all(accounts.get_user(args.email).id)
    print(f"password of {args.email.strip().lower()} changed"
          + (f"; signed out of {ended} web session(s)" if ended else ""))
    return 0


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    key, info = _accounts(settings).create_key(args.user, args.name)
    print(f"created key {info.name!r} ({info.prefix}) for {args.user.strip().lower()}; "
          "it is shown once, store it now:")
    print(key)
    return 0


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = _accounts(settings).list_keys(args.user)
    _print_lines((k.name, k.prefix, _when(k.created_at), _when(k.last_used_at), k.state)
                 for k in keys)
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    info = _accounts(settings).revoke_key(args.prefix)
    print(f"revoked key {info.name!r} ({info.prefix})")
    return 0


def cmd_snapshots_list(args: argparse.Namespace, settings: Settings) -> int:
    from .snapshots import SnapshotStore

    rows = []
    for manifest in SnapshotStore(settings.data_dir, settings.keep_snapshots).versions():
        rejected = {name: sum(reasons.values())
                    for name, reasons in manifest["rejected"].items()}
        rows.append((manifest["version"], manifest["created_at"],
                     manifest["rows"]["companies"], manifest["rows"]["contacts"],
                     rejected["companies"] + rejected["contacts"],
                     "current" if manifest["current"] else ""))
    _print_lines(rows)
    return 0


def cmd_snapshots_use(args: argparse.Namespace, settings: Settings) -> int:
    from .snapshots import SnapshotStore

    SnapshotStore(settings.data_dir, settings.keep_snapshots).switch_to(args.version)
    print(f"snapshot {args.version} is current")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .export import export_to_file
    from .memory import use_jemalloc
    from .progress import ProgressBar

    use_jemalloc()
    with ProgressBar() as bar:
        rows = export_to_file(settings, args.filters, args.format, args.out,
                              companies=args.companies, progress=bar.update)
    print(f"exported {rows:,} {'companies' if args.companies else 'contacts'} to {args.out}")
    return 0


# --- helpers ---------------------------------------------------------------------------------


def _accounts(settings: Settings):
    from .accounts import Accounts

    return Accounts(settings.db_path, settings.max_keys_per_user)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CommandError("no password on stdin")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password; use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CommandError("the two passwords differ")
    return first


def _print_lines(rows) -> None:
    """One line per item, its fields separated by tabs (SPEC 6: `tokens list`, `snapshots
    list`): no header line, so that a script can count and split the lines."""
    for row in rows:
        print("\t".join(str(field) for field in row))


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "never"


if __name__ == "__main__":
    sys.exit(main())
