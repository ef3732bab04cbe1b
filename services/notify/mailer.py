"""SMTP delivery as a nameko dependency: settings from configuration, one connection per batch."""
import smtplib
from email.policy import compat32

from nameko.extensions import DependencyProvider

from services.common.settings import setting


SMTP_LINES = compat32.clone(linesep="\r\n")


class SmtpSettings:
    def __init__(self, config):
        self.host = setting(config, "SMTP_HOST", "127.0.0.1")
        self.port = setting(config, "SMTP_PORT", 1025)
        self.timeout = setting(config, "SMTP_TIMEOUT", 10.0)
        self.starttls = setting(config, "SMTP_STARTTLS", False)
        self.user = setting(config, "SMTP_USER", None, str)
        self.password = setting(config, "SMTP_PASSWORD", None, str)


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
        # when the outbox next needs a look: a retry this process scheduled, or a sweep
        self.next_scan_ts = 0.0

    def scan_by(self, ts):
        self.next_scan_ts = min(self.next_scan_ts, ts)

    def connect(self):
        return Connection(self.settings)


class Mailer(DependencyProvider):
    def setup(self):
        self.server = MailServer(SmtpSettings(self.container.config))

    def get_dependency(self, worker_ctx):
        return self.server
