"""What no log line may show: access tokens in URLs, cookies, Authorization headers.

Pure and light (the standard library only): gunicorn's master reads it through
gunicorn_conf.py before its gevent worker patches anything. signin.init_app installs the
filter on the loggers that print a URL whole (redact_request_logs); gunicorn_conf.py's
logger redacts the atoms of gunicorn's access log.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

# A query runs to the next blank: a token may hold quotes (printable ASCII), and Werkzeug
# decodes %27 and %22 before it logs, so a quote is no end of the value.
_QUERY = re.compile(r"\?\S*")
# gunicorn's access log atoms: request headers ({name}i), response headers ({name}o) and
# environ variables ({name}e) a log format may name.
_SECRET_ATOMS = ("{cookie}i", "{authorization}i", "{set-cookie}o", "{http_cookie}e",
                 "{http_authorization}e")


def redact(text: str) -> str:
    """`text` with the value of every `token` query parameter in its URLs replaced."""
    if "?" not in text:
        return text
    return _QUERY.sub(lambda m: "?" + redact_query(m.group()[1:]), text)


def redact_query(query: str) -> str:
    """A query string with the value of every `token` parameter replaced (`%74oken` too:
    the server decodes the name before it looks)."""
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}=[redacted]" if eq and unquote(name).lower() == "token" else part)
    return "&".join(parts)


def redact_atoms(atoms: dict) -> dict:
    """gunicorn's access log atoms without tokens, cookies or Authorization headers."""
    for key in ("r", "{raw_uri}e", "{request_uri}e"):
        if isinstance(atoms.get(key), str):
            atoms[key] = redact(atoms[key])
    for key in ("q", "{query_string}e"):
        if isinstance(atoms.get(key), str):
            atoms[key] = redact_query(atoms[key])
    for key in _SECRET_ATOMS:
        if key in atoms:
            atoms[key] = "[redacted]"
    return atoms


# The loggers that print a request's URL whole: Werkzeug's request lines (`flask run`), and
# the errors of gevent's server (server.py names that logger) and of gunicorn's workers,
# which quote a malformed request line as it came.
REQUEST_LOGGERS = ("werkzeug", "gevent.pywsgi", "gunicorn.error")


class RedactTokens(logging.Filter):
    """On a logger whose lines carry URLs: `?token=...` redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_request_logs() -> None:
    """RedactTokens on each of REQUEST_LOGGERS, once per process (apps come and go in tests)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
