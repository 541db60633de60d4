"""Notification endpoints that really listen, on 127.0.0.1: an HTTP server that
apprise's json:// posts to, and an SMTP server (aiosmtpd) that its mailto:// sends to."""

import email
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Webhook:
    """A real HTTP server on 127.0.0.1 that keeps the JSON bodies posted to it
    and answers 500 while `failing` is set."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.failing = False
        self.answering = threading.Event()  # cleared: the server takes a request and says nothing
        self.answering.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.answering.wait()
                if hook.failing:
                    self.send_response(500)
                else:
                    hook.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_port}/hook?token=s3cr3t-hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.answering.set()
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 keeping the messages it receives."""

    def __init__(self):
        self.messages: list[email.message.Message] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                mailbox.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        with socket.socket() as probe:  # aiosmtpd checks its port by connecting: not 0
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # Imported here: conftest imports this module, and the compatibility job's
        # venv (scripts/compat.sh) has no test extras.
        from aiosmtpd.controller import Controller

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()
        self.url = (f"mailto://127.0.0.1:{port}?from=tsubmit@example.com&to=ops@example.com"
                    "&name=s3cr3t-mail")

    def text(self, message) -> str:
        parts = message.walk() if message.is_multipart() else [message]
        return "\n".join(part.get_payload(decode=True).decode() for part in parts
                         if part.get_content_type() == "text/plain")

    def close(self):
        self.controller.stop()
