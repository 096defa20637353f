"""The meinheld defect the lab cannot contain, stated once for docs/services.md's "Known limits" and
for every experiment report (a report imports REPORT_NOTE; the containment test sends
TRAILER_REPRODUCER, so the stated reproducer is the tested one). No meinheld import here:
reports are built where meinheld need not load."""

from __future__ import annotations

# Any chunked request with a trailer field, on any path: meinheld 1.0.2's C parser adds the
# trailer through a header value it already consumed (NULL) and the worker dies of SIGSEGV.
TRAILER_REPRODUCER = (
    b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n0\r\nX-T: t\r\n\r\n"
)

REPORT_NOTE = (
    "- Known limit of the sync server (meinheld 1.0.2, not contained): one chunked request "
    "with a trailer field kills the meinheld worker that parses it (SIGSEGV in meinheld's C "
    "parser, before any Python code runs). gunicorn replaces the worker (about 0.03 s); the "
    "connections that worker held are lost. Reproducer: `printf '"
    + TRAILER_REPRODUCER.decode().replace("\r", "\\r").replace("\n", "\\n")
    + "' | curl -s telnet://127.0.0.1:5001`. No such request is part of these load tests."
)

# Statuses of meinheld's own fixed HTML pages, written in C before the app runs (docs/services.md,
# "Known limits of meinheld"): bad framing/headers 400, incomplete request 408, unsizable body
# 411, body over its 16 MiB limit 413, unknown Expect 417. The fuzz suite accepts an HTML body
# from the sync stack for these and no other status.
HTML_PAGE_STATUSES = frozenset({400, 408, 411, 413, 417})
