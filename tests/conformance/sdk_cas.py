#!/usr/bin/env python3
"""Conformance: the official CAS SDK (`alibabacloud-cas20200407`, API 2020-04-07) against
`certrotd emulate`, and certrotd's own CAS calls against the SDK's parameter names.

1. Through the SDK's own client (`signature_algorithm='v2'`, i.e. HMAC-SHA1 RPC): an
   `upload_user_certificate` of a fresh self-signed P-256 certificate, a
   `list_user_certificate_order` that finds it by domain name (with its `Sha2`), a second
   upload under the same name refused with `NameRepeat`, a `delete_user_certificate`, and the
   list empty again.
2. certrotd itself (`sync` with `[aliyun] store = "cas"`, then a renewal with cleanup on and
   no grace) against the same emulator: its UploadUserCertificate, ListUserCertificateOrder
   and DeleteUserCertificate requests carry every parameter name the SDK's did (the
   emulator's request log holds names only, never values).

Usage: sdk_cas.py [path/to/certrotd] (default $CERTROTD, then target/debug/certrotd).
Exit 0 when all hold.
"""

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from alibabacloud_cas20200407 import models as cas_models
from alibabacloud_cas20200407.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from cryptography import x509
from testcert import self_signed

AK, SECRET = "emulator", "emulator-secret"
DOMAIN = "www.example.com"
# Parameters every RPC request carries (envelope, not the action's).
COMMON = {
    "Action", "Version", "Format", "AccessKeyId", "SignatureMethod", "SignatureVersion",
    "SignatureNonce", "Timestamp", "Signature", "SecurityToken", "SignatureType", "RegionId",
}
FAILED = []


