use super::*;
use crate::testing::Scripted;

const EHLO_REPLY: &str = "250-mail.example.com Hello client\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
    250-AUTH PLAIN LOGIN\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n";

fn ready(chunk: usize) -> Scripted {
    Scripted::new(chunk)
        .server("220 mail.example.com ESMTP ready\r\n")
        .client("EHLO client.example.com\r\n")
        .server(EHLO_REPLY)
}

fn session(script: Scripted) -> SmtpClient<Scripted> {
    let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
    client.ehlo("client.example.com").unwrap();
    client
}

#[test]
fn ehlo_auth_send_quit() {
    for chunk in [1, 4, 9, 1000] {
        let script = ready(chunk)
            .client("AUTH LOGIN\r\n")
            .server("334 VXNlcm5hbWU6\r\n")
            .client("c3VwcG9ydEBleGFtcGxlLmNvbQ==\r\n")
            .server("334 UGFzc3dvcmQ6\r\n")
            .secret("{{secret_base64:smtp_password}}\r\n")
            .server("235 2.7.0 Authentication successful\r\n")
            .client("MAIL FROM:<support@example.com> SIZE=29\r\n")
            .server("250 2.1.0 Ok\r\n")
            .client("RCPT TO:<anna@example.com>\r\n")
            .server("250 2.1.5 Ok\r\n")
            .client("RCPT TO:<nobody@example.com>\r\n")
            .server("550 5.1.1 <nobody@example.com>: Recipient address rejected\r\n")
            .client("RCPT TO:<later@example.com>\r\n")
            .server("450 4.2.0 Greylisted\r\n")
            .client("DATA\r\n")
            .server("354 End data with <CR><LF>.<CR><LF>\r\n")
            .client("Subject: x\r\n\r\n..hidden\r\nend\r\n.\r\n")
            .server("250 2.0.0 Ok: queued as 4ABC\r\n")
            .client("QUIT\r\n")
            .server("221 2.0.0 Bye\r\n");
        let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
        assert_eq!(client.greeting(), "mail.example.com ESMTP ready");
        let ext = client.ehlo("client.example.com").unwrap().clone();
        assert_eq!(ext.size, Some(1000));
        assert!(ext.eight_bit_mime && ext.smtputf8 && !ext.starttls);
        assert_eq!(ext.auth, ["PLAIN", "LOGIN"]);
        client.auth_login("support@example.com", "smtp_password").unwrap();
        let recipients = ["anna@example.com".to_owned(), "nobody@example.com".into(), "later@example.com".into()];
        let report = client.send("support@example.com", &recipients, b"Subject: x\n\n.hidden\nend").unwrap();
        assert_eq!(report.accepted, ["anna@example.com"]);
        assert_eq!(report.rejected.len(), 2);
        assert!(matches!(report.rejected[0].1, SmtpError::Permanent { code: 550, .. }));
        assert!(matches!(report.rejected[1].1, SmtpError::Retryable { code: 450, .. }));
        assert_eq!(report.reply, "2.0.0 Ok: queued as 4ABC");
        assert!(client.quit().unwrap().finished());
    }
}

#[test]
fn starttls_then_ehlo_again() {
    let script = Scripted::new(5)
        .server("220 ready\r\n")
        .client("EHLO c.example\r\n")
        .server("250-hi\r\n250 STARTTLS\r\n")
        .client("STARTTLS\r\n")
        .server("220 2.0.0 Ready to start TLS\r\n")
        .tls()
        .client("EHLO c.example\r\n")
        .server("250-hi\r\n250 AUTH LOGIN\r\n");
    let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
    client.ehlo("c.example").unwrap();
    let ext = client.starttls().unwrap();
    assert!(!ext.starttls);
    assert_eq!(ext.auth, ["LOGIN"]);
    assert!(client.into_transport().tls);
}

