"""Conformance of the per-domain write calls with the official SDKs.

Starts `certrotd emulate` twice — the CDN (default) and DCDN (`--product dcdn`) — and sends
each one its official SDK's own per-domain call (`alibabacloud-cdn20180510`
SetCdnDomainSSLCertificate, `alibabacloud-dcdn20180115` SetDcdnDomainSSLCertificate, both
with signature_algorithm='v2'), and asserts they are accepted and the domain serves the
certificate. Then runs `certrotd sync` (api = "per-domain", a [dcdn] section) against the
same emulators and asserts that certrotd's calls carry every parameter name the SDKs' calls
did, from the emulators' request logs (which record parameter names, never values).
Prints one line per check and closes with `sdk_perdomain: N passed, M failed`.

Usage: python3 tests/conformance/sdk_perdomain.py --certrotd path/to/certrotd
"""
import argparse, datetime, json, os, subprocess, sys, tempfile, traceback

from cryptography import x509
from testcert import self_signed

AK_ID = "emulator"
AK_SECRET = "emulator-secret"
CDN_DOMAINS = ["a.example.com", "b.example.com"]
DCDN_DOMAINS = ["edge.example.com", "edge2.example.com"]


class Emulator:
    """`certrotd emulate` on a free loopback port, with a state dump to read back."""

    def __init__(self, certrotd, folder, name, domains, extra=()):
        domains_file = os.path.join(folder, f"{name}-domains")
        with open(domains_file, "w") as f:
            f.write("\n".join(domains) + "\n")
        self.dump = os.path.join(folder, f"{name}-dump.json")
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

    def log(self):
        return self.state()["log"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def tea_config(emu):
    from alibabacloud_tea_openapi import models as open_api_models
    cfg = open_api_models.Config(
        access_key_id=AK_ID,
        access_key_secret=AK_SECRET,
        endpoint=emu.addr,
        protocol="http",
        region_id="cn-hangzhou",
    )
    cfg.signature_algorithm = "v2"
    return cfg


def sdk_names(emu, action):
    """Parameter names of the successful calls of `action` in the log so far."""
    return [set(e["params"]) for e in emu.log() if e["action"] == action and e["status"] == 200]


def check_sdk_cdn(ctx):
    from alibabacloud_cdn20180510 import models
    from alibabacloud_cdn20180510.client import Client
    cdn = ctx["cdn"]
    cert, key = ctx["cert"]
    resp = Client(tea_config(cdn)).set_cdn_domain_sslcertificate(
        models.SetCdnDomainSSLCertificateRequest(
            domain_name="a.example.com",
            sslprotocol="on",
            cert_type="upload",
            cert_name="conformance-sdk-cdn",
            sslpub=cert,
            sslpri=key,
        )
    )
    assert resp.body.request_id, resp.body.to_map()
    served = cdn.state()["served"]["a.example.com"]
    assert served["cert_name"] == "conformance-sdk-cdn", served
    ctx["sdk_cdn"] = sdk_names(cdn, "SetCdnDomainSSLCertificate")[-1]


def check_sdk_dcdn(ctx):
    from alibabacloud_dcdn20180115 import models
    from alibabacloud_dcdn20180115.client import Client
    dcdn = ctx["dcdn"]
    cert, key = ctx["cert"]
    resp = Client(tea_config(dcdn)).set_dcdn_domain_sslcertificate(
        models.SetDcdnDomainSSLCertificateRequest(
            domain_name="edge.example.com",
            sslprotocol="on",
            cert_type="upload",
            cert_name="conformance-sdk-dcdn",
            sslpub=cert,
            sslpri=key,
        )
    )
    assert resp.body.request_id, resp.body.to_map()
    served = dcdn.state()["served"]["edge.example.com"]
    assert served["cert_name"] == "conformance-sdk-dcdn", served


def check_sdk_dcdn_read_back(ctx):
    from alibabacloud_dcdn20180115 import models
    from alibabacloud_dcdn20180115.client import Client
    resp = Client(tea_config(ctx["dcdn"])).describe_dcdn_domain_certificate_info(
        models.DescribeDcdnDomainCertificateInfoRequest(domain_name="edge.example.com")
    )
    infos = resp.body.cert_infos.cert_info
    assert infos and infos[0].domain_name == "edge.example.com", resp.body.to_map()
    assert infos[0].sslprotocol == "on" and "BEGIN CERTIFICATE" in infos[0].sslpub, infos[0].to_map()
    pages = Client(tea_config(ctx["dcdn"])).describe_dcdn_user_domains(
        models.DescribeDcdnUserDomainsRequest(page_size=50, page_number=1)
    )
    names = sorted(d.domain_name for d in pages.body.domains.page_data)
    assert names == sorted(DCDN_DOMAINS), names
    on = {d.domain_name: d.sslprotocol for d in pages.body.domains.page_data}
    assert on["edge.example.com"] == "on" and on["edge2.example.com"] == "off", on


def check_certrotd_names(ctx):
    """certrotd's own calls carry every parameter name the SDKs' calls did."""
    folder, cdn, dcdn, certrotd = ctx["dir"], ctx["cdn"], ctx["dcdn"], ctx["certrotd"]
    cert, key = ctx["cert"]
    lego = os.path.join(folder, "certificates")
    os.makedirs(lego, exist_ok=True)
    with open(os.path.join(lego, "example.com.crt"), "w") as f:
        f.write(cert)
    with open(os.path.join(lego, "example.com.key"), "w") as f:
        f.write(key)
    os.chmod(os.path.join(lego, "example.com.key"), 0o600)
    secret = os.path.join(folder, "secret")
    with open(secret, "w") as f:
        f.write(AK_SECRET)
    os.chmod(secret, 0o600)
    config = os.path.join(folder, "certrotd.toml")
    with open(config, "w") as f:
        f.write(
            f'[aliyun]\nendpoint = "http://{cdn.addr}"\naccess_key_id = "{AK_ID}"\n'
            f'access_key_secret_file = "{secret}"\napi = "per-domain"\n'
            f'[watch]\npaths = ["{lego}"]\n[state]\ndir = "{os.path.join(folder, "state")}"\n'
            f'[cdn]\ndomains = {json.dumps(CDN_DOMAINS)}\n'
            f'[dcdn]\nendpoint = "http://{dcdn.addr}"\ndomains = {json.dumps(DCDN_DOMAINS)}\n'
        )
    os.chmod(config, 0o600)
    before_cdn, before_dcdn = len(cdn.log()), len(dcdn.log())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env["HOME"] = folder
    run = subprocess.run([certrotd, "-c", config, "sync", "--force"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    for emu, before, action, sdk in (
        (cdn, before_cdn, "SetCdnDomainSSLCertificate", ctx["sdk_cdn"]),
        (dcdn, before_dcdn, "SetDcdnDomainSSLCertificate", sdk_names(dcdn, "SetDcdnDomainSSLCertificate")[0]),
    ):
        ours = [set(e["params"]) for e in emu.log()[before:] if e["action"] == action]
        assert ours, f"certrotd sent no {action}"
        for names in ours:
            missing = sdk - names
            assert not missing, f"certrotd's {action} lacks {sorted(missing)} (SDK sent {sorted(sdk)})"
        writes = [e for e in emu.log()[before:] if e["action"] != action and "Set" in e["action"]]
        assert not writes, f"certrotd used another write call: {writes}"
    # The log holds names, never the key.
    for emu in (cdn, dcdn):
        with open(emu.dump) as f:
            assert "PRIVATE KEY" not in f.read(), "key material in the emulator's dump"


CHECKS = [check_sdk_cdn, check_sdk_dcdn, check_sdk_dcdn_read_back, check_certrotd_names]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--certrotd", required=True)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="certrotd-sdk-perdomain-")
    cdn = Emulator(args.certrotd, folder, "cdn", CDN_DOMAINS)
    dcdn = Emulator(args.certrotd, folder, "dcdn", DCDN_DOMAINS, ["--product", "dcdn"])
    names = ["example.com", "*.example.com"]
    ctx = {"cdn": cdn, "dcdn": dcdn, "dir": folder, "certrotd": args.certrotd, "cert": self_signed(names)[:2]}
    passed = failed = 0
    try:
        for fn in CHECKS:
            try:
                fn(ctx)
                print(f"ok   {fn.__name__}")
                passed += 1
            except Exception:
                print(f"FAIL {fn.__name__}")
                traceback.print_exc(file=sys.stdout)
                failed += 1
    finally:
        cdn.stop()
        dcdn.stop()
    print(f"sdk_perdomain: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
