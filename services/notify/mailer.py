"""SMTP delivery as a nameko dependency: settings from configuration, sessions kept open.

Opening a session costs a TCP connection, the greeting, EHLO, and in production TLS and a
login: more than the message itself. Sessions are kept for the next message, and checked
with NOOP before reuse, so a session the server dropped costs a reconnect, never a message.
"""
import smtplib
import time
from email._policybase import Compat32

from nameko.extensions import DependencyProvider

from services.common.settings import setting


class _SmtpLines(Compat32):
    """compat32 with CRLF line ends, writing a short plain header as it is: compat32 folds
    every header through email.header.Header, a third of a message's CPU, to the same bytes."""

    def _fold(self, name, value, sanitize):
        if (isinstance(value, str) and value.isascii() and "\n" not in value and "\r" not in value
                and value == value.strip() and len(name) + 2 + len(value) <= self.max_line_length):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


SMTP_LINES = _SmtpLines(linesep="\r\n")
KEEP_IDLE_SECONDS = 10  # servers drop idle sessions (often after 30 s or more): close ours first
KEEP_SESSIONS = 16


class SmtpSettings:
    def __init__(self, config):
        self.host = setting(config, "SMTP_HOST")
        self.port = setting(config, "SMTP_PORT")
        self.timeout = setting(config, "SMTP_TIMEOUT")
        self.starttls = setting(config, "SMTP_STARTTLS")
        self.user = setting(config, "SMTP_USER")
        self.password = setting(config, "SMTP_PASSWORD")


class Connection:
    """An open SMTP session that sends several messages in a row."""

    def __init__(self, settings):
        self.smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        if settings.starttls:
            self.smtp.starttls()
        if settings.user:
            self.smtp.login(settings.user, settings.password or "")

    def send(self, mime, sender, recipient):
        # sendmail passes bytes through as they are: SMTP wants CRLF line ends
        self.smtp.sendmail(sender, [recipient], mime.as_bytes(policy=SMTP_LINES))

    def alive(self):
        try:
            return self.smtp.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def close(self):
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()


class MailServer:
    """The configured server, and whether this process last found it unreachable."""

    def __init__(self, settings):
        self.settings = settings
        self.down = False
        self.last_error = None
        self._idle = []  # (connection, kept since): sessions between two messages

    def connect(self):
        """A session ready to send: a kept one that still answers, else a new one."""
        while self._idle:
            connection, since = self._idle.pop()
            if time.monotonic() - since < KEEP_IDLE_SECONDS and connection.alive():
                return connection
            connection.close()
        return Connection(self.settings)

    def keep(self, connection):
        """Give back a session that just sent fine, for the next message."""
        if len(self._idle) < KEEP_SESSIONS:
            self._idle.append((connection, time.monotonic()))
        else:
            connection.close()

    def close_all(self):
        while self._idle:
            self._idle.pop()[0].close()


class Mailer(DependencyProvider):
    def setup(self):
        self.server = MailServer(SmtpSettings(self.container.config))

    def stop(self):
        self.server.close_all()

    def kill(self):
        self.server.close_all()

    def get_dependency(self, worker_ctx):
        return self.server
