"""The `quarry` command line (SPEC section 6).

Every command exits 0 on success, and on failure prints one line `quarry: <reason>` to stderr
and exits non-zero (2 for bad input, 1 for anything else).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import math
import os
import signal
import sys
from pathlib import Path

from .config import ConfigError, Settings

PRIVATE_UMASK = 0o077


class CommandError(Exception):
    """A one-line reason a command was refused."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Snapshots, build folders and exports hold personal data, and DuckDB creates its files
    # itself: a process umask is what makes every file a command writes readable by its owner
    # only (0600, folders 0700), like the users database.
    os.umask(PRIVATE_UMASK)
    settings = None
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
        elif (isinstance(exc, AccountError) and settings is not None
              and message.startswith(("no user ", "no key "))):
            message += f" in the users database {settings.db_path}"  # run from the wrong place?
        print(f"quarry: {message}", file=sys.stderr)
        bad_input = (CommandError, ConfigError, AccountError, ValueError)
        return 2 if isinstance(exc, bad_input) else 1


class UsageParser(argparse.ArgumentParser):
    """argparse with the contract's error form: one line `quarry: <reason>` and exit 2, in
    place of argparse's usage lines (SPEC 6); `--help` still shows the whole usage."""

    def error(self, message: str):
        where = self.prog.removeprefix("quarry").strip()
        message = message.removeprefix("argument ")
        if message.startswith(("COMMAND: invalid choice", "ACTION: invalid choice")):
            message = "unknown " + message.replace(": invalid choice:", "", 1).replace(
                "ACTION", "action", 1).replace("COMMAND", "command", 1)
        elif message.startswith("the following arguments are required: COMMAND"):
            message = "give a command"
        elif message.startswith("the following arguments are required: ACTION"):
            message = "give an action"
        reason = f"{where} {message}" if message.startswith("-") else (
            f"{where}: {message}" if where else message)
        self.exit(2, f"quarry: {reason}; see '{self.prog} --help'\n")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _bounded(kind: type, minimum: float | None = None, maximum: float | None = None):
    """An argparse type: a number of `kind` within the bounds, else a reason in words."""
    words = {int: "a whole number", float: "a number"}[kind]
    if minimum is not None and maximum is not None:
        words += f" from {minimum:g} to {maximum:g}"
    elif minimum is not None:
        words += f" of at least {minimum:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {words}, got {text!r}") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {words}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="quarry", formatter_class=HelpFormatter,
                         description="Quarry: a B2B data API (companies and their people) served "
                                     "from immutable snapshots.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group, name: str, text: str, run=None) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".",
                               formatter_class=HelpFormatter)
        if run is not None:
            sub.set_defaults(run=run)
        return sub

    serve = command(commands, "serve", "serve the API over HTTP", cmd_serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_bounded(int, 0, 65535), default=8000,
                       help="TCP port to listen on")

    generate = command(commands, "generate", "write a synthetic drop, the same for a seed",
                       cmd_generate)
    generate.add_argument("--out", required=True, type=Path, metavar="DIR",
                          help="folder to write companies.<format> and contacts.<format> into "
                               "(made if missing)")
    generate.add_argument("--companies", type=_bounded(int, 0), default=20_000, metavar="N",
                          help="number of companies")
    generate.add_argument("--contacts", type=_bounded(int, 0), default=200_000, metavar="M",
                          help="number of contacts")
    generate.add_argument("--seed", type=_bounded(int, 0), default=0, metavar="S",
                          help="random seed; the same seed writes the same drop")
    generate.add_argument("--format", choices=("parquet", "csv"), default="parquet",
                          help="file format of the drop")

    refresh = command(commands, "refresh", "build a snapshot from a drop and switch to it",
                      cmd_refresh)
    refresh.add_argument("--source", required=True, type=Path, metavar="DIR",
                         help="the drop's folder, with companies and contacts as .parquet or "
                              ".csv")
    refresh.add_argument("--max-bad-share", type=_bounded(float, 0, 1), default=0.01,
                         metavar="F",
                         help="refuse the drop when more than this share of the rows of "
                              "either file is bad")

    sql = command(commands, "sql", "run an SQL file against the current snapshot and print "
                                   "the last statement's rows", cmd_sql)
    sql.add_argument("file", type=Path, help="the SQL file (views companies and contacts)")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table",
                     help="table: aligned for a terminal; csv: a header row, then rows; json: "
                          "one array of row objects")

    users = command(commands, "users", "manage users").add_subparsers(
        dest="users_command", required=True, metavar="ACTION")
    for name, run, text in (("create", cmd_users_create, "create a user"),
                            ("set-password", cmd_users_set_password,
                             "reset a user's password and end their web sessions")):
        action = command(users, name, text, run)
        action.add_argument("email", help="the user's email address")
        action.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of stdin (else it is "
                                 "asked for on the terminal)")

    tokens = command(commands, "tokens", "manage API keys").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION")
    create = command(tokens, "create", "create a key and print it, alone on the last line",
                     cmd_tokens_create)
    create.add_argument("--user", required=True, metavar="EMAIL", help="the key's owner")
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'laptop'")
    listing = command(tokens, "list", "list a user's keys: name, prefix, created, last used, "
                                      "state", cmd_tokens_list)
    listing.add_argument("--user", required=True, metavar="EMAIL", help="the keys' owner")
    revoke = command(tokens, "revoke", "revoke the key with this prefix", cmd_tokens_revoke)
    revoke.add_argument("prefix", help="the prefix shown by 'tokens list' (at least 6 "
                                       "characters), or the whole key")

    snapshots = command(commands, "snapshots", "list or switch snapshots").add_subparsers(
        dest="snapshots_command", required=True, metavar="ACTION")
    command(snapshots, "list", "list the kept snapshots: version, created, companies, "
                               "contacts, rows left out, current", cmd_snapshots_list)
    use = command(snapshots, "use", "switch the service to a kept snapshot",
                  cmd_snapshots_use)
    use.add_argument("version", help="a version shown by 'snapshots list'")

    export = command(commands, "export", "export a whole search of the current snapshot to a "
                                         "file", cmd_export)
    export.add_argument("--format", required=True, choices=("ndjson", "csv", "parquet", "arrow"),
                        help="file format")
    export.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="the file to write (it appears only when whole)")
    export.add_argument("--filters", default="{}", metavar="JSON",
                        help="the export's request fields as a JSON object, e.g. "
                             "'{\"seniorities\": [\"VP\"], \"limit\": 1000}'")
    export.add_argument("--companies", action="store_true",
                        help="export companies instead of contacts")
    return parser


