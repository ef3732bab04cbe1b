"""A real SMTP server for local runs and tests: every message it accepts becomes a file in a
Maildir (default var/mail/), where tests and people can read it.

    python -m deploy.mail_sink --port 1025 --maildir var/mail

--tempfail N answers "451 try again later" to the first N messages (to rehearse a mail server
that is struggling); production points notify at the prefecture's real relay instead.
"""
import argparse
import mailbox
import signal
import threading
from pathlib import Path

from aiosmtpd.controller import Controller


class MaildirHandler:
    def __init__(self, maildir, tempfail=0):
        Path(maildir).parent.mkdir(parents=True, exist_ok=True)
        self.box = mailbox.Maildir(maildir, create=True)
        for sub in ("tmp", "new", "cur"):  # an existing empty folder is not made a Maildir
            (Path(maildir) / sub).mkdir(parents=True, exist_ok=True)
        self.tempfail = tempfail
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.tempfail > 0:
                self.tempfail -= 1
                return "451 4.3.0 Temporarily unable to accept mail, try again later"
            recipients = ", ".join(envelope.rcpt_tos)
            # like a real MTA's Received line: which client session delivered it
            peer = ":".join(str(part) for part in session.peer[:2])
            self.box.add(f"X-Envelope-To: {recipients}\r\nX-Peer: {peer}\r\n".encode()
                         + envelope.original_content)
        return "250 2.0.0 Message accepted"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", default="var/mail")
    parser.add_argument("--tempfail", type=int, default=0)
    args = parser.parse_args()
    controller = Controller(MaildirHandler(args.maildir, args.tempfail), hostname=args.host,
                            port=args.port, data_size_limit=10 * 1024 * 1024)
    controller.start()
    print(f"SMTP sink on {args.host}:{args.port}, messages in {args.maildir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
