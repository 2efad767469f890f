"""Verifies headers printed by `keycard sign` with Python's http-message-signatures (an
independent RFC 9421 implementation), then checks that a tampered copy fails.

usage: httpsig_verify.py CONFIG.json
CONFIG: {"url", "method", "body" (text or null), "headers" (the request's own),
         "signed" (what keycard sign printed), "key_b64", "key_id"}
Prints {"covered": [...], "parameters": {...}, "tampered_refused": true}.
"""
import base64
import json
import sys

import requests
from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, algorithms
from http_message_signatures.exceptions import InvalidSignature

cfg = json.load(open(sys.argv[1]))
key = base64.b64decode(cfg["key_b64"])


class Keys(HTTPSignatureKeyResolver):
    def resolve_public_key(self, key_id):
        if key_id != cfg["key_id"]:
            raise KeyError(key_id)
        return key


def prepared(url):
    headers = dict(cfg["headers"])
    headers.update(cfg["signed"])
    body = cfg["body"].encode() if cfg["body"] is not None else None
    return requests.Request(cfg["method"], url, headers=headers, data=body).prepare()


verifier = HTTPMessageVerifier(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=Keys())
results = verifier.verify(prepared(cfg["url"]))
covered = list(results[0].covered_components.keys())
params = {k: v for k, v in results[0].parameters.items()}
try:
    verifier.verify(prepared(cfg["url"].replace("/orders", "/orderz")))
    tampered_refused = False
except InvalidSignature:
    tampered_refused = True
print(json.dumps({"covered": covered, "parameters": params, "tampered_refused": tampered_refused}, default=str))
