"""A WSGI application on Python's own `wsgiref` server (PEP 3333): it decodes `%2F` into
PATH_INFO and reads `X_Foo` and `X-Foo` as one `HTTP_X_FOO`, as CGI-style servers do. Each
request's environ (PATH_INFO, QUERY_STRING, REQUEST_METHOD, every HTTP_*) is appended to the
log file given as the first argument, and sent back as JSON. Answers in HTTP/1.0."""

import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def app(environ, start_response):
    seen = {
        k: v
        for k, v in environ.items()
        if k.startswith("HTTP_") or k in ("PATH_INFO", "QUERY_STRING", "REQUEST_METHOD")
    }
    with open(sys.argv[1], "a", encoding="utf-8") as log:
        log.write(json.dumps(seen) + "\n")
    body = json.dumps(seen).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
