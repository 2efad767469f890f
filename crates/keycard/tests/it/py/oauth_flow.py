"""keycard's authorization server driven by independent clients: Authlib as the OAuth
client, `requests` as the browser on the real login and consent pages, pyotp for the
TOTP code, PyJWT verifying every token against /.well-known/jwks.json.

usage: oauth_flow.py CONFIG.json   (base, gateway path, clients, user; see oauth.rs)
Exits non-zero with a message on the first failed check; prints one JSON object of facts.
"""
import base64
import json
import re
import sys
import time
from urllib.parse import parse_qs, urljoin, urlparse

import jwt
import pyotp
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge

cfg = json.load(open(sys.argv[1]))
BASE = cfg["base"]
facts = {}


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)


meta = requests.get(f"{BASE}/.well-known/openid-configuration", timeout=10).json()
check(meta["issuer"] == BASE, f"issuer {meta['issuer']}")
check(meta["code_challenge_methods_supported"] == ["S256"], "S256 only")
check(meta["authorization_response_iss_parameter_supported"] is True, "RFC 9207 advertised")
check(requests.get(f"{BASE}/.well-known/oauth-authorization-server", timeout=10).json() == meta,
      "RFC 8414 metadata equals OIDC discovery")
jwks = jwt.PyJWKClient(meta["jwks_uri"])


def verify_access(token, audience=BASE):
    header = jwt.get_unverified_header(token)
    check(header["typ"] == "at+jwt", f"access token typ {header}")
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=[header["alg"]], audience=audience, issuer=BASE,
                      options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]})