def ok(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILED.append(what)


def start_emulator(binary, folder):
    domains = os.path.join(folder, "domains.txt")
    with open(domains, "w") as f:
        f.write(DOMAIN + "\n")
    dump = os.path.join(folder, "dump.json")
    proc = subprocess.Popen(
        [binary, "emulate", "--listen", "127.0.0.1:0", "--domains-file", domains,
         "--access-key-id", AK, "--access-key-secret", SECRET, "--state-dump", dump],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"sdk_cas: the emulator did not start (first line {line!r})")
    return proc, line.removeprefix("listening on "), dump


def log(dump):
    with open(dump) as f:
        return json.load(f)["log"]


def names_of(entry):
    return set(entry.get("params", [])) - COMMON


def sdk_part(addr, dump):
    cas = Client(open_api_models.Config(
        access_key_id=AK, access_key_secret=SECRET, endpoint=addr, protocol="HTTP",
        signature_algorithm="v2", region_id="cn-hangzhou"))
    pem, key, sha2 = self_signed([DOMAIN], 30)
    up = cas.upload_user_certificate(cas_models.UploadUserCertificateRequest(
        name="sdk-upload", cert=pem, key=key, client_token="sdk-token-1"))
    cert_id = up.body.cert_id
    ok(isinstance(cert_id, int) and cert_id > 0, f"upload_user_certificate answered CertId {cert_id}")
    listed = cas.list_user_certificate_order(cas_models.ListUserCertificateOrderRequest(
        order_type="UPLOAD", keyword=DOMAIN, current_page=1, show_size=50))
    found = [c for c in listed.body.certificate_order_list or [] if c.certificate_id == cert_id]
    ok(listed.body.total_count == 1 and len(found) == 1,
       "list_user_certificate_order finds it by its domain name")
    ok(bool(found) and found[0].sha_2 == sha2 and found[0].name == "sdk-upload",
       "the list entry has its Name and Sha2 (the leaf's SHA-256)")
    try:
        cas.upload_user_certificate(cas_models.UploadUserCertificateRequest(
            name="sdk-upload", cert=pem, key=key))
        ok(False, "a second upload under the same name is refused")
    except Exception as e:  # the SDK raises its own error type with the code
        ok("NameRepeat" in str(e), "a second upload under the same name is refused with NameRepeat")
    cas.delete_user_certificate(cas_models.DeleteUserCertificateRequest(cert_id=cert_id))
    after = cas.list_user_certificate_order(cas_models.ListUserCertificateOrderRequest(
        order_type="UPLOAD", keyword=DOMAIN, current_page=1, show_size=50))
    ok(after.body.total_count == 0, "delete_user_certificate removed it")
    sdk = {}
    for e in log(dump):
        if e["status"] == 200 and e["action"] not in sdk:
            sdk[e["action"]] = names_of(e)
    return sdk


def certbot_tree(base, n, pem, key):
    archive = os.path.join(base, "archive", DOMAIN)
    live = os.path.join(base, "live", DOMAIN)
    os.makedirs(archive, exist_ok=True)
    os.makedirs(live, exist_ok=True)
    for stem, text in [("cert", pem), ("privkey", key), ("chain", ""), ("fullchain", pem)]:
        if stem == "chain":
            continue
        path = os.path.join(archive, f"{stem}{n}.pem")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        link = os.path.join(live, f"{stem}.pem")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(path, link)
    return os.path.join(base, "live")


def certrotd_part(binary, addr, dump, folder, sdk):
    secret = os.path.join(folder, "secret")
    with open(secret, "w") as f:
        f.write(SECRET)
    os.chmod(secret, 0o600)
    tree = os.path.join(folder, "letsencrypt")
    pem, key, _ = self_signed([DOMAIN], 30)
    live = certbot_tree(tree, 1, pem, key)
    config = os.path.join(folder, "certrotd.toml")
    with open(config, "w") as f:
        f.write(f'[aliyun]\nendpoint = "http://{addr}"\naccess_key_id = "{AK}"\n'
                f'access_key_secret_file = "{secret}"\nstore = "cas"\n'
                f'[watch]\npaths = ["{live}"]\n[state]\ndir = "{folder}/state"\n'
                f'[cdn]\ndomains = ["{DOMAIN}"]\n'
                f'[cas]\nendpoint = "http://{addr}"\ndelete_superseded = true\n'
                f'delete_after_hours = 0\n')
    env = {"PATH": os.environ.get("PATH", ""), "HOME": folder}

    def sync():
        r = subprocess.run([binary, "-c", config, "sync"], env=env, capture_output=True,
                           text=True, timeout=120)
        ok(r.returncode == 0, f"certrotd sync exit {r.returncode}" +
           ("" if r.returncode == 0 else f": {r.stdout}{r.stderr}"))

    start = len(log(dump))
    sync()
    time.sleep(1.1)  # a fresh rate window for the second pass's CAS calls
    pem2, key2, _ = self_signed([DOMAIN], 60)
    certbot_tree(tree, 2, pem2, key2)
    sync()
    ours = {}
    for e in log(dump)[start:]:
        if e["status"] == 200:
            ours.setdefault(e["action"], set()).update(names_of(e))
    for action in ["UploadUserCertificate", "ListUserCertificateOrder", "DeleteUserCertificate"]:
        missing = sdk.get(action, set()) - ours.get(action, set())
        ok(action in ours and not missing,
           f"certrotd's {action} carries every parameter the SDK's does "
           f"(SDK {sorted(sdk.get(action, set()))}, certrotd {sorted(ours.get(action, set()))})")
    writes = [e for e in log(dump)[start:] if e["action"].startswith(("BatchSet", "SetCdn"))]
    ok(bool(writes) and all("SSLPri" not in e["params"] and "SSLPub" not in e["params"]
                            for e in writes),
       "certrotd's CDN write calls bind by reference (no SSLPub, no SSLPri)")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "CERTROTD", "target/debug/certrotd")
    folder = tempfile.mkdtemp(prefix="certrotd-sdk-cas-")
    proc, addr, dump = start_emulator(binary, folder)
    try:
        sdk = sdk_part(addr, dump)
        certrotd_part(binary, addr, dump, folder, sdk)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"sdk_cas: {'all passed' if not FAILED else f'{len(FAILED)} failed'}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
