#!/usr/bin/env bash
# Runs every test of Plugdesk: formatting and lints, unit tests, the end-to-end suite on SQLite,
# the webchat widget in a real browser, and the end-to-end suite on PostgreSQL. Installs what it
# needs (the toolchain's wasm target, Chromium, Node and npm, the PostgreSQL client) and starts
# the local PostgreSQL server if it is down.
#
#   bash tests/run.sh            # everything
#   PLUGDESK_SKIP_PG=1 bash tests/run.sh   # SQLite only
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${PLUGDESK_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

step() { printf '\n==> %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_toolchain() {
    # rust-toolchain.toml pins the compiler; make sure its extra target is there too.
    rustup show active-toolchain >/dev/null
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
}

ensure_postgres() {
    if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then
        step "installing the PostgreSQL client"
        as_root apt-get update -qq
        as_root apt-get install -y -qq postgresql-client >/dev/null
    fi
    if pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
    step "starting PostgreSQL"
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        as_root apt-get update -qq
        as_root apt-get install -y -qq postgresql >/dev/null
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p 5432 && return
        sleep 0.2
    done
    echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
    exit 1
}

ensure_browser_tools() {
    # playwright-core drives Debian's Chromium and downloads no browser of its own.
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_sqlite_client() {
    # Some end-to-end tests look at raw rows (encrypted secrets, stored payloads) with the
    # database's own client.
    if ! command -v sqlite3 >/dev/null; then
        step "installing the SQLite client"
        as_root apt-get update -qq
        as_root apt-get install -y -qq sqlite3 >/dev/null
    fi
}

ensure_python_email_corpus() {
    # tests/email.rs pipes CPython's e-mail test messages (test/test_email/data) through
    # `plugdesk mail-in`; Debian ships them apart from Python.
    local probe='import test.test_email'
    if python3 -c "$probe" 2>/dev/null || /usr/bin/python3 -c "$probe" 2>/dev/null; then return; fi
    step "installing CPython's test package (its e-mail corpus)"
    local minor
    minor=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    as_root apt-get update -qq
    as_root apt-get install -y -qq "libpython${minor}-testsuite" >/dev/null
}

ensure_toolchain
ensure_sqlite_client
ensure_python_email_corpus
# The e-mail tests (tests/email.rs in the suites below, and plugins/email) talk to real Dovecot
# and aiosmtpd; installs them once, quietly.
bash tests/mail/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "the crates keep their layers"
# Each crate may reach only the layers below it (ARCHITECTURE.md): the domain (core/domain) no
# runtime at all, not even through another crate; the core (channels, rules, templates) no
# HTTP server and no command line. What a lower layer needs of a higher one comes in through
# traits it defines.
layer_check() {
    local crate=$1 pattern=$2 found
    found=$(cargo tree -p "$crate" -e normal --prefix none | grep -oE "^($pattern)([-_][a-z0-9_-]+)? " \
        | awk '{print $1}' | sort -u || true)
    if [ -n "$found" ]; then
        echo "$crate depends on crates of a layer above it (see cargo tree -p $crate -i <name>):" >&2
        echo "$found" >&2
        exit 1
    fi
}
layer_check plugdesk-domain 'axum|hyper|tower|reqwest|wasmtime|rhai|handlebars|clap|plugdesk-(host|workflow|template|core|api)'
layer_check plugdesk-core 'axum|clap|tracing-subscriber|plugdesk-api'
layer_check plugdesk-api 'clap|plugdesk-web'
layer_check plugdesk-web 'clap|plugdesk-api'

step "a build with no change compiles nothing"
cargo build --workspace --quiet
if cargo build --workspace 2>&1 | grep -E '^\s*(Compiling|Running `.*build-script)'; then
    echo "a second build with no change compiled again: a build script watches something that changes (rerun-if-changed)" >&2
    exit 1
fi

step "tests on SQLite"
env -u DATABASE_URL cargo test --workspace

step "browser test of the webchat widget"
ensure_browser_tools
node --test plugins/webchat/src/widget.test.mjs
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
node tests/browser/webchat.mjs   # the server built by cargo test above, Chromium, 127.0.0.1 only

step "browser test of the agent workspace (sign-in, inbox, ticket, live updates, accessibility)"
node --test core/web/assets/composer.test.mjs
node tests/browser/workspace.mjs   # screenshots for review land in target/screenshots/

step "plugin SDK: its documentation example"
cargo test --manifest-path sdk/Cargo.toml --target-dir target/sdk

step "bundled plugins: their unit tests, natively"
# `email` has its own step below: its tests need the mail servers.
cargo test --manifest-path plugins/Cargo.toml --target "$(rustc -vV | sed -n 's/^host: //p')" --target-dir target/plugins-native --workspace --exclude email --quiet

step "e-mail parser (plugins/email-parse): unit, fixture and property tests, clippy, wasm build"
cargo fmt --manifest-path plugins/email-parse/Cargo.toml -- --check
cargo clippy --manifest-path plugins/email-parse/Cargo.toml --target-dir target/email-parse --all-targets --quiet -- -D warnings
cargo test --manifest-path plugins/email-parse/Cargo.toml --target-dir target/email-parse --quiet
cargo build --manifest-path plugins/email-parse/Cargo.toml --target-dir target/email-parse --target wasm32-wasip2 --release --quiet

step "e-mail channel (plugins/email): unit tests, and its IMAP/SMTP flows against real Dovecot and aiosmtpd"
cargo fmt --manifest-path plugins/Cargo.toml -p email -- --check
cargo clippy --manifest-path plugins/Cargo.toml --target "$(rustc -vV | sed -n 's/^host: //p')" --target-dir target/plugins-native -p email --all-targets --quiet -- -D warnings
cargo test --manifest-path plugins/Cargo.toml --target "$(rustc -vV | sed -n 's/^host: //p')" --target-dir target/plugins-native -p email --quiet

if [ -z "${PLUGDESK_SKIP_PG:-}" ]; then
    ensure_postgres
    step "end-to-end tests on PostgreSQL ($PG_URL)"
    DATABASE_URL="$PG_URL" cargo test --workspace --test api --test channels --test workflows --test email --test security --test web
fi
step "all tests passed"