#[test]
fn authenticate_prefers_plain_with_the_password_filled_in_by_the_host() {
    let script = Scripted::new(5)
        .server("220 ready\r\n")
        .client("EHLO c.example\r\n")
        .server("250-hi\r\n250 AUTH LOGIN PLAIN\r\n")
        .secret("AUTH PLAIN {{secret_sasl_plain:smtp_password:support@example.com}}\r\n")
        .server("235 2.7.0 Authentication successful\r\n");
    let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
    client.ehlo("c.example").unwrap();
    client.authenticate("support@example.com", "smtp_password").unwrap();
}

#[test]
fn authenticate_falls_back_to_login_and_names_what_is_offered() {
    let script =
        Scripted::new(5).server("220 ready\r\n").client("EHLO c.example\r\n").server("250-hi\r\n250 AUTH CRAM-MD5\r\n");
    let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
    client.ehlo("c.example").unwrap();
    let err = client.authenticate("u", "pw").unwrap_err();
    assert!(err.to_string().contains("does not offer AUTH LOGIN (offered: CRAM-MD5)"), "{err}");
    let script =
        Scripted::new(5).server("220 ready\r\n").client("EHLO c.example\r\n").server("250-hi\r\n250 AUTH PLAIN\r\n");
    let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
    client.ehlo("c.example").unwrap();
    let err = client.auth_plain("user:with:colons", "pw").unwrap_err();
    assert!(matches!(err, SmtpError::InvalidArgument { .. }), "{err}");
}

#[test]
fn auth_without_login_is_a_clear_error() {
    let script =
        Scripted::new(5).server("220 ready\r\n").client("EHLO c.example\r\n").server("250-hi\r\n250 AUTH PLAIN\r\n");
    let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
    client.ehlo("c.example").unwrap();
    let err = client.auth_login("u", "pw").unwrap_err();
    assert!(matches!(err, SmtpError::Unsupported { .. }));
    assert!(err.to_string().contains("does not offer AUTH LOGIN (offered: PLAIN)"), "{err}");
}

#[test]
fn auth_refused() {
    let script = ready(3)
        .client("AUTH LOGIN\r\n")
        .server("334 VXNlcm5hbWU6\r\n")
        .client("dQ==\r\n")
        .server("334 UGFzc3dvcmQ6\r\n")
        .secret("{{secret_base64:pw}}\r\n")
        .server("535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6\r\n");
    let mut client = session(script);
    let err = client.auth_login("u", "pw").unwrap_err();
    assert_eq!(err.to_string(), "SMTP AUTH LOGIN: rejected: 535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6");
}