def gateway(token):
    return requests.get(f"{BASE}{cfg['gateway_path']}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


# 1. Client credentials (client_secret_basic), then the gateway.
cc = OAuth2Session(cfg["cc_id"], cfg["cc_secret"], token_endpoint_auth_method="client_secret_basic")
tok = cc.fetch_token(meta["token_endpoint"], grant_type="client_credentials", scope="orders:read")
claims = verify_access(tok["access_token"])
check(claims["client_id"] == cfg["cc_id"] and claims["sub"] == cfg["cc_id"], f"cc claims {claims}")
check("refresh_token" not in tok, "no refresh token for client credentials")
r = gateway(tok["access_token"])
check(r.status_code == 200, f"gateway with cc token: {r.status_code} {r.text}")
up = r.json()["headers"]
check(up["x-keycard-method"] == "oauth2", f"method header {up}")
check(up["x-keycard-scopes"] == "orders:read", f"scopes header {up}")
check(up["x-keycard-subject"] == cfg["cc_id"], "subject header")
# A client's own token says so, to keycard (gty) and to the upstream (RFC 9700 §4.15).
check(claims.get("gty") == "client_credentials", f"cc token marked {claims}")
check(up["x-keycard-subject-kind"] == "client", f"subject kind header {up}")
facts["cc"] = {"scope": tok["scope"], "method": up["x-keycard-method"]}

# The same with client_secret_post is refused: the client registered client_secret_basic.
bad = requests.post(meta["token_endpoint"], data={"grant_type": "client_credentials", "client_id": cfg["cc_id"],
                                                   "client_secret": cfg["cc_secret"]}, timeout=10)
check(bad.status_code == 401 and bad.json()["error"] == "invalid_client", f"post for a basic client: {bad.text}")


# 2. Authorization code + PKCE through the real pages.
def hidden(html, name):
    m = re.search(r'name="%s" value="([^"]*)"' % name, html)
    check(m is not None, f"hidden field {name} in page")
    return m.group(1).replace("&amp;", "&").replace("&quot;", '"').replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")


def login_and_consent(browser, auth_url, code):
    r = browser.get(auth_url, allow_redirects=True, timeout=10)
    check(r.status_code == 200 and "/_keycard/login" in r.url, f"login page: {r.status_code} {r.url}")
    check('name="username"' in r.text and 'name="password"' in r.text and 'name="totp"' in r.text, "login fields")
    form = {"csrf": hidden(r.text, "csrf"), "request": hidden(r.text, "request"),
            "username": cfg["user"], "password": cfg["password"], "totp": code}
    r = browser.post(urljoin(BASE, "/_keycard/login"), data=form, allow_redirects=False, timeout=30)
    if r.status_code != 303:
        return r
    check("HttpOnly" in r.headers.get("set-cookie", "") and "SameSite=Lax" in r.headers["set-cookie"],
          f"session cookie flags {r.headers.get('set-cookie')}")
    r = browser.get(urljoin(BASE, r.headers["location"]), allow_redirects=False, timeout=10)
    check(r.status_code == 302, f"authorize after login: {r.status_code}")
    loc = r.headers["location"]
    if loc.startswith("/_keycard/consent"):
        r = browser.get(urljoin(BASE, loc), timeout=10)
        check(r.status_code == 200 and 'value="allow"' in r.text, "consent page")
        r = browser.post(urljoin(BASE, "/_keycard/consent"),
                         data={"csrf": hidden(r.text, "csrf"), "request": hidden(r.text, "request"),
                               "decision": "allow"}, allow_redirects=False, timeout=10)
        check(r.status_code == 303, f"consent post: {r.status_code} {r.text}")
    return r


web = OAuth2Session(cfg["web_id"], cfg["web_secret"], scope="openid orders:read",
                    redirect_uri=cfg["redirect_uri"], code_challenge_method="S256")
verifier = generate_token(64)
nonce = generate_token(20)
auth_url, state = web.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
check("code_challenge=" + create_s256_code_challenge(verifier) in auth_url, "authlib sent the S256 challenge")
totp = pyotp.TOTP(cfg["totp_secret"])
# Start on a fresh step so the same code cannot straddle a step boundary in this run.
while totp.interval - time.time() % totp.interval < 3:
    time.sleep(0.5)
code_now = totp.now()
browser = requests.Session()
r = login_and_consent(browser, auth_url, code_now)
callback = r.headers["location"]
q = parse_qs(urlparse(callback).query)
check(callback.startswith(cfg["redirect_uri"]), f"redirected to the registered URI: {callback}")
check(q["state"] == [state], "state round-tripped")
check(q["iss"] == [BASE], "iss in the authorization response (RFC 9207)")
tokens = web.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
check({"access_token", "refresh_token", "id_token"} <= set(tokens), f"token response {list(tokens)}")
at = verify_access(tokens["access_token"])
check(at["sub"] == cfg["user"] and at["client_id"] == cfg["web_id"], f"access token claims {at}")
id_header = jwt.get_unverified_header(tokens["id_token"])
idt = jwt.decode(tokens["id_token"], jwks.get_signing_key_from_jwt(tokens["id_token"]).key,
                 algorithms=[id_header["alg"]], audience=cfg["web_id"], issuer=BASE)
check(idt["nonce"] == nonce and idt["sub"] == cfg["user"], f"id token {idt}")
check("auth_time" in idt, "auth_time in the id token")
# OIDC Core §3.1.3.6: at_hash, computed here with PyJWT's own hash for the algorithm.
alg = jwt.get_algorithm_by_name(id_header["alg"])
digest = alg.compute_hash_digest(tokens["access_token"].encode())
expected = base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
check(idt.get("at_hash") == expected, f"at_hash {idt.get('at_hash')} != {expected}")
check("gty" not in at, "a user's token is not marked as a client's")
r = gateway(tokens["access_token"])
check(r.status_code == 200 and r.json()["headers"]["x-keycard-subject"] == cfg["user"], f"gateway: {r.text}")
check(r.json()["headers"]["x-keycard-subject-kind"] == "user", f"subject kind: {r.text}")
ui = requests.get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
check(ui.status_code == 200 and ui.json()["sub"] == cfg["user"], f"userinfo {ui.text}")
# An ID token is not an access token (RFC 9068 §4).
check(gateway(tokens["id_token"]).status_code == 401, "an ID token is refused at the gateway")

# The same TOTP code again, in another browser: refused (each code works once).
again = requests.Session()
r = again.get(auth_url, timeout=10)
r = again.post(urljoin(BASE, "/_keycard/login"),
               data={"csrf": hidden(r.text, "csrf"), "request": hidden(r.text, "request"),
                     "username": cfg["user"], "password": cfg["password"], "totp": code_now},
               allow_redirects=False, timeout=30)
check(r.status_code == 401 and "not right" in r.text, f"reused TOTP: {r.status_code}")

# 3. Refresh: rotated; the old refresh token then revokes the whole grant.
refreshed = web.refresh_token(meta["token_endpoint"], refresh_token=tokens["refresh_token"])
check(refreshed["refresh_token"] != tokens["refresh_token"], "refresh token rotated")
check(refreshed["access_token"] != tokens["access_token"], "new access token")
verify_access(refreshed["access_token"])
check(gateway(refreshed["access_token"]).status_code == 200, "refreshed token works")
reuse = requests.post(meta["token_endpoint"], auth=(cfg["web_id"], cfg["web_secret"]),
                      data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, timeout=10)
check(reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", f"reused refresh: {reuse.text}")
family = requests.post(meta["token_endpoint"], auth=(cfg["web_id"], cfg["web_secret"]),
                       data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]}, timeout=10)
check(family.status_code == 400, f"the family is revoked: {family.text}")
deadline = time.time() + 1.0
while gateway(refreshed["access_token"]).status_code == 200:
    check(time.time() < deadline, "access tokens of a revoked family refused within 1 s")
    time.sleep(0.05)
facts["auth_code"] = {"scope": tokens["scope"], "rotated": True, "family_revoked": True}

# 4. RP-initiated logout (OIDC RP-Initiated Logout 1.0) with the ID token as the hint: back
# to the registered URI with the state, and the browser's session is over.
check(meta["end_session_endpoint"] == f"{BASE}/oauth2/logout", f"end_session_endpoint {meta}")
out = browser.get(meta["end_session_endpoint"], params={
    "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": cfg["redirect_uri"],
    "state": "bye"}, allow_redirects=False, timeout=10)
check(out.status_code == 302, f"logout: {out.status_code} {out.text}")
check(out.headers["location"] == cfg["redirect_uri"] + "?state=bye", f"logout redirect {out.headers}")
r = browser.get(auth_url, allow_redirects=True, timeout=10)
check("/_keycard/login" in r.url, f"signed out: {r.url}")
# A return address the client did not register is refused, not followed.
evil = requests.get(meta["end_session_endpoint"], params={
    "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example/"},
    allow_redirects=False, timeout=10)
check(evil.status_code == 400 and "location" not in evil.headers, f"unregistered return: {evil.status_code}")
facts["logout"] = {"redirected": True, "session_ended": True}
print(json.dumps(facts))
