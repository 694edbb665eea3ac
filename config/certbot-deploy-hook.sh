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
#   2. Nudges certrotd: with the certrotd service running, `systemctl reload certrotd` (a
#      pass now); without it, one `certrotd sync`.
#
# The hook is optional: a running certrotd notices renewals by watching the files. It only
# saves the wait for the debounce, and covers hosts that run `certrotd sync` from certbot
# instead of the daemon.
set -eu

service=${CERTROTD_SERVICE:-certrotd.service}
certrotd=${CERTROTD:-certrotd}
key_group=${CERTROTD_KEY_GROUP-certrotd-keys}

say() {
    printf 'certrotd deploy hook: %s\n' "$*" >&2
}

if [ -n "$key_group" ] && [ -n "${RENEWED_LINEAGE:-}" ] && [ -e "$RENEWED_LINEAGE/privkey.pem" ]; then
    if getent group "$key_group" >/dev/null 2>&1; then
        # chgrp and chmod follow the live/ symlink to the key in archive/.
        chgrp "$key_group" "$RENEWED_LINEAGE/privkey.pem"
        chmod g+r "$RENEWED_LINEAGE/privkey.pem"
    fi
fi

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service"; then
    say "asking the running $service to sync now (systemctl reload)"
    exec systemctl reload "$service"
fi

if ! command -v "$certrotd" >/dev/null 2>&1; then
    say "$service is not running and '$certrotd' is not on PATH; set CERTROTD=/path/to/certrotd"
    exit 1
fi
say "$service is not running: running '$certrotd sync'"
exec "$certrotd" sync
