#!/usr/bin/env python3
"""Self-test of Plugdesk's mail test fixture (tests/mail/mailserver.py), with only Python's own
imaplib, smtplib and ssl as clients. Starts the fixture in a temporary directory, exercises IMAP
(STARTTLS and IMAPS), delivery, SMTP (STARTTLS + AUTH PLAIN, SMTPS + AUTH LOGIN), the scripted
451/550 replies and the 10,000-message fill, then stops it and checks that nothing is left running.

    python3 tests/mail/check.py          # after: bash tests/mail/setup.sh
    python3 tests/mail/check.py --keep   # keep the scratch directory for a look

Exit status 0 when every check passed; the last line reads "mail: N passed, M failed".
"""

import ctypes
import email
import email.policy
import imaplib
import json
import os
import re
import selectors
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MAILSERVER = os.path.join(HERE, "mailserver.py")
FILL_COUNT = 10_000

passed, failed, figures = [], [], {}


def check(name, ok, detail=""):
    (passed if ok else failed).append(name)
    print(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f"  ({detail})" if detail else ""), flush=True)
    return ok


class Abort(Exception):
    pass


def require(name, ok, detail=""):
    if not check(name, ok, detail):
        raise Abort(name)


# --------------------------------------------------------------------------- processes

def processes():
    """pid -> command line of every process."""
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                pass
    return out


def fixture_processes(scratch, instance):
    """Processes belonging to the fixture on `scratch`: mailserver.py, Dovecot's master (its
    command line names the config) and Dovecot's children (their titles carry the instance)."""
    return {pid: cmd for pid, cmd in processes().items()
            if scratch in cmd or (instance and f"dovecot-{instance}/" in cmd)}


