#!/bin/sh
# certbot deploy hook for certrotd.
#
# Install (certbot runs every executable in this folder, as root, after each successful
# issuance or renewal, with RENEWED_LINEAGE=/etc/letsencrypt/live/<name>):
#
#   install -m 0755 certbot-deploy-hook.sh /etc/letsencrypt/renewal-hooks/deploy/certrotd
#
# What it does:
#   1. When the group certrotd-keys exists (the group the shipped systemd unit reads keys
#      with; override with CERTROTD_KEY_GROUP=name, disable with CERTROTD_KEY_GROUP=), gives
#      it read access to the lineage's private key. certbot creates the key of a *new*
#      certificate with mode 0600 and keeps the key's group and group mode bits on
#      renewals, so this matters for new certificates only.
#   2. Nudges certrotd: when systemd runs this host (/run/systemd/system exists) and the
#      certrotd service is active, `systemctl reload certrotd` (a pass now); otherwise one
#      `certrotd sync`. That sync hands the work to a `certrotd run` holding the state
#      folder (a daemon outside systemd, or in a sidecar container) and exits 0, or deploys
#      the renewal itself when no daemon runs.
#
# Output: one line on stdout (certbot logs it); stderr only when something is wrong, and
# then the exit code is not 0 (certbot reports "Hook 'deploy-hook' reported error code N").
# Exit codes are `certrotd sync`'s: 75 means another `certrotd sync` was running.
#
# The hook is optional: a running certrotd notices renewals by watching the files. It only
# saves the wait for the debounce, and covers hosts that run `certrotd sync` from certbot
# instead of the daemon.
#
# Settings (environment): CERTROTD (the binary, default `certrotd` on PATH), CERTROTD_SERVICE
# (default certrotd.service), CERTROTD_KEY_GROUP (above), CERTROTD_SYSTEMD_DIR (the folder
# whose presence means systemd is running, default /run/systemd/system, as sd_booted(3)).
set -eu

service=${CERTROTD_SERVICE:-certrotd.service}
certrotd=${CERTROTD:-certrotd}
key_group=${CERTROTD_KEY_GROUP-certrotd-keys}
systemd_dir=${CERTROTD_SYSTEMD_DIR:-/run/systemd/system}

say() {
    printf 'certrotd deploy hook: %s\n' "$*"
}

fail() {
    printf 'certrotd deploy hook: %s\n' "$*" >&2
    exit 1
}

if [ -n "$key_group" ] && [ -n "${RENEWED_LINEAGE:-}" ] && [ -e "$RENEWED_LINEAGE/privkey.pem" ]; then
    if getent group "$key_group" >/dev/null 2>&1; then
        # chgrp and chmod follow the live/ symlink to the key in archive/.
        chgrp "$key_group" "$RENEWED_LINEAGE/privkey.pem"
        chmod g+r "$RENEWED_LINEAGE/privkey.pem"
    fi
fi

# Without systemd as init (a container, a host booted otherwise) systemctl only prints
# "System has not been booted with systemd": do not ask it.
if [ -d "$systemd_dir" ] && command -v systemctl >/dev/null 2>&1 \
    && systemctl is-active --quiet "$service" 2>/dev/null; then
    say "asking the running $service to sync now (systemctl reload)"
    exec systemctl reload "$service"
fi

if ! command -v "$certrotd" >/dev/null 2>&1; then
    fail "$service is not running and '$certrotd' is not on PATH; set CERTROTD=/path/to/certrotd"
fi
exec "$certrotd" sync
