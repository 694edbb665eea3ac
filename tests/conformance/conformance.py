"""Conformance of `certrotd emulate` with Alibaba Cloud's official Python SDKs.

Starts the emulator (the binary given with --certrotd), sends it the official SDKs' own
calls and asserts the emulator accepts what the real API accepts and refuses what it refuses.
Prints one line per check and closes with `conformance: N passed, M failed`.
"""
import argparse, datetime, json, os, subprocess, sys, tempfile, time, traceback

from cryptography import x509
from testcert import self_signed

# The emulator's default AccessKey pair (a local fake, never a real secret).
AK_ID = "emulator"
AK_SECRET = "emulator-secret"

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


class Emulator:
    """`certrotd emulate` on a free loopback port, with a state dump to read back."""

    def __init__(self, certrotd, domains, extra=()):
        self.dir = tempfile.mkdtemp(prefix="certrotd-conformance-")
        domains_file = os.path.join(self.dir, "domains")
        with open(domains_file, "w") as f:
            f.write("\n".join(domains) + "\n")
        self.dump = os.path.join(self.dir, "dump.json")
        self.proc = subprocess.Popen(
            [certrotd, "emulate", "--domains-file", domains_file, "--state-dump", self.dump, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.addr = line[len("listening on "):]

    def state(self):
        with open(self.dump) as f:
            return json.load(f)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def core_call(emu, request, secret=None):
    """Sends an aliyun-python-sdk-core request (signature v1, HMAC-SHA1) to the emulator."""
    from aliyunsdkcore.client import AcsClient
    client = AcsClient(AK_ID, secret or AK_SECRET, "cn-hangzhou")
    request.set_endpoint(emu.addr)
    request.set_protocol_type("http")
    return json.loads(client.do_action_with_exception(request))


def tea_config(emu, signature_algorithm="v2", secret=None):
    from alibabacloud_tea_openapi import models as open_api_models
    cfg = open_api_models.Config(
        access_key_id=AK_ID,
        access_key_secret=secret or AK_SECRET,
        endpoint=emu.addr,
        protocol="http",
        region_id="cn-hangzhou",
    )
    if signature_algorithm:
        cfg.signature_algorithm = signature_algorithm
    return cfg


def cdn_client(emu, **kw):
    from alibabacloud_cdn20180510.client import Client
    return Client(tea_config(emu, **kw))


@check
def core_batch_set_accepted(emu, ctx):
    from aliyunsdkcdn.request.v20180510.BatchSetCdnDomainServerCertificateRequest import (
        BatchSetCdnDomainServerCertificateRequest,
    )
    cert, key = ctx["cert"]
    req = BatchSetCdnDomainServerCertificateRequest()
    req.set_DomainName("a.example.com,b.example.com")
    req.set_SSLProtocol("on")
    req.set_SSLPub(cert)
    req.set_SSLPri(key)
    req.set_CertType("upload")
    req.set_CertName("conformance-core-batch")
    req.set_ForceSet("1")
    resp = core_call(emu, req)
    assert resp.get("RequestId"), resp
    served = emu.state()["served"]
    for d in ("a.example.com", "b.example.com"):
        assert served[d]["cert_name"] == "conformance-core-batch", served.get(d)


@check
def core_describe_certificate(emu, ctx):
    from aliyunsdkcdn.request.v20180510.DescribeDomainCertificateInfoRequest import (
        DescribeDomainCertificateInfoRequest,
    )
    req = DescribeDomainCertificateInfoRequest()
    req.set_DomainName("a.example.com")
    resp = core_call(emu, req)
    infos = resp["CertInfos"]["CertInfo"]
    assert infos and infos[0]["DomainName"] == "a.example.com", resp
    assert "BEGIN CERTIFICATE" in infos[0]["ServerCertificate"], infos[0].keys()


@check
def core_wrong_secret_refused(emu, ctx):
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcdn.request.v20180510.DescribeUserDomainsRequest import DescribeUserDomainsRequest
    try:
        core_call(emu, DescribeUserDomainsRequest(), secret="not-the-secret")
    except ServerException as e:
        # The core SDK compares the server's echoed string-to-sign with its own and, when
        # they are equal, reports the real API's SignatureDoesNotMatch as a wrong secret:
        # so this also shows the emulator's string-to-sign is byte for byte the SDK's.
        assert e.get_error_code() == "InvalidAccessKeySecret", e.get_error_code()
        return
    raise AssertionError("a call signed with the wrong secret was accepted")


@check
def tea_v2_describe_certificate(emu, ctx):
    from alibabacloud_cdn20180510 import models
    resp = cdn_client(emu).describe_domain_certificate_info(
        models.DescribeDomainCertificateInfoRequest(domain_name="b.example.com")
    )
    infos = resp.body.cert_infos.cert_info
    assert infos and infos[0].domain_name == "b.example.com", resp.body.to_map()


@check
def tea_v2_user_domains(emu, ctx):
    from alibabacloud_cdn20180510 import models
    resp = cdn_client(emu).describe_user_domains(models.DescribeUserDomainsRequest(page_size=50))
    names = sorted(d.domain_name for d in resp.body.domains.page_data)
    assert "a.example.com" in names, names


@check
def tea_v3_default_describe_certificate(emu, ctx):
    """The SDK's default signature (V3, ACS3-HMAC-SHA256), no signature_algorithm set."""
    from alibabacloud_cdn20180510 import models
    resp = cdn_client(emu, signature_algorithm=None).describe_domain_certificate_info(
        models.DescribeDomainCertificateInfoRequest(domain_name="a.example.com")
    )
    infos = resp.body.cert_infos.cert_info
    assert infos and infos[0].domain_name == "a.example.com", resp.body.to_map()


@check
def tea_v3_wrong_secret_refused(emu, ctx):
    from alibabacloud_cdn20180510 import models
    from Tea.exceptions import TeaException
    try:
        cdn_client(emu, signature_algorithm=None, secret="not-the-secret").describe_user_domains(
            models.DescribeUserDomainsRequest(page_size=50)
        )
    except TeaException as e:
        assert e.code == "SignatureDoesNotMatch", e.code
        return
    raise AssertionError("a V3 call signed with the wrong secret was accepted")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--certrotd", required=True)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    emu = Emulator(args.certrotd, ["a.example.com", "b.example.com", "c.example.com"])
    ctx = {"cert": self_signed(["a.example.com", "b.example.com", "c.example.com"])[:2]}
    passed = failed = 0
    try:
        for fn in CHECKS:
            if args.only and args.only not in fn.__name__:
                continue
            try:
                fn(emu, ctx)
                print(f"ok   {fn.__name__}")
                passed += 1
            except Exception:
                print(f"FAIL {fn.__name__}")
                traceback.print_exc(file=sys.stdout)
                failed += 1
    finally:
        emu.stop()
    print(f"conformance: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
