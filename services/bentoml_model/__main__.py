"""``python -m services.bentoml_model`` (with .venv-bentoml's python): serve the BentoML model
server in the foreground, configured by the same SCORING_LAB_* variables as every lab service.

It is ``bentoml serve services.bentoml_model.service:Model --host H --port P --working-dir
<repo>`` run in this process, after two things a bare ``bentoml serve`` would not do: the
settings are checked (one line naming each bad variable, exit 2, as ``python -m services``
does), and the device's FIFO is made here, in BentoML's arbiter, before any worker exists, so
every worker shares its slots (services/device.py; the workers inherit this environment). The
process stays the arbiter: a supervisor's SIGTERM stops its workers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import ValidationError

from services import device
from services.settings import BENTOML_MODEL_PORT, Settings, error_lines

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "services.bentoml_model.service:Model"


def startup_error(settings: Settings) -> str | None:
    """Why the server cannot run as configured, or None."""
    if settings.model_batch_max_size < 2:
        return (f"SCORING_LAB_MODEL_BATCH_MAX_SIZE={settings.model_batch_max_size}: BentoML's "
                "batchable API needs a max batch size of at least 2")
    return None


def serve_args(settings: Settings) -> list[str]:
    """The ``bentoml`` command line this process runs."""
    return ["serve", SERVICE, "--host", settings.host,
            "--port", str(settings.port or BENTOML_MODEL_PORT),
            "--working-dir", str(ROOT),
            "--timeout-keep-alive", str(settings.keep_alive_s)]


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        for line in error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    if (reason := startup_error(settings)) is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    # The lab sends no usage data from the machines it measures.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    device.share_with_workers(settings)
    from bentoml_cli.cli import cli

    return cli.main(args=serve_args(settings), prog_name="bentoml")


if __name__ == "__main__":
    sys.exit(main())
