"""``python -m services``: start a service, or seed the feature store.

Every option of a running service comes from ``SCORING_LAB_*`` environment variables (the
settings class); the command line only says which of the four services to run.
"""

from __future__ import annotations

import argparse
import sys

import pydantic
import redis

from services import features
from services.settings import Arch, Role, Settings


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

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("--role", required=True, choices=[r.value for r in Role])
    serve.add_argument("--arch", required=True, choices=[a.value for a in Arch])

    seed = commands.add_parser("seed", help="store the entities' feature vectors (idempotent)")
    seed.add_argument("--redis-url", help="default: SCORING_LAB_REDIS_URL or the settings'")
    seed.add_argument("--entities", type=_positive_int, default=1000)
    return parser


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.serve import serve

    serve(Role(args.role), Arch(args.arch), settings)
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    url = args.redis_url or str(settings.redis_url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        created = features.seed(client, args.entities)
    except ValueError as exc:  # a malformed URL
        print(f"error: bad --redis-url {url!r}: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: cannot seed Redis at {url}: {exc}", file=sys.stderr)
        return 1
    print(f"seeded {args.entities} entities at {url} ({created} new)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            name = "SCORING_LAB_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"error: {name}={error.get('input')!r}: {error['msg']}", file=sys.stderr)
        return 2
    return {"serve": cmd_serve, "seed": cmd_seed}[args.command](args, settings)
