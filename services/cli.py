"""``python -m services``: start a service, or seed the feature store.

Every option of a running service comes from ``SCORING_LAB_*`` environment variables (the
settings class); the command line only says which service to run (model, scoring, or the job
queue's workers: `serve --role queue`), and which architecture.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pydantic
import redis

from services import features
from services.settings import Arch, Role, Settings, error_lines


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service in the foreground (queue: the "
                                "job queue's workers, no HTTP)")
    serve.add_argument("--role", required=True, choices=[r.value for r in Role])
    serve.add_argument("--arch", required=True, choices=[a.value for a in Arch])

    seed = commands.add_parser("seed", help="store the entities' feature vectors (idempotent)")
    seed.add_argument("--redis-url", help="default: SCORING_LAB_REDIS_URL or the settings'")
    seed.add_argument("--entities", type=_positive_int, default=1000)
    seed.add_argument("--password-file", type=Path,
                      help="read the Redis password from this file (keeps it out of argv)")
    seed.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait this long for Redis to answer (e.g. while it loads its dump)")
    seed.add_argument("--if-needed", action="store_true",
                      help="do nothing when the store already holds the entities (and, with "
                      "--persist, has them on disk)")
    seed.add_argument("--persist", action="store_true",
                      help="then write Redis's snapshot (SAVE): a restart reloads the features")
    return parser


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.serve import StartupError, serve

    try:
        serve(Role(args.role), Arch(args.arch), settings)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read --password-file {str(path)!r}: {exc.strerror}") from None
    if not password:
        raise ValueError(f"--password-file {str(path)!r} is empty")
    return password


def _connect(url: str, password: str | None, wait_s: float) -> redis.Redis:
    """A client that has answered PING; retries refused connections and a Redis still loading
    its snapshot for wait_s seconds (a wrong or missing password fails at once)."""
    extra = {"password": password} if password is not None else {}
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, **extra)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.ping()
            return client
        except redis.AuthenticationError:
            raise
        except (redis.ConnectionError, redis.TimeoutError):  # BusyLoadingError included
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    url = args.redis_url or str(settings.redis_url)
    shown = features.redact(url)
    try:
        password = _read_password(args.password_file)
        client = _connect(url, password, max(0.0, args.wait))
        held = features.stored_entities(client)
        if args.if_needed and held >= args.entities and (
                not args.persist or features.persisted(client, args.entities)):
            print(f"already seeded: {held} entities at {shown}")
            return 0
        created = features.seed(client, args.entities)
        if args.persist:
            features.persist(client)
    except ValueError as exc:  # a malformed URL or an unreadable password file
        print(f"error: bad seed arguments ({shown}): {exc}", file=sys.stderr)
        return 2
    except redis.AuthenticationError as exc:
        print(f"error: Redis at {shown} refused the password: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"error: cannot seed Redis at {shown}: {exc}", file=sys.stderr)
        return 1
    saved = ", saved to disk" if args.persist else ""
    print(f"seeded {args.entities} entities at {shown} ({created} new{saved})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except pydantic.ValidationError as exc:
        for line in error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    return {"serve": cmd_serve, "seed": cmd_seed}[args.command](args, settings)