# --- commands --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from .access_log import configure_access_log
    from .app import create_app
    from .logs import configure_logging
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
                            **uvicorn_options(settings))
    configure_access_log()
    configure_logging()  # after Config, which set up uvicorn's plain-text handlers: now JSON
    logging.getLogger("quarry").info("serving on http://%s:%s (data: %s)", args.host, args.port,
                                     settings.data_dir)
    Server(config).run()
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from .generate import generate_drop
    from .progress import ProgressBar

    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out {args.out} is a file; give a folder for the drop (made if "
                           "missing)")
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
    accounts = _accounts(settings, create=True)
    user = accounts.create_user(args.email, _read_password(args.password_stdin))
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
    manifests = SnapshotStore(settings.data_dir, settings.keep_snapshots).versions()
    if not manifests:  # not an error, but say where it looked: on stderr, stdout stays empty
        print(f"no snapshots kept in {settings.data_dir} (QUARRY_DATA_DIR)", file=sys.stderr)
    for manifest in manifests:
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
    _check_output_file(args.out)
    with ProgressBar() as bar:
        rows = export_to_file(settings, args.filters, args.format, args.out,
                              companies=args.companies, progress=bar.update)
    print(f"exported {rows:,} {'companies' if args.companies else 'contacts'} to {args.out}")
    return 0


# --- helpers ---------------------------------------------------------------------------------


def _accounts(settings: Settings, create: bool = False):
    """The users database; only `users create` may make it, so that a command run with the
    wrong QUARRY_DATA_DIR says where it looked instead of leaving an empty database there."""
    from .accounts import Accounts

    if not create and not settings.db_path.exists():
        raise CommandError(f"no users database at {settings.db_path}; 'quarry users create "
                           "EMAIL' makes it (QUARRY_DB or QUARRY_DATA_DIR say where it is)")
    return Accounts(settings.db_path, settings.max_keys_per_user)


def _check_output_file(path: Path) -> None:
    """Before the work starts: an export of millions of records must not fail at its end."""
    folder = path.absolute().parent
    if path.is_dir():
        raise CommandError(f"--out {path} is a folder; give a file name in it")
    if not folder.is_dir():
        raise CommandError(f"--out {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"--out {path}: cannot write in the folder {folder}")


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
