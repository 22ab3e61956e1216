"""Publish activity-store commands from Python with nats-py (pip install nats-py).

Usage: PRODUCER_NATS_URL=nats://producer:PASSWORD@127.0.0.1:4222 python3 publish.py [SUBJECT_PREFIX]
(`up` writes PRODUCER_NATS_URL into .activity-store/env; NATS_URL is read when it is unset.)
Prints each command's stream sequence; the store's tests run this file as it is.
"""
import asyncio
import json
import os
import sys
import uuid

import nats


async def main() -> None:
    prefix = sys.argv[1] if len(sys.argv) > 1 else "activity.commands"
    url = os.environ.get("PRODUCER_NATS_URL") or os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    nc = await nats.connect(url)
    js = nc.jetstream()
    tenant = "acme"
    commands = [
        {"type": "create_tenant", "tenant": tenant, "name": "Acme"},
        {"type": "register_user", "tenant": tenant, "user": "ann", "email": "ann@example.com"},
        {"type": "record_activity", "tenant": tenant, "user": "ann",
         "activity_type": "login", "metadata": {"ip": "10.0.0.1"}},
    ]
    for command in commands:
        # One id per command, kept across retries: uuid7 where available (Python 3.14+).
        command["id"] = str(uuid.uuid4())
        # Waits for the stream's ack; on error, retry with the same body and the same id.
        ack = await js.publish(
            f"{prefix}.{tenant}",
            json.dumps(command).encode(),
            # Scoped to the tenant: JetStream's duplicate window is stream-wide.
            headers={"Nats-Msg-Id": f"{tenant}:{command['id']}"},
        )
        print(ack.seq)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