def start(scratch, *extra):
    proc = subprocess.Popen([sys.executable, MAILSERVER, "serve", "--dir", scratch, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    t0 = time.monotonic()
    if not sel.select(timeout=60):
        proc.kill()
        raise Abort("mailserver.py printed nothing within 60 s")
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise Abort(f"mailserver.py exited ({proc.returncode}): {proc.stderr.read().decode()}")
    return proc, json.loads(line), time.monotonic() - t0


def run_cli(*args):
    r = subprocess.run([sys.executable, MAILSERVER, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise Abort(f"mailserver.py {args[0]} failed: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- messages

MSG_ASCII = (b"From: Anna Customer <anna@example.com>\n"
             b"To: Plugdesk Support <support@plugdesk.test>\n"
             b"Subject: Order 1001 has not arrived\n"
             b"Date: Mon, 02 Mar 2026 09:15:00 +0100\n"
             b"Message-ID: <check-1@example.com>\n"
             b"MIME-Version: 1.0\n"
             b"Content-Type: text/plain; charset=us-ascii\n\n"
             b"Hello, my order 1001 has not arrived yet.\n")
MSG_LATIN1 = ("From: =?ISO-8859-1?Q?J=FCrgen_M=FCller?= <juergen@example.de>\n"
              "To: Plugdesk Support <support@plugdesk.test>\n"
              "Subject: =?ISO-8859-1?Q?Lieferung_besch=E4digt_-_Gr=FC=DFe?=\n"
              "Date: Mon, 02 Mar 2026 10:00:00 +0100\n"
              "Message-ID: <check-2@example.de>\n"
              "MIME-Version: 1.0\n"
              "Content-Type: text/plain; charset=ISO-8859-1\n"
              "Content-Transfer-Encoding: 8bit\n\n"
              "Guten Tag,\n\ndie Lieferung kam beschädigt an. Bitte um Rückerstattung.\n\n"
              "Mit freundlichen Grüßen\nJürgen Müller\n").encode("latin-1")
MSG_MULTIPART = (b"From: Kenji <kenji@example.jp>\n"
                 b"To: support@plugdesk.test\n"
                 b"Subject: Screenshot of the error\n"
                 b"Date: Mon, 02 Mar 2026 11:30:00 +0100\n"
                 b"Message-ID: <check-3@example.jp>\n"
                 b"In-Reply-To: <ticket-42@plugdesk.test>\n"
                 b"MIME-Version: 1.0\n"
                 b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
                 b"--b1\nContent-Type: text/plain; charset=utf-8\n\nSee the attachment.\n"
                 b"--b1\nContent-Type: image/png; name=\"err.png\"\n"
                 b"Content-Disposition: attachment; filename=\"err.png\"\n"
                 b"Content-Transfer-Encoding: base64\n\n"
                 b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABh6FO1AAAAABJRU5ErkJggg==\n"
                 b"--b1--\n")


def outgoing(n):
    return (f"From: Plugdesk Support <support@plugdesk.test>\r\n"
            f"To: Anna Customer <anna@example.com>\r\n"
            f"Subject: Re: Order 1001 [#{n}]\r\n"
            f"Message-ID: <out-{n}@plugdesk.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n"
            f"Grüße from Plugdesk, reply {n}.\r\n.leading dot line\r\n").encode()


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --------------------------------------------------------------------------- the checks

def check_imap(info, ctx):
    print("IMAP")
    m = imaplib.IMAP4("127.0.0.1", info["imap"])
    check("IMAP offers STARTTLS", "STARTTLS" in m.capabilities)
    m.starttls(ssl_context=ctx)
    typ, _ = m.login(info["user"], info["password"])
    require("IMAP STARTTLS + LOGIN (certificate verified)", typ == "OK")
    m.logout()

    m = imaplib.IMAP4_SSL("127.0.0.1", info["imaps"], ssl_context=ctx)
    typ, _ = m.login(info["user"], info["password"])
    require("IMAPS + LOGIN (certificate verified)", typ == "OK")
    try:
        m2 = imaplib.IMAP4_SSL("127.0.0.1", info["imaps"], ssl_context=ctx)
        m2.login(info["user"], "wrong")
        bad = False
    except imaplib.IMAP4.error:
        bad = True
    check("IMAP rejects a wrong password", bad)
    try:
        imaplib.IMAP4_SSL("127.0.0.1", info["imaps"], ssl_context=ssl.create_default_context()).logout()
        untrusted = False
    except ssl.SSLCertVerificationError:
        untrusted = True
    check("the certificate is not trusted without the fixture's cert", untrusted)
    m.logout()


def check_deliver(info, ctx, scratch):
    print("delivery")
    files = []
    for i, data in enumerate((MSG_ASCII, MSG_LATIN1, MSG_MULTIPART), 1):
        p = os.path.join(scratch, f"in-{i}.eml")
        with open(p, "wb") as f:
            f.write(data)
        files.append(p)
    t0 = time.monotonic()
    r = run_cli("deliver", "--dir", scratch, *files)
    figures["deliver_3_messages_s"] = round(time.monotonic() - t0, 3)
    require("mailserver.py deliver of 3 messages", r.get("delivered") == 3, json.dumps(r))

    m = imaplib.IMAP4_SSL("127.0.0.1", info["imaps"], ssl_context=ctx)
    m.login(info["user"], info["password"])
    typ, data = m.select("INBOX", readonly=True)
    require("SELECT INBOX shows 3 messages", typ == "OK" and data[0] == b"3", repr(data))
    uidvalidity = int(m.response("UIDVALIDITY")[1][0])
    check("UIDVALIDITY is set", uidvalidity > 0, str(uidvalidity))
    typ, data = m.uid("SEARCH", None, "ALL")
    uids = [int(x) for x in data[0].split()]
    check("UID SEARCH ALL gives 3 ascending UIDs", uids == sorted(uids) and len(uids) == 3, str(uids))
    typ, data = m.uid("FETCH", ",".join(map(str, uids)), "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
    bodies = [part[1] for part in data if isinstance(part, tuple)]
    check("UID FETCH returns the delivered bytes (CRLF)",
          bodies == [crlf(MSG_ASCII), crlf(MSG_LATIN1), crlf(MSG_MULTIPART)])
    check("delivered messages are unseen", all(b"\\Seen" not in part[0] for part in data
                                                if isinstance(part, tuple)))
    msg = email.message_from_bytes(bodies[1], policy=email.policy.default)
    check("ISO-8859-1 message decodes (umlauts)",
          str(msg["Subject"]) == "Lieferung beschädigt - Grüße" and
          "Rückerstattung" in msg.get_content() and str(msg["From"]).startswith("Jürgen Müller"),
          f"subject {str(msg['Subject'])!r}")
    m.logout()
    # UIDVALIDITY and UIDs are stable across sessions.
    m = imaplib.IMAP4("127.0.0.1", info["imap"])
    m.starttls(ssl_context=ctx)
    m.login(info["user"], info["password"])
    m.select("INBOX", readonly=True)
    same = int(m.response("UIDVALIDITY")[1][0]) == uidvalidity
    same &= [int(x) for x in m.uid("SEARCH", None, "ALL")[1][0].split()] == uids
    check("UIDVALIDITY and UIDs stable in a new session", same)
    m.logout()
    return uids


def index(info):
    with open(info["smtp_index"]) as f:
        return json.load(f)


def check_smtp(info, ctx):
    print("SMTP")
    user, pw = info["user"], info["password"]

    s = smtplib.SMTP("127.0.0.1", info["smtp"], timeout=10)
    s.ehlo("client.plugdesk.test")
    check("SMTP offers STARTTLS, no AUTH before TLS",
          s.has_extn("starttls") and not s.has_extn("auth"))
    code, _ = s.mail("support@plugdesk.test")
    check("MAIL without AUTH is refused", code == 530, str(code))
    s.rset()
    s.starttls(context=ctx)
    s.ehlo("client.plugdesk.test")
    check("SMTP offers AUTH PLAIN LOGIN after STARTTLS",
          set(s.esmtp_features.get("auth", "").upper().split()) >= {"PLAIN", "LOGIN"},
          s.esmtp_features.get("auth", ""))
    s.user, s.password = user, "wrong"
    try:
        s.auth("PLAIN", s.auth_plain)
        wrong = None
    except smtplib.SMTPAuthenticationError as e:
        wrong = e.smtp_code
    check("SMTP AUTH rejects a wrong password", wrong == 535, str(wrong))
    s.user, s.password = user, pw
    code, _ = s.auth("PLAIN", s.auth_plain)
    require("SMTP STARTTLS + AUTH PLAIN", code == 235, str(code))
    msg1 = outgoing(1)
    refused = s.sendmail("support@plugdesk.test", ["anna@example.com", "cc@example.org"], msg1)
    check("message accepted over STARTTLS", refused == {})
    s.quit()

    s = smtplib.SMTP_SSL("127.0.0.1", info["smtps"], context=ctx, timeout=10)
    s.ehlo("client.plugdesk.test")
    s.user, s.password = user, pw
    code, _ = s.auth("LOGIN", s.auth_login)
    require("SMTPS + AUTH LOGIN", code == 235, str(code))
    msg2 = outgoing(2)
    check("message accepted over SMTPS", s.sendmail("support@plugdesk.test", ["anna@example.com"], msg2) == {})
    s.quit()

    idx = index(info)
    out = info["smtp_out"]
    ok = len(idx) == 2 and [e["file"] for e in idx] == ["0001.eml", "0002.eml"]
    check("index.json lists both transactions", ok, json.dumps([e.get("file") for e in idx]))
    if ok:
        with open(os.path.join(out, "0001.eml"), "rb") as f:
            b1 = f.read()
        with open(os.path.join(out, "0002.eml"), "rb") as f:
            b2 = f.read()
        # smtplib dot-stuffs ".leading" and the server un-stuffs it: the stored bytes are the message.
        check("0001.eml / 0002.eml hold the raw message bytes", b1 == msg1 and b2 == msg2)
        e1, e2 = idx
        check("envelope, AUTH user and TLS recorded",
              e1["mail_from"] == "support@plugdesk.test"
              and e1["rcpt_tos"] == ["anna@example.com", "cc@example.org"]
              and e1["auth_user"] == user and e1["tls"] and e1["listener"] == "smtp"
              and e2["auth_user"] == user and e2["tls"] and e2["listener"] == "smtps",
              json.dumps({k: e1[k] for k in ("mail_from", "rcpt_tos", "auth_user", "tls", "listener")}))


def check_script(info, ctx):
    print("scripted failures")
    with open(info["smtp_script"], "w") as f:
        json.dump(["451", "550"], f)
    codes = []
    for n in (3, 4, 5):
        s = smtplib.SMTP_SSL("127.0.0.1", info["smtps"], context=ctx, timeout=10)
        s.login(info["user"], info["password"])
        try:
            s.sendmail("support@plugdesk.test", ["anna@example.com"], outgoing(n))
            codes.append(250)
        except smtplib.SMTPDataError as e:
            codes.append(e.smtp_code)
        s.quit()
    check("DATA answers 451, then 550, then 250", codes == [451, 550, 250], str(codes))
    with open(info["smtp_script"]) as f:
        check("the script was consumed", json.load(f) == [])
    idx = index(info)
    tail = [(e["seq"], e["accepted"], e["reply"][:3], e["file"]) for e in idx[2:]]
    check("rejected transactions are indexed without a file",
          tail == [(3, False, "451", None), (4, False, "550", None), (5, True, "250", "0005.eml")]
          and not os.path.exists(os.path.join(info["smtp_out"], "0003.eml")), str(tail))
    # A whole reply text works too, and a 4xx over STARTTLS behaves the same.
    with open(info["smtp_script"], "w") as f:
        json.dump(["452 4.2.2 Mailbox full"], f)
    s = smtplib.SMTP("127.0.0.1", info["smtp"], timeout=10)
    s.starttls(context=ctx)
    s.login(info["user"], info["password"])
    try:
        s.sendmail("support@plugdesk.test", ["anna@example.com"], outgoing(6))
        got = (250, b"")
    except smtplib.SMTPDataError as e:
        got = (e.smtp_code, e.smtp_error)
    s.quit()
    check("a full scripted reply text is returned verbatim",
          got == (452, b"4.2.2 Mailbox full"), repr(got))


def check_fill(info, ctx, scratch, already):
    print(f"fill {FILL_COUNT}")
    t0 = time.monotonic()
    r = run_cli("fill", "--dir", scratch, "--count", str(FILL_COUNT))
    wall = time.monotonic() - t0
    figures["fill_messages"] = FILL_COUNT
    figures["fill_wall_s"] = round(wall, 3)
    figures["fill_write_s"] = r["write_seconds"]
    figures["fill_dovecot_sync_s"] = r["index_seconds"]
    figures["fill_msgs_per_s"] = int(FILL_COUNT / wall)
    check("fill reports the new total", f"messages={already + FILL_COUNT}" in r["status"], r["status"])

    m = imaplib.IMAP4_SSL("127.0.0.1", info["imaps"], ssl_context=ctx)
    m.login(info["user"], info["password"])
    t0 = time.monotonic()
    typ, data = m.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")
    figures["imap_status_s"] = round(time.monotonic() - t0, 3)
    msgs = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    check("IMAP STATUS INBOX (MESSAGES) shows them", msgs == already + FILL_COUNT, data[0].decode())
    m.select("INBOX", readonly=True)
    t0 = time.monotonic()
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE MESSAGE-ID)])")
    figures["imap_fetch_headers_all_s"] = round(time.monotonic() - t0, 3)
    got = sum(1 for part in data if isinstance(part, tuple))
    check("UID FETCH 1:* of the headers returns every message", got == already + FILL_COUNT, str(got))
    last = [part for part in data if isinstance(part, tuple)][-1]
    hdr = email.message_from_bytes(last[1], policy=email.policy.default)
    check("filled messages parse (From, Subject, Date, Message-ID)",
          all(hdr[h] for h in ("From", "Subject", "Date", "Message-ID")), str(hdr["Subject"]))
    t0 = time.monotonic()
    typ, data = m.uid("FETCH", f"{FILL_COUNT - 99}:*", "(BODY.PEEK[])")
    figures["imap_fetch_100_bodies_s"] = round(time.monotonic() - t0, 3)
    m.logout()


def check_stop(proc, info, scratch, instance):
    print("stop")
    running = fixture_processes(scratch, instance)
    check("Dovecot and its children run under the fixture", info["pid_dovecot"] in running
          and len(running) >= 3, f"{len(running)} processes")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "timeout"
    figures["stop_s"] = round(time.monotonic() - t0, 3)
    check("SIGTERM stops mailserver.py cleanly", rc == 0, f"exit {rc}")
    time.sleep(0.2)
    left = fixture_processes(scratch, instance)
    check("no fixture process remains", not left, json.dumps(left))
    check("no port is still listening",
          not any(port_open(info[k]) for k in ("imap", "imaps", "smtp", "smtps")))


def check_crash_cleanup(scratch, instance):
    """If mailserver.py is killed outright, Dovecot must not outlive it."""
    print("crash cleanup")
    proc, info, _ = start(scratch)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and fixture_processes(scratch, instance):
        reap()
        time.sleep(0.1)
    reap()
    left = fixture_processes(scratch, instance)
    check("SIGKILLed mailserver.py takes Dovecot with it", not left, json.dumps(left))


def reap():
    """Collect orphans handed to us as subreaper (a Dovecot master whose parent was killed)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    keep = "--keep" in sys.argv[1:]
    # Become the subreaper of everything started here, so that the crash test's orphaned Dovecot
    # is reaped by us and not left as a zombie for init (PR_SET_CHILD_SUBREAPER = 36).
    try:
        ctypes.CDLL("libc.so.6").prctl(36, 1, 0, 0, 0)
    except OSError:
        pass
    scratch = tempfile.mkdtemp(prefix="plugdesk-mailcheck-")
    proc = None
    instance = ""
    try:
        print(f"scratch: {scratch}")
        proc, info, startup = start(scratch)
        figures["startup_s"] = round(startup, 3)
        with open(info["dovecot_conf"]) as f:
            instance = re.search(r"^instance_name = (\S+)", f.read(), re.M).group(1)
        print("ports: " + ", ".join(f"{k} {info[k]}" for k in ("imap", "imaps", "smtp", "smtps")))
        check("every port is on 127.0.0.1 and answers",
              all(port_open(info[k]) for k in ("imap", "imaps", "smtp", "smtps")))
        ctx = ssl.create_default_context(cafile=info["cert"])
        check_imap(info, ctx)
        uids = check_deliver(info, ctx, scratch)
        check_smtp(info, ctx)
        check_script(info, ctx)
        check_fill(info, ctx, scratch, len(uids))
        check_stop(proc, info, scratch, instance)
        proc = None
        check_crash_cleanup(scratch, instance)
    except Abort as e:
        print(f"aborted: {e}")
    except Exception as e:  # an unexpected error is a failure too, reported as such
        import traceback
        traceback.print_exc()
        failed.append(f"unexpected {type(e).__name__}: {e}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if failed and proc is not None and proc.stderr:
            sys.stdout.write(proc.stderr.read().decode(errors="replace"))
        for pid in fixture_processes(scratch, instance):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if keep or failed:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print("figures: " + json.dumps(figures))
    print(f"mail: {len(passed)} passed, {len(failed)} failed")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
