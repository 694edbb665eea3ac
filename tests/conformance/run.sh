#!/usr/bin/env bash
# Sends the official Alibaba Cloud Python SDKs' own calls to `certrotd emulate` (see
# conformance.py, v3_sdk.py, sdk_perdomain.py, sdk_cas.py, sdk_credentials.py; testcert.py is their shared test certificate). Installs the pinned SDKs into a throw-away virtualenv; needs python3 with
# venv and PyPI. Usage: tests/conformance/run.sh [path/to/certrotd]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/certrotd}"
if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --locked --quiet)
fi
venv="$(mktemp -d /tmp/certrotd-sdk-venv.XXXXXX)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" "$here/conformance.py" --certrotd "$bin"
"$venv/bin/python" "$here/v3_sdk.py" "$bin"
"$venv/bin/python" "$here/sdk_perdomain.py" --certrotd "$bin"
"$venv/bin/python" "$here/sdk_cas.py" "$bin"
"$venv/bin/python" "$here/sdk_credentials.py" "$bin"
