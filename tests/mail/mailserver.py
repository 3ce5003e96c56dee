#!/usr/bin/env python3
"""Real mail servers on 127.0.0.1 for Plugdesk's e-mail channel tests.

    mailserver.py serve   --dir D [--ports auto|IMAP,IMAPS,SMTP,SMTPS] [--user U --password P]
    mailserver.py deliver --dir D [--user U] [--mailbox INBOX] FILE.eml [FILE.eml ...]   ("-" = stdin)
    mailserver.py fill    --dir D --count N [--user U] [--seen] [--seed S]
    mailserver.py stop    --dir D

`serve` (the default when the first argument is an option) starts, all bound to 127.0.0.1 only:
  * a private Dovecot instance (IMAP with STARTTLS, and IMAPS), configured entirely inside D;
  * an aiosmtpd SMTP sink (STARTTLS, AUTH PLAIN/LOGIN) plus an implicit-TLS SMTPS port, which
    stores every accepted message as D/smtp-out/NNNN.eml (the raw DATA bytes) and lists every
    DATA transaction, envelope included, in D/smtp-out/index.json;
then prints one JSON line on stdout and runs until SIGTERM/SIGINT, when it stops Dovecot and exits.
D/smtp-script.json, a JSON list such as ["451", "550 5.1.1 No such user"], scripts the replies to
DATA: each transaction consumes the first entry ("250" = accept normally); absent or empty = accept.

Needs Dovecot and aiosmtpd: run tests/mail/setup.sh once.
"""

import argparse
import asyncio
import base64
import ctypes
import functools
import grp
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from email.header import Header
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

HOST = "127.0.0.1"
DEFAULT_USER = "support@plugdesk.test"
DEFAULT_PASSWORD = "plugdesk-test-password"
STATE_FILE = "mailserver.json"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
SCRIPT_DEFAULT_TEXT = {
    "250": "250 OK",
    "421": "421 4.3.2 Scripted: service not available, closing transmission channel",
    "450": "450 4.2.0 Scripted: mailbox unavailable, try again later",
    "451": "451 4.3.0 Scripted: local error in processing, try again later",
    "452": "452 4.2.2 Scripted: insufficient storage",
    "550": "550 5.7.1 Scripted: message rejected",
    "552": "552 5.3.4 Scripted: message too big",
    "554": "554 5.6.0 Scripted: transaction failed",
}


def fail(msg):
    print(f"mailserver.py: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# --------------------------------------------------------------------------- layout and users

class Layout:
    """Every path the fixture uses, all inside the scratch directory (except a short base_dir
    under /tmp when the scratch path is too long for Dovecot's unix sockets)."""

    def __init__(self, scratch):
        self.dir = os.path.abspath(scratch)
        j = lambda *p: os.path.join(self.dir, *p)  # noqa: E731
        self.state = j(STATE_FILE)
        self.dovecot_dir = j("dovecot")
        self.conf = j("dovecot", "dovecot.conf")
        self.users = j("dovecot", "users")
        self.dovecot_state = j("dovecot", "state")
        self.base_dir = j("dovecot", "run")
        self.dovecot_log = j("dovecot.log")
        self.dovecot_stderr = j("dovecot", "stderr.log")
        self.tls = j("tls")
        self.cert = j("tls", "cert.pem")
        self.key = j("tls", "key.pem")
        self.mail = j("mail")
        self.smtp_out = j("smtp-out")
        self.smtp_index = j("smtp-out", "index.json")
        self.smtp_script = j("smtp-script.json")
        self.smtp_log = j("smtp.log")

    def home(self, user):
        return os.path.join(self.mail, user)

    def maildir(self, user):
        return os.path.join(self.home(user), "Maildir")


def mail_ids():
    """uid/gid that owns the mail files and runs the imap processes. Dovecot refuses uid 0 for
    mail access, so as root that is Debian's 'mail' system user; otherwise the current user."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    import pwd
    try:
        pw = pwd.getpwnam("mail")
    except KeyError:
        fail("the system user 'mail' is missing (run tests/mail/setup.sh)")
    return pw.pw_uid, pw.pw_gid


def check_reachable(path, uid):
    """Every directory above `path` (the scratch directory, which is made 0755 itself) must be
    traversable by `uid`, or the imap processes cannot reach the mail. Fails with a precise
    message instead of Dovecot's vaguer one."""
    if os.geteuid() != 0:
        return
    d = os.path.dirname(path)
    while True:
        st = os.stat(d)
        if not (st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)):
            fail(f"{d} (mode {oct(st.st_mode & 0o777)}) is not traversable by the mail user "
                 f"(uid {uid}); use a scratch directory under /tmp or chmod o+x that directory")
        if d == "/":
            return
        d = os.path.dirname(d)


