#!/usr/bin/env python3
"""Conformance: the official Python SDK's default signature (V3, ACS3-HMAC-SHA256) against
`certrotd emulate`.

Starts the emulator on a free loopback port, then through `alibabacloud-tea-openapi`'s
generic `call_api` (RPC style, form body, the SDK's own V3 signer and headers) makes a
DescribeUserDomains call, a BatchSetCdnDomainServerCertificate with a fresh self-signed P-256
certificate, reads it back with DescribeDomainCertificateInfo, and checks that a wrong secret
is refused with SignatureDoesNotMatch. Exit 0 when all hold.

Usage (from the repository root, after `cargo build`):
    python3 -m venv /tmp/v3-venv
    /tmp/v3-venv/bin/pip install alibabacloud-tea-openapi==0.4.6
    /tmp/v3-venv/bin/python tests/conformance/v3_sdk.py [path/to/certrotd]
The binary defaults to $CERTROTD, then target/debug/certrotd.
"""

import datetime
import os
import subprocess
import sys
import tempfile

from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.client import Client
from cryptography import x509
from testcert import self_signed

try:  # tea-openapi 0.4: the runtime options moved to darabonba
    from darabonba.runtime import RuntimeOptions
except ImportError:  # older releases
    from alibabacloud_tea_util.models import RuntimeOptions

AK, SECRET = "emulator", "emulator-secret"
DOMAINS = ["a.example.com", "b.example.com"]


def start_emulator(binary, folder):
    domains = os.path.join(folder, "domains.txt")
    with open(domains, "w") as f:
        f.write("\n".join(DOMAINS) + "\n")
    proc = subprocess.Popen(
        [binary, "emulate", "--listen", "127.0.0.1:0", "--domains-file", domains,
         "--access-key-id", AK, "--access-key-secret", SECRET],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"v3_sdk: the emulator did not start (first line {line!r})")
    return proc, line.removeprefix("listening on ")


def client(endpoint, secret):
    return Client(open_api_models.Config(
        access_key_id=AK, access_key_secret=secret, endpoint=endpoint, protocol="HTTP"))


def call(c, action, body=None, query=None):
    params = open_api_models.Params(
        action=action, version="2018-05-10", protocol="HTTP", pathname="/", method="POST",
        auth_type="AK", style="RPC", req_body_type="formData", body_type="json")
    request = open_api_models.OpenApiRequest(body=body, query=query)
    return c.call_api(params, request, RuntimeOptions())


def check(what, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""))
    return ok


def main():
    binary = (sys.argv[1] if len(sys.argv) > 1 else
              os.environ.get("CERTROTD", os.path.join("target", "debug", "certrotd")))
    results = []
    with tempfile.TemporaryDirectory() as folder:
        proc, endpoint = start_emulator(binary, folder)
        try:
            good = client(endpoint, SECRET)
            r = call(good, "DescribeUserDomains", body={"PageSize": 50})
            listed = [d["DomainName"] for d in r["body"]["Domains"]["PageData"]]
            results.append(check("DescribeUserDomains (V3, form body)", listed == DOMAINS, listed))

            chain, key, _ = self_signed(["a.example.com"])
            r = call(good, "BatchSetCdnDomainServerCertificate", body={
                "DomainName": "a.example.com", "SSLProtocol": "on", "CertType": "upload",
                "CertName": "v3-sdk-conformance", "ForceSet": "1",
                "SSLPub": chain, "SSLPri": key})
            results.append(check("BatchSetCdnDomainServerCertificate (V3, form body)",
                                 r["statusCode"] == 200 and "RequestId" in r["body"], r))

            r = call(good, "DescribeDomainCertificateInfo",
                     query={"DomainName": "a.example.com"})
            info = r["body"]["CertInfos"]["CertInfo"][0]
            results.append(check("DescribeDomainCertificateInfo (V3, query) reads it back",
                                 info.get("CertName") == "v3-sdk-conformance", info))

            try:
                call(client(endpoint, "wrong-secret"), "DescribeUserDomains", body={"PageSize": 1})
                results.append(check("a wrong secret is refused", False, "it was accepted"))
            except Exception as e:  # the SDK raises its own exception types
                code = getattr(e, "code", "")
                results.append(check("a wrong secret is refused with SignatureDoesNotMatch",
                                     code == "SignatureDoesNotMatch", f"{type(e).__name__}: {code}"))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
