//! The channel instance's settings: read once per call, checked, with the defaults filled in,
//! and the JSON Schema the descriptor shows an admin.

use serde_json::{Value, json};

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
    /// A plain connection switched to TLS with STARTTLS (IMAP 143, submission 587).
    StartTls,
    /// No TLS at all: for a server on the same host or a test server only.
    None,
}

impl Security {
    fn parse(key: &str, value: &str) -> Result<Security, String> {
        match value {
            "tls" => Ok(Security::Tls),
            "starttls" => Ok(Security::StartTls),
            "none" => Ok(Security::None),
            other => Err(format!("setting {key}: {other:?} is not one of \"tls\", \"starttls\", \"none\"")),
        }
    }
}

/// What happens in the mailbox to mail the channel has taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Marked `\Seen`.
    Seen,
    /// Moved to [`ImapSettings::move_to`].
    Move,
    /// Left as it is.
    Keep,
}

/// Where and how the channel fetches mail (present when `imap_host` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapSettings {
    /// The server's host name (`imap_host`).
    pub host: String,
    /// Its port (`imap_port`; 993 with TLS, else 143).
    pub port: u16,
    /// How the connection is secured (`imap_security`; default TLS).
    pub security: Security,
    /// The login name (`imap_user`; default the support address).
    pub user: String,
    /// The mailbox read (`imap_mailbox`; default `INBOX`).
    pub mailbox: String,
    /// What happens to mail taken in (`imap_after`; default seen).
    pub after: After,
    /// Where `move` puts it (`imap_move_to`; default `Processed`).
    pub move_to: String,
    /// The most messages handed to the host per poll (`batch_messages`; default 200).
    pub batch_messages: usize,
    /// The most raw bytes fetched per poll, the first message always taken
    /// (`batch_bytes`; default 6 MiB).
    pub batch_bytes: usize,
}

/// Where replies are submitted (present when `smtp_host` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// The server's host name (`smtp_host`).
    pub host: String,
    /// Its port (`smtp_port`; 465 with TLS, 587 with STARTTLS, else 25).
    pub port: u16,
    /// How the connection is secured (`smtp_security`; default STARTTLS).
    pub security: Security,
    /// The AUTH LOGIN name (`smtp_user`); without it, no AUTH.
    pub user: Option<String>,
}

/// The settings of one channel instance, checked and completed with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The support mailbox: the `From` of replies (`address`, required).
    pub address: String,
    /// The display name of `From` (`from_name`).
    pub from_name: Option<String>,
    /// Where customers' answers should go, if not to `address` (`reply_to`).
    pub reply_to: Option<String>,
    /// The domain of the Message-IDs the channel writes, lowercased (`message_id_domain`;
    /// default the domain of `address`). Mail with a Message-ID `plugdesk.…@` this domain is
    /// the channel's own and is never taken in.
    pub message_id_domain: String,
    /// Fetching, when `imap_host` is set.
    pub imap: Option<ImapSettings>,
    /// Sending, when `smtp_host` is set.
    pub smtp: Option<SmtpSettings>,
    /// The most automatic mails to one recipient in an hour (`automatic_per_recipient_per_hour`;
    /// default 10; 0 sends none).
    pub automatic_per_hour: u32,
    /// The largest attachment taken in (`max_attachment_bytes`; default 10 MiB).
    pub max_attachment_bytes: usize,
    /// The largest message source kept with a message (`max_raw_bytes`; default 10 MiB; 0 keeps none).
    pub max_raw_bytes: usize,
}

