"""Keys and tokens for keycard's JWT interop test, made with PyJWT and cryptography (an
independent JOSE implementation). Prints one JSON document:
{"jwks": {...}, "jwks_rotated": {...}, "good": {name: token}, "bad": {name: token},
 "rotated": token}
Usage: python3 jwt_tokens.py ISSUER AUDIENCE NOW
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives import serialization

iss, aud, now = sys.argv[1], sys.argv[2], int(sys.argv[3])

es = ec.generate_private_key(ec.SECP256R1())
ed = ed25519.Ed25519PrivateKey.generate()
rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
es2 = ec.generate_private_key(ec.SECP256R1())


def jwk(alg_cls, key, kid, alg):
    d = json.loads(alg_cls.to_jwk(key.public_key()))
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d


jwks = {"keys": [jwk(ECAlgorithm, es, "k-es", "ES256"), jwk(OKPAlgorithm, ed, "k-ed", "EdDSA"),
                 jwk(RSAAlgorithm, rs, "k-rs", "RS256")]}
jwks_rotated = {"keys": jwks["keys"] + [jwk(ECAlgorithm, es2, "k-es-2", "ES256")]}

claims = {"iss": iss, "aud": aud, "sub": "partner-svc", "exp": now + 300, "iat": now - 5,
          "scope": "orders:read", "jti": "tok-1"}


def sign(key, alg, kid, c=None, headers=None):
    h = {"kid": kid}
    h.update(headers or {})
    return jwt.encode(c or claims, key, algorithm=alg, headers=h)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def raw(header, payload, sig=b""):
    return b64(json.dumps(header).encode()) + "." + b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + "." + b64(sig)


good = {"ES256": sign(es, "ES256", "k-es"), "EdDSA": sign(ed, "EdDSA", "k-ed"),
        "RS256": sign(rs, "RS256", "k-rs")}

es_pub_pem = es.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
hs_input = b64(json.dumps({"alg": "HS256", "kid": "k-es"}).encode()) + "." + b64(json.dumps(claims).encode())
hs_sig = hmac.new(es_pub_pem, hs_input.encode(), hashlib.sha256).digest()

t = good["ES256"]
h, p, s = t.split(".")
tampered_claims = dict(claims, sub="admin")
bad = {
    "alg_none": raw({"alg": "none", "kid": "k-es"}, claims),
    "alg_None": raw({"alg": "nOnE", "kid": "k-es"}, claims),
    "hs256_with_public_key": hs_input + "." + b64(hs_sig),
    "embedded_jwk": sign(es, "ES256", "k-es", headers={"jwk": jwks["keys"][0]}),
    "jku": sign(es, "ES256", "k-es", headers={"jku": "http://127.0.0.1:9/jwks.json"}),
    "x5u": sign(es, "ES256", "k-es", headers={"x5u": "http://127.0.0.1:9/cert.pem"}),
    "unknown_crit": sign(es, "ES256", "k-es", headers={"crit": ["urn:example:ext"], "urn:example:ext": 1}),
    "unknown_kid": sign(es, "ES256", "k-nope"),
    "kid_path": sign(es, "ES256", "../../../etc/passwd"),
    "kid_sql": sign(es, "ES256", "k' OR '1'='1"),
    "expired": sign(es, "ES256", "k-es", dict(claims, exp=now - 120)),
    "not_yet_valid": sign(es, "ES256", "k-es", dict(claims, nbf=now + 600)),
    "wrong_iss": sign(es, "ES256", "k-es", dict(claims, iss="https://evil.example/")),
    "wrong_aud": sign(es, "ES256", "k-es", dict(claims, aud="another-api")),
    "missing_aud": sign(es, "ES256", "k-es", {k: v for k, v in claims.items() if k != "aud"}),
    "tampered_payload": h + "." + b64(json.dumps(tampered_claims).encode()) + "." + s,
    "tampered_header": b64(json.dumps({"alg": "ES256", "kid": "k-es", "typ": "JWT", "x": 1}).encode()) + "." + p + "." + s,
    "empty_signature": h + "." + p + ".",
    "truncated_signature": h + "." + p + "." + s[:20],
    "zero_signature": h + "." + p + "." + b64(b"\0" * 64),
    "too_large": sign(es, "ES256", "k-es", dict(claims, pad="A" * 65536)),
    "jwe": "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d",
}
dup_payload = ('{"iss":%s,"aud":%s,"sub":"partner-svc","sub":"admin","exp":%d}' % (json.dumps(iss), json.dumps(aud), now + 300)).encode()
dup_input = b64(json.dumps({"alg": "ES256", "kid": "k-es"}).encode()) + "." + b64(dup_payload)
der = es.sign(dup_input.encode(), ec.ECDSA(__import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()))
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
r, s_ = decode_dss_signature(der)
bad["duplicate_claims"] = dup_input + "." + b64(r.to_bytes(32, "big") + s_.to_bytes(32, "big"))

print(json.dumps({"jwks": jwks, "jwks_rotated": jwks_rotated, "good": good, "bad": bad,
                  "rotated": sign(es2, "ES256", "k-es-2")}))
