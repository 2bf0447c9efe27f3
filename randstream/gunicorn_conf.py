"""gunicorn's settings for this app, read by gunicorn from gunicorn.conf.py at the project
root (which imports this); an installed app names it: `gunicorn -c python:randstream.gunicorn_conf`.

Options on gunicorn's command line win over these.
"""

from gunicorn.glogging import Logger

from randstream import hosting
from randstream.redaction import redact_atoms

_settings = hosting.settings_or_exit()  # RANDOM_STREAM_*, checked once, before any worker

# The gevent worker serves at most this many connections at once and leaves the next one
# waiting, silently (gunicorn's default is 1,000): every session of --max-connections
# (RANDOM_STREAM_MAX_CONNECTIONS) and a reserve, so that the app's 503 comes first.
worker_connections = hosting.worker_connections(_settings)

# As random_stream.py's own listener asks (Linux caps it at net.core.somaxconn, 4096):
# a restart's herd of reconnects waits in the kernel rather than being refused.
backlog = hosting.LISTEN_BACKLOG

# What cannot work (--preload with the gevent worker) is one line and exit status 2.
on_starting = hosting.master_starting

# Each worker tells the app what it serves at once (threads, greenlets), and how many
# workers share the port: past that a clear 503, never a client left waiting.
post_worker_init = hosting.worker_ready


class RedactedLogger(Logger):
    """gunicorn's own logger, whose access log (off unless --access-logfile is given)
    shows no access token: `%(r)s` and `%(q)s` print the query, `/?token=...` included, and
    a format may name the Cookie or Authorization header. With --statsd-host, gunicorn's
    statsd logger takes the place of its default one only when named:
    --logger-class gunicorn.instrument.statsd.Statsd (its access log is not redacted)."""

    def atoms(self, resp, req, environ, request_time):
        return redact_atoms(super().atoms(resp, req, environ, request_time))


logger_class = RedactedLogger

# A worker that stops closes its clients (with a close packet, so they reconnect to another
# worker at once) and gives up the lease, as random_stream.py does, instead of leaving
# them open until --graceful-timeout or cut off.
worker_exit = hosting.worker_exiting
