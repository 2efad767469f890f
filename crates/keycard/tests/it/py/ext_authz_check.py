"""A gRPC client of Envoy's external authorization service (envoy.service.auth.v3), built
with grpcio-tools from ext_authz.proto beside this file: sends keycard's ext_authz listener
the CheckRequests Envoy would, one per case read from stdin, and prints one JSON document:
a list of {"code", "http_status", "headers", "remove", "body"}, or {"error": <gRPC code
name>} for a call that failed.
Usage: python3 ext_authz_check.py HOST:PORT < cases.json
A case: {"method", "path", "host", "scheme", "headers": {...}, "raw": [[name, value], ...]
(sent as header_map, Envoy's encode_raw_headers), "body": "...", "source": "ip",
"digest_from": <index of an earlier case whose challenge to answer>, "digest_user",
"digest_password"}
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc
import requests.auth
import requests.utils

here = os.path.dirname(os.path.abspath(__file__))
out = tempfile.mkdtemp()
include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
rc = protoc.main(["protoc", f"-I{here}", f"-I{include}", f"--python_out={out}",
                  f"--grpc_python_out={out}", os.path.join(here, "ext_authz.proto")])
if rc != 0:
    sys.exit(f"protoc failed: {rc}")
sys.path.insert(0, out)
import ext_authz_pb2 as pb  # noqa: E402
import ext_authz_pb2_grpc as pb_grpc  # noqa: E402

target = sys.argv[1]
cases = json.load(sys.stdin)
results = []
with grpc.insecure_channel(target) as channel:
    stub = pb_grpc.AuthorizationStub(channel)
    for case in cases:
        http = pb.AttributeContext.HttpRequest(
            method=case.get("method", "GET"), path=case["path"],
            host=case.get("host", "api.example"), scheme=case.get("scheme", "https"),
            protocol="HTTP/1.1", size=-1)
        headers = dict(case.get("headers", {}))
        if "digest_from" in case:
            # Python requests' RFC 7616 implementation answers the challenge keycard gave.
            challenge = results[case["digest_from"]]["headers"]["www-authenticate"]
            auth = requests.auth.HTTPDigestAuth(case["digest_user"], case["digest_password"])
            auth.init_per_thread_state()
            auth._thread_local.chal = requests.utils.parse_dict_header(
                challenge.replace("Digest ", "", 1))
            url = f"{http.scheme}://{http.host}{http.path}"
            headers["authorization"] = auth.build_digest_header(http.method, url)
        for k, v in headers.items():
            http.headers[k] = v
        for k, v in case.get("raw", []):
            http.header_map.headers.add(key=k, raw_value=v.encode())
        if "body" in case:
            http.raw_body = case["body"].encode()
        source = pb.AttributeContext.Peer(address=pb.Address(
            socket_address=pb.SocketAddress(address=case.get("source", "203.0.113.7"),
                                            port_value=50000)))
        req = pb.CheckRequest(attributes=pb.AttributeContext(
            source=source, request=pb.AttributeContext.Request(http=http)))
        try:
            resp = stub.Check(req, timeout=10)
        except grpc.RpcError as e:
            results.append({"error": e.code().name})
            continue
        kind = resp.WhichOneof("http_response")
        r = {"code": resp.status.code, "http_status": None, "headers": {}, "remove": [],
             "body": None, "append_actions": []}
        if kind == "ok_response":
            r["http_status"] = 200
            options = resp.ok_response.headers
            r["remove"] = list(resp.ok_response.headers_to_remove)
        elif kind == "denied_response":
            r["http_status"] = resp.denied_response.status.code
            options = resp.denied_response.headers
            r["body"] = resp.denied_response.body
        else:
            options = []
        for o in options:
            r["headers"][o.header.key] = o.header.value
            r["append_actions"].append(o.append_action)
        results.append(r)
print(json.dumps(results))
