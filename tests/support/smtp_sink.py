"""A real SMTP server for the tests (aiosmtpd), recording what it receives.

    python3 smtp_sink.py PORT OUTDIR [DELAY_MS]

Each accepted message becomes OUTDIR/<n>.json: its Message-ID, recipients,
subject, and decoded text and HTML parts (so tests need no MIME parser).
Recipients whose local part starts with "reject" get a permanent 550. With
DELAY_MS, each DATA waits that long (a slow server, to catch a worker mid-batch).
Prints "ready" once listening.
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import sys
import time

from aiosmtpd.controller import Controller

counter = itertools.count(1)


class Recorder:
    def __init__(self, outdir, delay):
        self.outdir = outdir
        self.delay = delay

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("reject"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay / 1000)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        record = {
            "message_id": message["Message-ID"],
            "to": envelope.rcpt_tos,
            "from": message["From"],
            "date": message["Date"],
            "subject": str(message["Subject"]),
            "text": text.get_content() if text else "",
            "html": html.get_content() if html else "",
        }
        name = f"{time.time_ns()}-{os.getpid()}-{next(counter)}"
        tmp = os.path.join(self.outdir, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(tmp, os.path.join(self.outdir, f"{name}.json"))
        return "250 Message accepted"


def main():
    port = int(sys.argv[1])
    outdir = sys.argv[2]
    delay = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    os.makedirs(outdir, exist_ok=True)
    controller = Controller(Recorder(outdir, delay), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
