"""Signs a request with Python's http-message-signatures (RFC 9421, hmac-sha256) and prints
what was sent, for keycard to verify: {"method", "url", "headers": {...}, "body"}.

usage: httpsig_sign.py URL KEY_B64 KEY_ID BODY
"""
import base64
import datetime
import json
import secrets
import sys

import requests
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

url, key_b64, key_id, body = sys.argv[1:5]
key = base64.b64decode(key_b64)


class Keys(HTTPSignatureKeyResolver):
    def resolve_private_key(self, k):
        return key


# The library adds Content-Digest (RFC 9530) itself.
req = requests.Request("POST", url, data=body.encode(), headers={"Content-Type": "application/json"}).prepare()
HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=Keys()).sign(
    req, key_id=key_id, created=datetime.datetime.now(datetime.timezone.utc), nonce=secrets.token_hex(12), body=body.encode(),
    covered_component_ids=("@method", "@authority", "@path", "@query", "content-type", "content-digest"))
print(json.dumps({"method": req.method, "url": req.url, "headers": dict(req.headers), "body": body}))
