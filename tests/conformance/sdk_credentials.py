#!/usr/bin/env python3
"""Conformance: the official `alibabacloud-credentials` providers against `certrotd emulate`'s
STS and instance-metadata stand-ins.

Starts the emulator on a free loopback port, then asks the SDK's own providers for
credentials: OIDCRoleArnCredentialsProvider (AssumeRoleWithOIDC, unsigned, a JWT-shaped
token from a file), RamRoleArnCredentialsProvider (AssumeRole signed with the emulator's
AccessKey) and EcsRamRoleCredentialsProvider (IMDSv2 only: session token, role discovery,
credentials). Each must obtain an `STS.` AccessKeyId, a secret and a security token, and the
emulator's CDN side must accept a call signed with them (DescribeUserDomains through
alibabacloud-tea-openapi). A wrong OIDC token shape must be refused.

The providers hard-code https and the metadata address 100.100.100.200; TeaCore.do_action is
wrapped so that every request goes to the emulator on loopback over http (and any other
destination is refused: nothing leaves the machine).

Usage (from the repository root, after `cargo build`):
    tests/conformance/run.sh   (or: python3 tests/conformance/sdk_credentials.py [certrotd])
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time

for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(name, None)
os.environ["ALIBABA_CLOUD_IMDSV1_DISABLED"] = "true"

from Tea.core import TeaCore  # noqa: E402
from alibabacloud_credentials.provider import (  # noqa: E402
    EcsRamRoleCredentialsProvider,
    OIDCRoleArnCredentialsProvider,
    RamRoleArnCredentialsProvider,
    StaticAKCredentialsProvider,
)
from alibabacloud_tea_openapi import models as open_api_models  # noqa: E402
from alibabacloud_tea_openapi.client import Client  # noqa: E402

try:  # tea-openapi 0.4: the runtime options moved to darabonba
    from darabonba.runtime import RuntimeOptions
except ImportError:  # older releases
    from alibabacloud_tea_util.models import RuntimeOptions

AK, SECRET = "emulator", "emulator-secret"
ROLE_ARN = "acs:ram::1234567890123456:role/certrotd-cdn"
PROVIDER_ARN = "acs:ram::1234567890123456:oidc-provider/ack-rrsa"
EMULATOR = {"port": None}
_do_action = TeaCore.do_action


def to_emulator(request, runtime_option=None):
    """Sends the SDK's request to the emulator (http on loopback) whatever host it names."""
    host = request.headers.get("host", "").split(":")[0]
    if host not in ("127.0.0.1", "100.100.100.200", "sts.emulator.invalid"):
        raise RuntimeError(f"sdk_credentials: refusing to send to {host!r}")
    request.protocol = "http"
    request.headers["host"] = "127.0.0.1"
    request.port = EMULATOR["port"]
    return _do_action(request, runtime_option)


TeaCore.do_action = staticmethod(to_emulator)


def start_emulator(binary, folder):
    domains = os.path.join(folder, "domains.txt")
    with open(domains, "w") as f:
        f.write("a.example.com\n")
    proc = subprocess.Popen(
        [binary, "emulate", "--listen", "127.0.0.1:0", "--domains-file", domains,
         "--access-key-id", AK, "--access-key-secret", SECRET],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"sdk_credentials: the emulator did not start (first line {line!r})")
    return proc, line.removeprefix("listening on ")


def jwt(exp_offset):
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    claims = {"sub": "system:serviceaccount:certrotd:certrotd",
              "exp": int(time.time()) + exp_offset}
    return f"{b64({'alg': 'RS256'})}.{b64(claims)}.c2lnbmF0dXJl"


def check(name, creds, endpoint):
    key_id = creds.get_access_key_id()
    if not key_id.startswith("STS.") or not creds.get_access_key_secret() \
            or not creds.get_security_token():
        sys.exit(f"sdk_credentials: {name}: not temporary credentials: {key_id!r}")
    client = Client(open_api_models.Config(
        access_key_id=key_id, access_key_secret=creds.get_access_key_secret(),
        security_token=creds.get_security_token(), endpoint=endpoint, protocol="HTTP"))
    params = open_api_models.Params(
        action="DescribeUserDomains", version="2018-05-10", protocol="HTTP", pathname="/",
        method="POST", auth_type="AK", style="RPC", req_body_type="formData", body_type="json")
    reply = client.call_api(params, open_api_models.OpenApiRequest(), RuntimeOptions())
    if reply.get("statusCode") != 200:
        sys.exit(f"sdk_credentials: {name}: the CDN side refused the credentials: {reply}")
    print(f"ok: {name}: {key_id[:6]}… accepted by the CDN side")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "CERTROTD", "target/debug/certrotd")
    with tempfile.TemporaryDirectory() as folder:
        proc, addr = start_emulator(binary, folder)
        EMULATOR["port"] = int(addr.rsplit(":", 1)[1])
        endpoint = addr
        try:
            token_file = os.path.join(folder, "token")
            with open(token_file, "w") as f:
                f.write(jwt(3600))
            oidc = OIDCRoleArnCredentialsProvider(
                role_arn=ROLE_ARN, oidc_provider_arn=PROVIDER_ARN,
                oidc_token_file_path=token_file, role_session_name="sdk-conformance",
                sts_endpoint="sts.emulator.invalid")
            check("OIDCRoleArnCredentialsProvider", oidc.get_credentials(), endpoint)

            arn = RamRoleArnCredentialsProvider(
                credentials_provider=StaticAKCredentialsProvider(
                    access_key_id=AK, access_key_secret=SECRET),
                role_arn=ROLE_ARN, role_session_name="sdk-conformance",
                sts_endpoint="sts.emulator.invalid")
            check("RamRoleArnCredentialsProvider", arn.get_credentials(), endpoint)

            ecs = EcsRamRoleCredentialsProvider(disable_imds_v1=True)
            check("EcsRamRoleCredentialsProvider", ecs.get_credentials(), endpoint)

            with open(token_file, "w") as f:
                f.write("not-a-jwt")
            bad = OIDCRoleArnCredentialsProvider(
                role_arn=ROLE_ARN, oidc_provider_arn=PROVIDER_ARN,
                oidc_token_file_path=token_file, role_session_name="sdk-conformance",
                sts_endpoint="sts.emulator.invalid")
            try:
                bad.get_credentials()
                sys.exit("sdk_credentials: a malformed OIDC token was accepted")
            except Exception as e:  # the SDK raises CredentialException with the body
                if "AuthenticationFail.OIDCToken.Invalid" not in str(e):
                    sys.exit(f"sdk_credentials: unexpected refusal: {e}")
            print("ok: a malformed OIDC token is refused (AuthenticationFail.OIDCToken.Invalid)")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print("sdk_credentials: all checks passed")


if __name__ == "__main__":
    main()
