#!/usr/bin/env python3
"""Signs payment webhooks for `scripts/bench --pay-ratio` (standard library
only), the way a provider signs them (Standard Webhooks).

  sign_payments.py SECRET < ORDERS > DELIVERIES

ORDERS: one `order_id amount currency` per line. DELIVERIES: one
`webhook-id <TAB> webhook-timestamp <TAB> webhook-signature <TAB> body` per
line, timestamped now (the webhook accepts 5 minutes either way).
"""

import base64
import hashlib
import hmac
import json
import sys
import time


def main(secret):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    timestamp = str(int(time.time()))
    for line in sys.stdin:
        if not line.strip():
            continue
        order_id, amount, currency = line.split()
        event_id = f"evt_bench_{order_id}"
        body = json.dumps({"type": "payment.succeeded", "data": {
            "order_id": order_id, "amount": int(amount), "currency": currency}}, separators=(",", ":"))
        mac = hmac.new(key, f"{event_id}.{timestamp}.{body}".encode(), hashlib.sha256)
        print(f"{event_id}\t{timestamp}\tv1,{base64.b64encode(mac.digest()).decode()}\t{body}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
