"""A real SMTP server for the tests (aiosmtpd), recording what it receives.

    python3 smtp_sink.py PORT OUTDIR [DELAY_MS [light]]

Each accepted message becomes OUTDIR/<n>.json: its Message-ID, recipients,
subject, and decoded text and HTML parts (so tests need no MIME parser).
Recipients whose local part starts with "reject" get a permanent 550. With
DELAY_MS, each DATA waits that long (a slow server, to catch a worker mid-batch).
"light" records only the Message-ID and recipients, without parsing the MIME
body: the benchmark's sink, whose own CPU (one Python thread) must not be the
bottleneck being measured.
Prints "ready" once listening.
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import re
import sys
import time

from aiosmtpd.controller import Controller

counter = itertools.count(1)


MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>]*>)", re.IGNORECASE | re.MULTILINE)


class Recorder:
    def __init__(self, outdir, delay, light):
        self.outdir = outdir
        self.delay = delay
        self.light = light

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("reject"):
            # Quoting the address, as Postfix does.
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay / 1000)
        if self.light:
            found = MESSAGE_ID.search(envelope.content)
            record = {"message_id": found.group(1).decode() if found else None, "to": envelope.rcpt_tos}
            self.write(record)
            return "250 Message accepted"
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
        self.write(record)
        return "250 Message accepted"

    def write(self, record):
        name = f"{time.time_ns()}-{os.getpid()}-{next(counter)}"
        tmp = os.path.join(self.outdir, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(tmp, os.path.join(self.outdir, f"{name}.json"))


def main():
    port = int(sys.argv[1])
    outdir = sys.argv[2]
    delay = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    light = len(sys.argv) > 4 and sys.argv[4] == "light"
    os.makedirs(outdir, exist_ok=True)
    # SINK_SMTPUTF8=0: a relay that offers no SMTPUTF8, as many still do.
    smtputf8 = os.environ.get("SINK_SMTPUTF8", "1") != "0"
    controller = Controller(
        Recorder(outdir, delay, light), hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8
    )
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