def parse_users(args):
    users = [(args.user, args.password)]
    for spec in args.extra_user or []:
        if ":" not in spec:
            fail(f"--extra-user wants NAME:PASSWORD, got {spec!r}")
        users.append(tuple(spec.split(":", 1)))
    for name, pw in users:
        if not name or any(c in name for c in ":/\n\t ") or ":" in pw or "\n" in pw or not pw:
            fail(f"unusable user name or password: {name!r}")
    return users


# --------------------------------------------------------------------------- TLS certificate

def make_cert(lay):
    """Self-signed certificate for 127.0.0.1 (and localhost). It is an end-entity certificate
    (CA:FALSE) so that strict verifiers (rustls/webpki, OpenSSL's X509_STRICT) accept it when a
    client pins it as its only trust anchor."""
    if os.path.exists(lay.cert) and os.path.exists(lay.key):
        return
    os.makedirs(lay.tls, exist_ok=True)
    cnf = os.path.join(lay.tls, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(
            "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = v3\n"
            "[dn]\nCN = 127.0.0.1\nO = Plugdesk mail test fixture\n"
            "[v3]\nbasicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
            "subjectKeyIdentifier = hash\n")
    r = subprocess.run(
        [OPENSSL, "req", "-x509", "-config", cnf, "-newkey", "rsa:2048", "-nodes", "-sha256",
         "-days", "3650", "-keyout", lay.key + ".tmp", "-out", lay.cert + ".tmp"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"openssl could not make the test certificate:\n{r.stderr}")
    os.chmod(lay.key + ".tmp", 0o600)
    os.chmod(lay.cert + ".tmp", 0o644)
    os.replace(lay.key + ".tmp", lay.key)
    os.replace(lay.cert + ".tmp", lay.cert)


# --------------------------------------------------------------------------- Dovecot

# Without root, Dovecot can neither chroot its unprivileged processes nor switch users.
ROOTLESS = """service anvil {
  chroot =
}
"""


def dovecot_conf(lay, ports, base_dir, users_ids, login_user, internal_user):
    uid, _gid = users_ids
    dh = "/usr/share/dovecot/dh.pem"
    instance = "plugdesk-mail-" + hashlib.sha1(lay.dir.encode()).hexdigest()[:8]
    return f"""# Generated by Plugdesk's tests/mail/mailserver.py for one test run. Test-only settings:
# plaintext authentication is allowed and the certificate is self-signed.
instance_name = {instance}
base_dir = {base_dir}
state_dir = {lay.dovecot_state}
log_path = {lay.dovecot_log}
info_log_path = {lay.dovecot_log}
debug_log_path = {lay.dovecot_log}
auth_verbose = yes

protocols = imap
listen = {HOST}
default_login_user = {login_user}
default_internal_user = {internal_user}
{"" if os.geteuid() == 0 else "default_internal_group = " + grp.getgrgid(os.getgid()).gr_name}
first_valid_uid = {min(uid, 500) if uid else 1}
last_valid_uid = 0

ssl = yes
ssl_cert = <{lay.cert}
ssl_key = <{lay.key}
{f"ssl_dh = <{dh}" if os.path.exists(dh) else ""}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {lay.users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {lay.users}
}}

mail_location = maildir:~/Maildir
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
}}

protocol imap {{
  mail_max_userip_connections = 200
}}
{ROOTLESS if os.geteuid() != 0 else ""}
service imap-login {{
  {"" if os.geteuid() == 0 else "chroot ="}
  inet_listener imap {{
    address = {HOST}
    port = {ports["imap"]}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {ports["imaps"]}
    ssl = yes
  }}
}}
"""


def write_dovecot_files(lay, users, ports, base_dir):
    uid, gid = mail_ids()
    if os.geteuid() == 0:
        login_user, internal_user = "dovenull", "dovecot"
    else:
        import pwd
        login_user = internal_user = pwd.getpwuid(os.getuid()).pw_name
    for d in (lay.dovecot_dir, lay.dovecot_state, lay.mail):
        os.makedirs(d, exist_ok=True)
    # The imap processes (mail uid) and the auth process (dovecot user) must reach their files.
    for d in (lay.dir, lay.dovecot_dir, lay.mail):
        os.chmod(d, 0o755)
    with open(lay.users + ".tmp", "w") as f:
        for name, pw in users:
            f.write(f"{name}:{{PLAIN}}{pw}:{uid}:{gid}::{lay.home(name)}::\n")
    os.chmod(lay.users + ".tmp", 0o644)
    os.replace(lay.users + ".tmp", lay.users)
    for name, _ in users:
        home = lay.home(name)
        for sub in ("", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"):
            p = os.path.join(home, sub)
            os.makedirs(p, exist_ok=True)
            os.chmod(p, 0o700)
            if os.geteuid() == 0:
                os.chown(p, uid, gid)
    with open(lay.conf, "w") as f:
        f.write(dovecot_conf(lay, ports, base_dir, (uid, gid), login_user, internal_user))


def _pdeathsig():
    # Dovecot's master dies with us even if we are SIGKILLed (PR_SET_PDEATHSIG = 1).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass


def wait_port(port, deadline, proc=None, tls_ctx=None):
    """True once `port` greets like an IMAP server ("* OK"); False if proc exits or time runs out."""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if tls_ctx is not None:
                    s = tls_ctx.wrap_socket(s, server_hostname=HOST)
                if s.recv(256).startswith(b"* OK"):
                    s.sendall(b"a LOGOUT\r\n")
                    s.recv(256)
                    return True
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.05)
    return False


def log_tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def doveadm(lay, *args, stdin=None, check=True):
    r = subprocess.run([DOVEADM, "-c", lay.conf, *args], input=stdin, capture_output=True)
    if check and r.returncode != 0:
        fail(f"doveadm {' '.join(args)} failed ({r.returncode}): "
             f"{r.stderr.decode(errors='replace').strip()}")
    return r


# --------------------------------------------------------------------------- SMTP sink

class SmtpSink:
    """aiosmtpd handler: stores each DATA transaction, or answers what smtp-script.json says."""

    def __init__(self, lay, log):
        self.lay = lay
        self.log = log
        os.makedirs(lay.smtp_out, exist_ok=True)
        try:
            with open(lay.smtp_index) as f:
                self.index = json.load(f)
        except (OSError, ValueError):
            self.index = []

    def _next_scripted(self):
        """First entry of the script file, removed from it; None when there is none."""
        try:
            with open(self.lay.smtp_script, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        if not raw.strip():
            return None
        try:
            script = json.loads(raw)
            if not isinstance(script, list):
                raise ValueError("not a JSON list")
        except ValueError as e:
            return f"554 5.3.0 smtp-script.json is unusable: {e}".replace("\n", " ")
        if not script:
            return None
        entry, rest = script[0], script[1:]
        tmp = self.lay.smtp_script + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rest, f)
        os.replace(tmp, self.lay.smtp_script)
        entry = str(entry).strip()
        if entry.isdigit() and len(entry) == 3:
            return SCRIPT_DEFAULT_TEXT.get(entry, f"{entry} Scripted reply")
        if len(entry) < 3 or not entry[:3].isdigit():
            return f"554 5.3.0 smtp-script.json entry {entry!r} is not an SMTP reply"
        return entry

    def _save_index(self):
        tmp = self.lay.smtp_index + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.index, f, indent=1)
        os.replace(tmp, self.lay.smtp_index)

    async def handle_DATA(self, server, session, envelope):
        reply = self._next_scripted() or "250 OK"
        seq = len(self.index) + 1
        accepted = reply.startswith("2")
        name = f"{seq:04d}.eml"
        raw = envelope.original_content or b""
        if accepted:
            tmp = os.path.join(self.lay.smtp_out, name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(raw)
            os.replace(tmp, os.path.join(self.lay.smtp_out, name))
        auth = session.auth_data
        entry = {
            "seq": seq,
            "file": name if accepted else None,
            "accepted": accepted,
            "reply": reply,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "size": len(raw),
            "helo": session.host_name,
            "auth_user": auth if isinstance(auth, str) else None,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "listener": getattr(server, "listener_name", "?"),
            "peer": list(session.peer) if session.peer else None,
            "received_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        self.index.append(entry)
        self._save_index()
        self.log.info("DATA #%d from %s to %s: %s", seq, envelope.mail_from, envelope.rcpt_tos, reply)
        if reply.startswith("421"):
            # A 421 ends the session, as a real server would.
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
        return reply


def make_authenticator(users):
    from aiosmtpd.smtp import AuthResult, LoginPassword
    table = {n: p for n, p in users}

    def authenticator(server, session, envelope, mechanism, auth_data):
        if mechanism in ("PLAIN", "LOGIN") and isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            if table.get(login) == auth_data.password.decode("utf-8", "replace"):
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    return authenticator


def bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, port))
    return s


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- serve

def serve(args):
    try:
        import aiosmtpd  # noqa: F401
        from aiosmtpd.smtp import SMTP
    except ImportError:
        fail("aiosmtpd is not installed for this python (run tests/mail/setup.sh)")
    if not os.path.exists(DOVECOT):
        fail("dovecot is not installed (run tests/mail/setup.sh)")

    lay = Layout(args.dir)
    os.makedirs(lay.dir, exist_ok=True)
    users = parse_users(args)
    uid, gid = mail_ids()
    check_reachable(lay.dir, uid)
    if os.path.exists(lay.state):
        try:
            with open(lay.state) as f:
                old = json.load(f)
            os.kill(old["pid_smtp"], 0)
            fail(f"a mailserver (pid {old['pid_smtp']}) already runs on {lay.dir}")
        except (OSError, ValueError, KeyError):
            os.remove(lay.state)

    if args.ports == "auto":
        wanted = None
    else:
        try:
            p = [int(x) for x in args.ports.split(",")]
            assert len(p) == 4 and all(0 < x < 65536 for x in p)
        except (ValueError, AssertionError):
            fail("--ports wants 'auto' or IMAP,IMAPS,SMTP,SMTPS (four port numbers)")
        wanted = dict(zip(("imap", "imaps", "smtp", "smtps"), p))

    logging.basicConfig(filename=lay.smtp_log, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("plugdesk.smtp")
    # aiosmtpd warns about its own internals on every session: SMTPS is TLS without STARTTLS
    # (so auth_require_tls is off there on purpose) and it sets its deprecated login_data itself.
    logging.getLogger("mail.log").addFilter(
        lambda r: not any(s in r.getMessage() for s in ("auth_require_tls == False",
                                                         "login_data is deprecated")))
    make_cert(lay)

    # Short base_dir when the scratch path would overflow a unix socket path (108 bytes).
    base_dir, temp_base = lay.base_dir, None
    if len(lay.base_dir) > 60:
        temp_base = base_dir = tempfile.mkdtemp(prefix="pdmail-", dir="/tmp")
        os.chmod(base_dir, 0o755)

    # SMTP listeners: bound right away (port 0 = the kernel picks, no race).
    try:
        smtp_sock = bind(wanted["smtp"] if wanted else 0)
        smtps_sock = bind(wanted["smtps"] if wanted else 0)
    except OSError as e:
        fail(f"cannot bind the SMTP ports on {HOST}: {e}")
    for s in (smtp_sock, smtps_sock):
        s.listen(128)
        s.setblocking(False)

    # Dovecot; with auto ports, a port taken between picking and binding means another try.
    dovecot = None
    client_ctx = ssl.create_default_context(cafile=lay.cert)
    for attempt in range(5):
        ports = dict(wanted) if wanted else {"imap": free_port(), "imaps": free_port()}
        if ports["imap"] == ports["imaps"]:
            continue
        ports["smtp"] = smtp_sock.getsockname()[1]
        ports["smtps"] = smtps_sock.getsockname()[1]
        write_dovecot_files(lay, users, ports, base_dir)
        with open(lay.dovecot_stderr, "ab") as err:
            dovecot = subprocess.Popen([DOVECOT, "-F", "-c", lay.conf], stdin=subprocess.DEVNULL,
                                       stdout=err, stderr=err, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + 30
        if wait_port(ports["imap"], deadline, dovecot) and \
                wait_port(ports["imaps"], deadline, dovecot, client_ctx):
            break
        if dovecot.poll() is None:
            dovecot.terminate()
        try:
            dovecot.wait(10)
        except subprocess.TimeoutExpired:
            dovecot.kill()
            dovecot.wait()
        why = log_tail(lay.dovecot_stderr) + log_tail(lay.dovecot_log)
        if wanted or "in use" not in why:
            fail(f"Dovecot did not start; its last words:\n{why}")
        dovecot = None
    if dovecot is None:
        fail("Dovecot did not start: no free pair of IMAP ports was found")

    # SMTP servers on the asyncio loop of this process.
    tls_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server.load_cert_chain(lay.cert, lay.key)
    sink = SmtpSink(lay, log)
    authenticator = make_authenticator(users)

    def factory(name, implicit_tls):
        def make():
            proto = SMTP(
                sink,
                hostname="smtp.plugdesk.test",
                ident="Plugdesk test SMTP sink",
                decode_data=False,
                enable_SMTPUTF8=True,
                data_size_limit=args.max_size,
                tls_context=None if implicit_tls else tls_server,
                require_starttls=False,
                # On SMTPS the whole session is TLS already; aiosmtpd only knows STARTTLS.
                auth_require_tls=False if implicit_tls else not args.smtp_auth_without_tls,
                auth_required=not args.smtp_open,
                authenticator=authenticator,
            )
            proto.listener_name = name
            return proto
        return make

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    servers = [
        loop.run_until_complete(loop.create_server(factory("smtp", False), sock=smtp_sock)),
        loop.run_until_complete(loop.create_server(factory("smtps", True), sock=smtps_sock,
                                                   ssl=tls_server)),
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    info = {
        "imap": ports["imap"], "imaps": ports["imaps"],
        "smtp": ports["smtp"], "smtps": ports["smtps"],
        "host": HOST,
        "user": users[0][0], "password": users[0][1],
        "extra_users": [{"user": n, "password": p} for n, p in users[1:]],
        "cert": lay.cert,
        "pid_dovecot": dovecot.pid, "pid_smtp": os.getpid(),
        "dir": lay.dir,
        "maildir": lay.maildir(users[0][0]),
        "smtp_out": lay.smtp_out,
        "smtp_index": lay.smtp_index,
        "smtp_script": lay.smtp_script,
        "dovecot_conf": lay.conf,
        "dovecot_log": lay.dovecot_log,
        "smtp_log": lay.smtp_log,
    }
    with open(lay.state + ".tmp", "w") as f:
        json.dump(info, f, indent=1)
    os.replace(lay.state + ".tmp", lay.state)
    try:
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    log.info("up: %s", json.dumps(info))

    async def run():
        dovecot_gone = loop.run_in_executor(None, dovecot.wait)
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([stopper, dovecot_gone], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            log.error("Dovecot exited on its own (status %s); stopping", dovecot.returncode)
        stopper.cancel()

    loop.run_until_complete(run())
    status = 0 if dovecot.poll() is None else 1

    # Shut down: Dovecot's master first (it ends its own children), then the SMTP listeners.
    if dovecot.poll() is None:
        dovecot.send_signal(signal.SIGTERM)
        try:
            dovecot.wait(15)
        except subprocess.TimeoutExpired:
            log.error("Dovecot ignored SIGTERM for 15 s; killing it")
            dovecot.kill()
            dovecot.wait()
    for srv in servers:
        srv.close()
    loop.run_until_complete(asyncio.gather(*(s.wait_closed() for s in servers)))
    loop.close()
    if temp_base:
        shutil.rmtree(temp_base, ignore_errors=True)
    try:
        os.remove(lay.state)
    except OSError:
        pass
    log.info("stopped")
    return status


# --------------------------------------------------------------------------- deliver / fill / stop

def load_state(args):
    lay = Layout(args.dir)
    if not os.path.exists(lay.conf):
        fail(f"no fixture in {lay.dir} (start `mailserver.py serve --dir {args.dir}` first)")
    state = {}
    try:
        with open(lay.state) as f:
            state = json.load(f)
    except (OSError, ValueError):
        pass
    return lay, state


def deliver(args):
    """Delivers messages into a mailbox through Dovecot itself (doveadm save), which indexes
    them and wakes IDLE sessions as a real delivery does."""
    lay, state = load_state(args)
    user = args.user or state.get("user") or DEFAULT_USER
    n = 0
    for path in args.files:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
        doveadm(lay, "save", "-u", user, "-m", args.mailbox, stdin=data)
        n += 1
    print(json.dumps({"delivered": n, "user": user, "mailbox": args.mailbox}))
    return 0


FIRST = ["Anna", "Jonas", "Lea", "Lukas", "Mia", "Finn", "Sofia", "Elias", "Priya", "Kenji",
         "Olivia", "Mateo", "Chloé", "Björn", "Zoë", "Noah", "Amara", "Liam", "Yuki", "Omar"]
LAST = ["Müller", "Schmidt", "Nguyen", "Garcia", "Rossi", "Kowalski", "Dubois", "Okafor",
        "Johansson", "Tanaka", "Smith", "Fischer", "Novak", "Silva", "Brown", "Weber"]
DOMAINS = ["example.com", "example.org", "example.net", "kunde.example", "shop.example"]
TOPICS = ["Order #{n} has not arrived", "Cannot log in to my account", "Invoice {n} is wrong",
          "Refund request for order {n}", "Question about the Pro plan", "Password reset link expired",
          "Bug: export to CSV fails", "Lieferung {n} beschädigt", "Change of billing address",
          "Feature request: dark mode", "Two-factor code never arrives", "Cancel my subscription"]
BODIES = [
    "Hello,\n\nI placed order {n} last week and it still has not arrived. The tracking page says\n"
    "\"label created\" since Monday. Could you check what is going on?\n\nThanks,\n{name}\n",
    "Hi team,\n\nsince this morning I cannot log in: the page just reloads after I enter my\n"
    "password. I tried two browsers and cleared cookies.\n\nBest regards\n{name}\n",
    "Dear support,\n\ninvoice {n} lists three seats but we only have two users. Please send a\n"
    "corrected invoice.\n\nKind regards,\n{name}\n",
    "Guten Tag,\n\ndie Lieferung {n} kam leider beschädigt an. Fotos hänge ich gern an.\n"
    "Bitte um Ersatz oder Rückerstattung.\n\nMit freundlichen Grüßen\n{name}\n",
]


# A small "PDF" attached to one message in ten (base64, 76-character lines).
_pdf = b"%PDF-1.4\n% Plugdesk fill attachment\n" + bytes(random.Random(7).getrandbits(8) for _ in range(2048))
ATTACHMENT_B64 = "".join(base64.b64encode(_pdf).decode()[k:k + 76] + "\n"
                         for k in range(0, len(base64.b64encode(_pdf)), 76))


@functools.lru_cache(maxsize=4096)
def encoded_word(text):
    return text if text.isascii() else Header(text, "utf-8").encode()


def gen_message(i, rnd, user, when, quote_kb=0):
    """One realistic customer e-mail (bytes with LF line endings, as maildir stores them); with
    `quote_kb`, the text ends in a quoted history of about that many KB, as replies do."""
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    name = f"{first} {last}"
    local = "".join(c for c in first.lower() if c.isascii()) or "customer"
    addr = f"{local}.{i}@{rnd.choice(DOMAINS)}"
    n = 100000 + i
    subject = rnd.choice(TOPICS).format(n=n)
    body = rnd.choice(BODIES).format(n=n, name=name)
    if quote_kb > 0:
        line = f"> Vielen Dank für Ihre Nachricht zur Bestellung {n}. Wir haben Ihr Anliegen aufgenommen.\n"
        quote = line * max(1, quote_kb * 1024 // len(line.encode("utf-8")))
        body += f"\n\nAm {format_datetime(when)} schrieb Plugdesk Support <{user}>:\n{quote}"
    msgid = f"<fill-{i}-{rnd.getrandbits(48):012x}@{addr.split('@')[1]}>"
    enc_name, enc_subj = encoded_word(name), encoded_word(subject)
    date = format_datetime(when)
    hdr = [
        f"Return-Path: <{addr}>",
        f"Received: from mx.{addr.split('@')[1]} (mx.{addr.split('@')[1]} [192.0.2.{i % 250 + 1}])"
        f"\n\tby mail.plugdesk.test with ESMTPS id F{i:08X}\n\tfor <{user}>; {date}",
        f"From: {enc_name} <{addr}>",
        f"To: Plugdesk Support <{user}>",
        f"Subject: {enc_subj}",
        f"Date: {date}",
        f"Message-ID: {msgid}",
        "MIME-Version: 1.0",
    ]
    if i % 7 == 3:
        hdr.append(f"In-Reply-To: <reply-{i - 1}@plugdesk.test>")
        hdr.append(f"References: <ticket-{i // 7}@plugdesk.test> <reply-{i - 1}@plugdesk.test>")
    if i % 10 == 5:
        boundary = f"=_plugdesk_{i:08x}"
        text = (
            "\n".join(hdr) + f'\nContent-Type: multipart/mixed; boundary="{boundary}"\n\n'
            f"--{boundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            f"{body}\n--{boundary}\nContent-Type: application/pdf; name=\"invoice-{n}.pdf\"\n"
            f'Content-Disposition: attachment; filename="invoice-{n}.pdf"\n'
            f"Content-Transfer-Encoding: base64\n\n{ATTACHMENT_B64}--{boundary}--\n")
    elif i % 3 == 0:
        boundary = f"=_plugdesk_{i:08x}"
        html = body.replace("&", "&amp;").replace("<", "&lt;").replace("\n\n", "</p><p>")
        text = (
            "\n".join(hdr) + f'\nContent-Type: multipart/alternative; boundary="{boundary}"\n\n'
            f"--{boundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            f"{body}\n--{boundary}\nContent-Type: text/html; charset=utf-8\n"
            f"Content-Transfer-Encoding: 8bit\n\n<html><body><p>{html}</p></body></html>\n"
            f"--{boundary}--\n")
    else:
        text = ("\n".join(hdr) + "\nContent-Type: text/plain; charset=utf-8\n"
                "Content-Transfer-Encoding: 8bit\n\n" + body)
    return text.encode("utf-8")


def fill(args):
    """Writes N messages straight into the user's Maildir (cur/, in the maildir format Dovecot
    reads: S= and W= sizes in the file name so it never has to stat or read them to learn the
    sizes), then has Dovecot sync and index the mailbox once."""
    lay, state = load_state(args)
    user = args.user or state.get("user") or DEFAULT_USER
    maildir = lay.maildir(user)
    if not os.path.isdir(os.path.join(maildir, "cur")):
        fail(f"no maildir for {user} in {lay.dir}")
    uid, gid = mail_ids()
    rnd = random.Random(args.seed)
    now = time.time()
    start_ts = int(now) - args.count * 60
    pid = os.getpid()
    flags = "S" if args.seen else ""
    t0 = time.monotonic()
    # Write as the mail user so Dovecot can rename and index the files.
    as_root = os.geteuid() == 0
    if as_root:
        os.setegid(gid)
        os.seteuid(uid)
    try:
        cur = os.path.join(maildir, "cur")
        tag = f"{rnd.getrandbits(32):08x}"
        for i in range(args.count):
            ts = start_ts + i * 60
            when = datetime.fromtimestamp(ts, timezone.utc)
            data = gen_message(i, rnd, user, when, args.quote_kb)
            vsize = len(data) + data.count(b"\n")
            name = f"{ts}.M{i % 1000000:06d}P{pid}Q{i}.fill{tag},S={len(data)},W={vsize}:2,{flags}"
            path = os.path.join(cur, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.utime(path, (ts, ts))
    finally:
        if as_root:
            os.seteuid(0)
            os.setegid(0)
    t1 = time.monotonic()
    # One sync: Dovecot assigns UIDs (dovecot-uidlist) and builds its index.
    r = doveadm(lay, "mailbox", "status", "-u", user, "messages uidnext", "INBOX")
    t2 = time.monotonic()
    print(json.dumps({
        "filled": args.count, "user": user, "write_seconds": round(t1 - t0, 3),
        "index_seconds": round(t2 - t1, 3), "seconds": round(t2 - t0, 3),
        "status": r.stdout.decode().strip(),
    }))
    return 0


def stop_cmd(args):
    lay, state = load_state(args)
    pid = state.get("pid_smtp")
    if not pid:
        print(json.dumps({"stopped": False, "reason": "not running"}))
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(json.dumps({"stopped": False, "reason": "not running"}))
        return 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(json.dumps({"stopped": True, "pid": pid}))
            return 0
        time.sleep(0.05)
    fail(f"mailserver pid {pid} did not stop within 20 s")


def main(argv):
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["serve", *argv]
    ap = argparse.ArgumentParser(prog="mailserver.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="start Dovecot and the SMTP sink, run until SIGTERM")
    s.add_argument("--dir", required=True, help="scratch directory (created if missing)")
    s.add_argument("--ports", default="auto", help="'auto' or IMAP,IMAPS,SMTP,SMTPS")
    s.add_argument("--user", default=DEFAULT_USER)
    s.add_argument("--password", default=DEFAULT_PASSWORD)
    s.add_argument("--extra-user", action="append", metavar="NAME:PASSWORD",
                   help="another account (IMAP and SMTP AUTH); repeatable")
    s.add_argument("--smtp-open", action="store_true",
                   help="accept mail without SMTP AUTH (default: AUTH required)")
    s.add_argument("--smtp-auth-without-tls", action="store_true",
                   help="offer AUTH on the plain SMTP port before STARTTLS")
    s.add_argument("--max-size", type=int, default=32 * 1024 * 1024, help="SMTP SIZE limit")

    d = sub.add_parser("deliver", help="deliver message files into a mailbox (doveadm save)")
    d.add_argument("--dir", required=True)
    d.add_argument("--user")
    d.add_argument("--mailbox", default="INBOX")
    d.add_argument("files", nargs="+", metavar="FILE.eml")

    f = sub.add_parser("fill", help="write N generated messages into the maildir, then index")
    f.add_argument("--dir", required=True)
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--user")
    f.add_argument("--seen", action="store_true", help="mark them \\Seen (default: unseen)")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--quote-kb", type=int, default=0,
                   help="end each text in a quoted history of about N KB (realistic reply sizes)")

    t = sub.add_parser("stop", help="SIGTERM the mailserver running on --dir and wait")
    t.add_argument("--dir", required=True)

    args = ap.parse_args(argv)
    return {"serve": serve, "deliver": deliver, "fill": fill, "stop": stop_cmd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
