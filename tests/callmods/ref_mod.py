"""A module that speaks only the reference protocol (stdlib only, no pywatt import).

It behaves as the Rust reference does on stdio: reads the init line (ignores
pywatt_extensions), announces without extensions, and answers each http_request through
its own little router with the reference's stdout wrapper
({"content": <http_response fields>, "metadata": {...}}). It knows nothing of calls.
"""

import json
import sys
import uuid


def route(method, path, body):
    if method == "POST" and path == "/double":
        value = json.loads(bytes(body or []))
        return 200, {"content-type": "application/json"}, json.dumps({"double": value * 2})
    return 404, {"content-type": "application/json"}, json.dumps({"error": "not found"})


def main():
    init = json.loads(sys.stdin.readline())
    endpoints = [{"path": "/double", "methods": ["POST"]}]
    out = sys.stdout
    out.write(
        json.dumps({"op": "announce", "listen": init["listen"], "endpoints": endpoints}) + "\n"
    )
    out.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("op") == "shutdown":
            break
        if msg.get("op") != "http_request":
            continue
        status, headers, text = route(msg["method"], msg["uri"].split("?")[0], msg.get("body"))
        content = {
            "body": list(text.encode()),
            "headers": headers,
            "request_id": msg["request_id"],
            "status_code": status,
        }
        meta = {
            "id": str(uuid.uuid4()),
            "properties": {"correlation_id": msg["request_id"]},
            "source": init["module_id"],
        }
        out.write(
            json.dumps(
                {"content": content, "metadata": meta}, sort_keys=True, separators=(",", ":")
            )
            + "\n"
        )
        out.flush()


main()
