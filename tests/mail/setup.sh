#!/usr/bin/env bash
# Installs what Plugdesk's mail test fixture (tests/mail/mailserver.py) needs, once per machine:
#   - Dovecot's IMAP server (Debian package dovecot-imapd), with the system-wide dovecot
#     service stopped and disabled: the fixture runs private instances on 127.0.0.1 only;
#   - aiosmtpd (PyPI) for the same python3 that will run mailserver.py.
# Idempotent: does nothing that is already done. Quiet unless something fails.
#
#   bash tests/mail/setup.sh            # PYTHON=/path/to/python3 to choose the interpreter
set -euo pipefail

AIOSMTPD_VERSION="1.4.6"
PYTHON="${PYTHON:-python3}"

die() { printf 'tests/mail/setup.sh: error: %s\n' "$*" >&2; exit 1; }
note() { printf 'tests/mail/setup.sh: %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH (set PYTHON=...)"
command -v openssl >/dev/null || need_openssl=1

# ---------------------------------------------------------------- Dovecot (apt)
dovecot_installed() {
    dpkg-query -W -f='${Status}' dovecot-imapd 2>/dev/null | grep -q 'install ok installed' &&
        command -v doveadm >/dev/null && [ -x /usr/sbin/dovecot ]
}

if ! dovecot_installed || [ -n "${need_openssl:-}" ]; then
    note "installing dovecot-imapd and openssl (apt)"
    # Keep the package's maintainer scripts from starting the system-wide dovecot (which would
    # listen on every address on 143/993): a policy-rc.d that forbids starts, only for the
    # duration of the install, unless the machine already has one.
    temp_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        temp_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# temporary, tests/mail/setup.sh\nexit 101\n' | as_root tee "$temp_policy" >/dev/null
        as_root chmod 755 "$temp_policy"
        trap 'as_root rm -f "$temp_policy"' EXIT
    fi
    log=$(mktemp)
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            dovecot-imapd openssl >"$log" 2>&1; then
        # The package lists may be missing or stale: update once and retry.
        if ! as_root apt-get update -qq >>"$log" 2>&1 ||
           ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
               -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
               dovecot-imapd openssl >>"$log" 2>&1; then
            tail -n 30 "$log" >&2
            rm -f "$log"
            die "apt-get install dovecot-imapd failed (output above)"
        fi
    fi
    rm -f "$log"
    if [ -n "$temp_policy" ]; then as_root rm -f "$temp_policy"; trap - EXIT; fi
    dovecot_installed || die "dovecot-imapd is still not installed after apt-get"
fi

# The system-wide service must be neither running nor enabled: stop it whichever way it was
# started, then disable it for sysvinit and systemd alike. All of it is harmless when already so.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/dovecot ]; then
    as_root /etc/init.d/dovecot stop >/dev/null 2>&1 || true
    if command -v update-rc.d >/dev/null; then
        as_root update-rc.d dovecot disable >/dev/null 2>&1 || true
    fi
fi
# A system instance that survived the above (private instances keep their pid file elsewhere).
pid=$(cat /run/dovecot/master.pid 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    as_root doveadm stop >/dev/null 2>&1 || as_root kill "$pid" 2>/dev/null || true
fi
id mail >/dev/null 2>&1 || die "the system user 'mail' is missing (mailserver.py keeps mail as that user)"

# ---------------------------------------------------------------- aiosmtpd (pip)
if ! "$PYTHON" -c 'import aiosmtpd' >/dev/null 2>&1; then
    note "installing aiosmtpd==$AIOSMTPD_VERSION (pip)"
    log=$(mktemp)
    if ! "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            "aiosmtpd==$AIOSMTPD_VERSION" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "pip install aiosmtpd==$AIOSMTPD_VERSION failed (output above)"
    fi
    rm -f "$log"
    "$PYTHON" -c 'import aiosmtpd' 2>/dev/null || die "aiosmtpd installed but '$PYTHON' cannot import it"
fi

note "ready: $(dovecot --version | cut -d' ' -f1) (dovecot), aiosmtpd $("$PYTHON" -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