impl Settings {
    /// Reads the settings through `get` (a setting's JSON value, `None` when unset; JSON `null`
    /// and empty strings count as unset).
    ///
    /// # Errors
    /// A message naming the setting that is missing or wrong and what it should be.
    pub fn from_lookup(get: impl Fn(&str) -> Option<Value>) -> Result<Settings, String> {
        let read = Reader { get: &get };
        let address = read
            .string("address")?
            .ok_or("setting address is required: the support mailbox, e.g. \"support@example.com\"")?;
        let address = mailbox_address("address", &address)?;
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
        let message_id_domain = match read.string("message_id_domain")? {
            Some(d) => domain_name("message_id_domain", &d)?,
            None => domain,
        };
        let reply_to = read.string("reply_to")?.map(|r| mailbox_address("reply_to", &r)).transpose()?;

        let imap = match read.string("imap_host")? {
            None => None,
            Some(host) => {
                let security = read.security("imap_security", Security::Tls)?;
                let default_port = if security == Security::Tls { 993 } else { 143 };
                let mailbox = read.string("imap_mailbox")?.unwrap_or_else(|| "INBOX".to_owned());
                let after = match read.string("imap_after")?.as_deref() {
                    None | Some("seen") => After::Seen,
                    Some("move") => After::Move,
                    Some("keep") => After::Keep,
                    Some(other) => {
                        return Err(format!(
                            "setting imap_after: {other:?} is not one of \"seen\", \"move\", \"keep\""
                        ));
                    }
                };
                let move_to = read.string("imap_move_to")?.unwrap_or_else(|| "Processed".to_owned());
                if after == After::Move && same_mailbox(&move_to, &mailbox) {
                    return Err(format!(
                        "setting imap_move_to: {move_to:?} is the mailbox the channel reads (imap_mailbox); \
                         name another one or set imap_after to \"seen\" or \"keep\""
                    ));
                }
                Some(ImapSettings {
                    host: host_name("imap_host", &host)?,
                    port: read.number("imap_port", 1, 65_535)?.map_or(default_port, |p| p as u16),
                    security,
                    user: read.string("imap_user")?.unwrap_or_else(|| address.clone()),
                    mailbox,
                    after,
                    move_to,
                    batch_messages: read.number("batch_messages", 1, 5000)?.unwrap_or(200) as usize,
                    batch_bytes: read.number("batch_bytes", 1, 32 * MIB)?.unwrap_or(6 * MIB) as usize,
                })
            }
        };

        let smtp = match read.string("smtp_host")? {
            None => None,
            Some(host) => {
                let security = read.security("smtp_security", Security::StartTls)?;
                let default_port = match security {
                    Security::Tls => 465,
                    Security::StartTls => 587,
                    Security::None => 25,
                };
                Some(SmtpSettings {
                    host: host_name("smtp_host", &host)?,
                    port: read.number("smtp_port", 1, 65_535)?.map_or(default_port, |p| p as u16),
                    security,
                    user: read.string("smtp_user")?,
                })
            }
        };

        Ok(Settings {
            address,
            from_name: read.string("from_name")?,
            reply_to,
            message_id_domain,
            imap,
            smtp,
            automatic_per_hour: read.number("automatic_per_recipient_per_hour", 0, 1000)?.unwrap_or(10) as u32,
            max_attachment_bytes: read.number("max_attachment_bytes", 0, 1024 * MIB)?.unwrap_or(10 * MIB) as usize,
            max_raw_bytes: read.number("max_raw_bytes", 0, 1024 * MIB)?.unwrap_or(10 * MIB) as usize,
        })
    }
}

/// Reads typed values through a settings lookup.
struct Reader<'a> {
    get: &'a dyn Fn(&str) -> Option<Value>,
}

impl Reader<'_> {
    /// A string setting, trimmed; `None` when unset, `null` or empty.
    fn string(&self, key: &str) -> Result<Option<String>, String> {
        match (self.get)(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.chars().any(char::is_control) {
                    return Err(format!("setting {key}: {s:?} holds a control character"));
                }
                Ok(Some(s.to_owned()).filter(|s| !s.is_empty()))
            }
            Some(other) => Err(format!("setting {key}: expected a string, got {other}")),
        }
    }

    /// A whole number from `min` to `max`, as a JSON number or a string of digits.
    fn number(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
        let value = match (self.get)(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(Value::Number(n)) => n.as_u64(),
            Some(_) => None,
        };
        match value {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "setting {key}: expected a whole number from {min} to {max}, got {}",
                (self.get)(key).unwrap_or(Value::Null)
            )),
        }
    }

    fn security(&self, key: &str, default: Security) -> Result<Security, String> {
        self.string(key)?.map_or(Ok(default), |s| Security::parse(key, &s))
    }
}

/// `local@domain` with the domain lowercased, or an error naming the setting.
fn mailbox_address(key: &str, value: &str) -> Result<String, String> {
    let bad = || format!("setting {key}: {value:?} is not an e-mail address such as \"support@example.com\"");
    let (local, domain) = value.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || value.len() > 254
        || value.chars().any(|c| c.is_whitespace() || "<>(),;:\"[]\\".contains(c))
        || domain_name(key, domain).is_err()
    {
        return Err(bad());
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// A domain name, lowercased: letters, digits, `-` and dots, as Message-IDs and EHLO need it.
fn domain_name(key: &str, value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(format!("setting {key}: {value:?} is not a domain name such as \"example.com\""));
    }
    Ok(value.to_ascii_lowercase())
}

/// A host name or IP address to connect to.
fn host_name(key: &str, value: &str) -> Result<String, String> {
    if value.len() > 253 || value.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("setting {key}: {value:?} is not a host name such as \"mail.example.com\""));
    }
    Ok(value.to_owned())
}