#[test]
fn temporary_then_permanent_failures() {
    let script = ready(6)
        .client("MAIL FROM:<a@example.com> SIZE=4\r\n")
        .server("250 ok\r\n")
        .client("RCPT TO:<b@example.com>\r\n")
        .server("250 ok\r\n")
        .client("DATA\r\n")
        .server("354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("451 4.3.0 Local error in processing\r\n")
        .client("MAIL FROM:<a@example.com> SIZE=4\r\n")
        .server("250 ok\r\n")
        .client("RCPT TO:<b@example.com>\r\n")
        .server("250 ok\r\n")
        .client("DATA\r\n")
        .server("354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("550-5.7.1 Message rejected\r\n550 5.7.1 as spam\r\n");
    let mut client = session(script);
    let to = ["b@example.com".to_owned()];
    let err = client.send("a@example.com", &to, b"hi").unwrap_err();
    assert_eq!(
        err,
        SmtpError::Retryable { command: "DATA".into(), code: 451, text: "4.3.0 Local error in processing".into() }
    );
    assert!(err.is_retryable());
    let err = client.send("a@example.com", &to, b"hi").unwrap_err();
    assert_eq!(
        err,
        SmtpError::Permanent { command: "DATA".into(), code: 550, text: "5.7.1 Message rejected 5.7.1 as spam".into() }
    );
    assert!(!err.is_retryable());
}

#[test]
fn all_recipients_refused_resets() {
    let script = ready(6)
        .client("MAIL FROM:<a@example.com> SIZE=4\r\n")
        .server("250 ok\r\n")
        .client("RCPT TO:<b@example.com>\r\n")
        .server("550 5.1.1 no such user\r\n")
        .client("RCPT TO:<c@example.com>\r\n")
        .server("452 4.5.3 too many recipients\r\n")
        .client("RSET\r\n")
        .server("250 ok\r\n");
    let mut client = session(script);
    let to = ["b@example.com".to_owned(), "c@example.com".to_owned()];
    let err = client.send("a@example.com", &to, b"hi").unwrap_err();
    assert_eq!(err.to_string(), "SMTP RCPT TO:<c@example.com>: temporary failure: 452 4.5.3 too many recipients");
}

#[test]
fn connection_drop_is_retryable() {
    let script = ready(6).client("MAIL FROM:<a@example.com> SIZE=4\r\n").close();
    let mut client = session(script);
    let err = client.send("a@example.com", &["b@example.com".to_owned()], b"hi").unwrap_err();
    assert!(matches!(err, SmtpError::Retryable { code: 0, ref command, .. } if command == "MAIL FROM:<a@example.com>"));
    assert_eq!(err.to_string(), "SMTP MAIL FROM:<a@example.com>: temporary failure: the server closed the connection");
}

#[test]
fn size_limit_and_bad_arguments() {
    let mut client = session(ready(6));
    let err = client.send("a@example.com", &["b@example.com".to_owned()], &[b'x'; 2000]).unwrap_err();
    assert!(err.to_string().contains("at most 1000 (SIZE)"), "{err}");
    let err = client.send("a@example.com>\r\nRCPT TO:<x@y", &["b@example.com".to_owned()], b"x").unwrap_err();
    assert!(matches!(err, SmtpError::InvalidArgument { .. }));
    let err = client.send("a@example.com", &[], b"x").unwrap_err();
    assert!(matches!(err, SmtpError::InvalidArgument { .. }));
}

#[test]
fn hostile_replies_are_bounded() {
    let mut long = "220 ".to_owned();
    long.push_str(&"x".repeat(100 * 1024));
    long.push_str("\r\n");
    let err = SmtpClient::connect(Scripted::new(4096).server(long), SmtpConfig::default()).err().unwrap();
    assert_eq!(err.to_string(), "SMTP greeting: protocol error: reply line longer than 4096 bytes");
    let endless = "250-x\r\n".repeat(500);
    let script = Scripted::new(4096).server("220 ok\r\n").client("EHLO c\r\n").server(endless);
    let mut client = SmtpClient::connect(script, SmtpConfig::default()).unwrap();
    let err = client.ehlo("c").unwrap_err();
    assert!(err.to_string().contains("longer than 200 lines"), "{err}");
    let err = SmtpClient::connect(Scripted::new(10).server("* OK IMAP\r\n"), SmtpConfig::default()).err().unwrap();
    assert!(matches!(err, SmtpError::Protocol { .. }));
    let err = SmtpClient::connect(Scripted::new(10).server("554 go away\r\n"), SmtpConfig::default()).err().unwrap();
    assert!(matches!(err, SmtpError::Permanent { code: 554, .. }));
}

#[test]
fn dot_stuffing_and_line_endings() {
    assert_eq!(dot_stuff(b".start\n..two\r\nmid.dle\r.\n"), b"..start\r\n...two\r\nmid.dle\r\n..\r\n.\r\n");
    assert_eq!(dot_stuff(b"no end"), b"no end\r\n.\r\n");
    assert_eq!(dot_stuff(b""), b".\r\n");
    assert_eq!(dot_stuff(b"a\r\n\r\n.\r\n"), b"a\r\n\r\n..\r\n.\r\n");
}
