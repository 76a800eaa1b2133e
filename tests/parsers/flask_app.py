"""A plain Flask app that reports how Flask/Werkzeug parsed each request, for the differential
tests: every method on every path answers 200 application/json (see README.md for the fields).

Runs on Werkzeug's own server on 127.0.0.1 and an ephemeral port, prints `PORT <n>` as its first
line of stdout, and exits as soon as its stdin reaches EOF, so a test that dies never leaves it
running.
"""

import json
import logging
import os
import sys
import threading

from flask import Flask, Response, request
from werkzeug.serving import make_server

app = Flask(__name__)

OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


def _safe(fn):
    """A field that Werkzeug refuses to compute is reported as {"error": ...} instead of a 500."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the error itself is what the test wants to see
        return {"error": f"{type(exc).__name__}: {exc}"}


def _headers():
    out = {}
    for name, value in request.headers.items():
        out.setdefault(name.lower(), []).append(value)
    return out


def _report():
    environ = request.environ
    args = _safe(lambda: request.args.to_dict(flat=False))
    multi = args if isinstance(args, dict) and "error" not in args else {}
    return {
        "framework": "flask",
        "method": request.method,
        "raw_method": environ.get("REQUEST_METHOD"),
        "path": _safe(lambda: request.path),
        "raw_path": environ.get("RAW_URI", environ.get("REQUEST_URI")),
        "script_root": _safe(lambda: request.script_root),
        "host": _safe(lambda: request.host),
        "args": args,
        "args_first": {k: v[0] for k, v in multi.items()},
        "args_last": {k: v[-1] for k, v in multi.items()},
        "headers": _safe(_headers),
        "form": _safe(lambda: request.form.to_dict(flat=False)),
        "cookies": _safe(lambda: request.cookies.to_dict()),
        "override": {
            **{h: request.headers.get(h) for h in OVERRIDE_HEADERS},
            "_method": _safe(lambda: request.values.get("_method")),
            "_method_query": _safe(lambda: request.args.get("_method")),
            "_method_form": _safe(lambda: request.form.get("_method")),
        },
        "environ_http": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
    }


@app.before_request
def answer_everything():
    # Runs before the routing result is acted on, so no method or path ever 404s or 405s.
    body = json.dumps(_report(), sort_keys=True)
    return Response(body, status=200, mimetype="application/json")


def _exit_on_stdin_eof():
    try:
        while sys.stdin.buffer.read(65536):
            pass
    finally:
        os._exit(0)


def main():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    sys.stdout.write(f"PORT {server.server_port}\n")
    sys.stdout.flush()
    threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