/// Whether two mailbox names name the same mailbox (`INBOX` in any case is one name).
fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX")
}

/// The JSON Schema of the settings, as the descriptor gives it.
pub fn schema() -> String {
    let string = |description: &str| json!({ "type": "string", "description": description });
    let port =
        |description: &str| json!({ "type": "integer", "minimum": 1, "maximum": 65535, "description": description });
    let security = |default: &str, description: &str| json!({ "type": "string", "enum": ["tls", "starttls", "none"], "default": default, "description": description });
    json!({
        "type": "object",
        "description": "E-mail over IMAP (polled) and SMTP submission, or piped in by the mail server \
                        (`plugdesk mail-in`). Secrets: imap_password, smtp_password, inbound_token (for piped \
                        mail). Grants: secrets, kv, tcp:IMAP_HOST:PORT, tcp:SMTP_HOST:PORT.",
        "properties": {
            "address": { "type": "string", "format": "email", "description": "The support mailbox: From of replies, default IMAP login" },
            "from_name": string("Display name in From of replies, e.g. \"ACME Support\""),
            "reply_to": { "type": "string", "format": "email", "description": "Reply-To of replies, when answers should go elsewhere than address" },
            "message_id_domain": string("Domain of the Message-IDs of replies; default: the domain of address"),
            "imap_host": string("IMAP server; without it the channel does not poll (send-only, or mail piped in)"),
            "imap_port": port("Default 993 with tls, 143 otherwise"),
            "imap_security": security("tls", "tls (IMAPS), starttls, or none (local or test servers only)"),
            "imap_user": string("IMAP login; default: address"),
            "imap_mailbox": { "type": "string", "default": "INBOX", "description": "The mailbox read" },
            "imap_after": {
                "type": "string", "enum": ["seen", "move", "keep"], "default": "seen",
                "description": "What happens to mail once taken in (at the next poll): marked seen, moved to imap_move_to, or kept as it is"
            },
            "imap_move_to": { "type": "string", "default": "Processed", "description": "Mailbox for imap_after = move; created when missing" },
            "batch_messages": { "type": "integer", "minimum": 1, "maximum": 5000, "default": 200, "description": "Most messages taken in per poll" },
            "batch_bytes": {
                "type": "integer", "minimum": 1, "maximum": 32 * MIB, "default": 6 * MIB,
                "description": "Most raw bytes fetched per poll (the first message is always taken); a poll's output is up to about three times this"
            },
            "smtp_host": string("SMTP submission server; without it the channel does not send"),
            "smtp_port": port("Default 465 with tls, 587 with starttls, 25 with none"),
            "smtp_security": security("starttls", "starttls, tls (SMTPS), or none (local or test servers only)"),
            "smtp_user": string("AUTH LOGIN name with the secret smtp_password; without it, no AUTH"),
            "automatic_per_recipient_per_hour": {
                "type": "integer", "minimum": 0, "maximum": 1000, "default": 10,
                "description": "Loop protection: most automatic mails (acknowledgements, auto-replies) to one address per hour"
            },
            "max_attachment_bytes": {
                "type": "integer", "minimum": 0, "default": 10 * MIB,
                "description": "Larger attachments are left out (with a note in the text)"
            },
            "max_raw_bytes": {
                "type": "integer", "minimum": 0, "default": 10 * MIB,
                "description": "Largest message source kept with a message; 0 keeps none"
            }
        },
        "required": ["address"],
        "additionalProperties": false
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(pairs: &[(&str, Value)]) -> Result<Settings, String> {
        let map: HashMap<String, Value> = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        Settings::from_lookup(|key| map.get(key).cloned())
    }

    #[test]
    fn defaults_follow_the_address_and_security() {
        let s = load(&[
            ("address", json!("Support@Example.COM")),
            ("imap_host", json!("imap.example.com")),
            ("smtp_host", json!("smtp.example.com")),
        ])
        .unwrap();
        assert_eq!(s.address, "Support@example.com");
        assert_eq!(s.message_id_domain, "example.com");
        assert_eq!((s.automatic_per_hour, s.max_attachment_bytes, s.max_raw_bytes), (10, 10 << 20, 10 << 20));
        let imap = s.imap.unwrap();
        assert_eq!((imap.port, imap.security, imap.user.as_str()), (993, Security::Tls, "Support@example.com"));
        assert_eq!((imap.mailbox.as_str(), imap.after, imap.move_to.as_str()), ("INBOX", After::Seen, "Processed"));
        assert_eq!((imap.batch_messages, imap.batch_bytes), (200, 6 << 20));
        let smtp = s.smtp.unwrap();
        assert_eq!((smtp.port, smtp.security, smtp.user), (587, Security::StartTls, None));

        let s = load(&[
            ("address", json!("a@x.de")),
            ("imap_host", json!("127.0.0.1")),
            ("imap_security", json!("starttls")),
            ("smtp_host", json!("localhost")),
            ("smtp_security", json!("tls")),
            ("smtp_port", json!("2465")),
            ("message_id_domain", json!("Mail.X.de")),
            ("from_name", json!("")),
            ("reply_to", Value::Null),
        ])
        .unwrap();
        assert_eq!(s.imap.unwrap().port, 143);
        assert_eq!(s.smtp.as_ref().map(|m| (m.port, m.security)), Some((2465, Security::Tls)));
        assert_eq!(s.message_id_domain, "mail.x.de");
        assert_eq!((s.from_name, s.reply_to), (None, None));
        let none = load(&[("address", json!("a@x.de")), ("smtp_host", json!("h")), ("smtp_security", json!("none"))]);
        assert_eq!(none.unwrap().smtp.unwrap().port, 25);
        assert!(load(&[("address", json!("a@x.de"))]).unwrap().imap.is_none());
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |pairs: &[(&str, Value)]| load(pairs).unwrap_err();
        assert!(err(&[]).starts_with("setting address is required"));
        assert!(err(&[("address", json!("support"))]).starts_with("setting address: \"support\" is not an e-mail"));
        assert!(err(&[("address", json!(5))]).starts_with("setting address: expected a string"));
        let with = |key: &str, value: Value| {
            err(&[("address", json!("a@x.de")), ("imap_host", json!("h")), ("smtp_host", json!("h")), (key, value)])
        };
        assert!(with("imap_port", json!(0)).starts_with("setting imap_port: expected a whole number from 1 to 65535"));
        assert!(with("smtp_port", json!("abc")).starts_with("setting smtp_port:"));
        assert!(with("imap_security", json!("ssl")).starts_with("setting imap_security: \"ssl\" is not one of"));
        assert!(with("imap_after", json!("delete")).starts_with("setting imap_after:"));
        assert!(with("batch_messages", json!(0)).starts_with("setting batch_messages:"));
        assert!(with("batch_bytes", json!(-1)).starts_with("setting batch_bytes:"));
        assert!(with("reply_to", json!("x y@z")).starts_with("setting reply_to:"));
        assert!(with("message_id_domain", json!("a b")).starts_with("setting message_id_domain:"));
        assert!(with("automatic_per_recipient_per_hour", json!(1.5)).starts_with("setting automatic_per_recipient"));
        assert!(with("imap_host", json!("imap.x.de/path")).starts_with("setting imap_host:"));
        let same = err(&[
            ("address", json!("a@x.de")),
            ("imap_host", json!("h")),
            ("imap_after", json!("move")),
            ("imap_move_to", json!("inbox")),
        ]);
        assert!(same.starts_with("setting imap_move_to: \"inbox\" is the mailbox the channel reads"), "{same}");
    }

    #[test]
    fn schema_lists_every_setting_and_requires_the_address() {
        let schema: Value = serde_json::from_str(&schema()).unwrap();
        let keys: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "address",
            "from_name",
            "reply_to",
            "message_id_domain",
            "imap_host",
            "imap_port",
            "imap_security",
            "imap_user",
            "imap_mailbox",
            "imap_after",
            "imap_move_to",
            "batch_messages",
            "batch_bytes",
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "smtp_user",
            "automatic_per_recipient_per_hour",
            "max_attachment_bytes",
            "max_raw_bytes",
        ] {
            assert!(keys.contains(&key), "{key} missing from the schema");
        }
        assert_eq!(keys.len(), 20);
        assert_eq!(schema["required"], json!(["address"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(schema["properties"]["batch_bytes"]["default"], json!(6 << 20));
    }
}
