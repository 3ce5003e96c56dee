//! Times `parse` on a typical 50 KB message: multipart/mixed holding multipart/alternative
//! (quoted-printable text and HTML) and a small base64 attachment; then, for the cost of charset
//! detection, a message whose 8-bit text declares no charset. Run it in release:
//!
//! ```text
//! cargo run --release --example parse_bench
//! ```

use std::hint::black_box;
use std::time::Instant;

use email_parse::{Limits, ProblemKind, parse};

const ITERATIONS: u32 = 2_000;

/// Quoted-printable, lines of at most 76 characters.
fn quoted_printable(text: &str) -> String {
    let mut out = String::new();
    for line in text.split('\n') {
        let mut width = 0;
        for &b in line.as_bytes() {
            let piece = if (b.is_ascii_graphic() && b != b'=') || b == b' ' {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            };
            if width + piece.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            width += piece.len();
            out.push_str(&piece);
        }
        out.push_str("\r\n");
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = chunk.iter().enumerate().fold(0u32, |acc, (j, &b)| acc | u32::from(b) << (16 - 8 * j));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.push_str("\r\n");
    out
}

/// A reply as a support conversation has it: a few paragraphs, then the quoted history.
fn message() -> Vec<u8> {
    let paragraph = "Sehr geehrte Damen und Herren, vielen Dank für Ihre schnelle Rückmeldung. Die Lieferung \
                     ist heute eingetroffen, allerdings fehlt das Netzteil für das Gerät. Könnten Sie bitte prüfen, \
                     ob es nachgeliefert wird? Die Rechnung über 1.249,00 € haben wir bereits beglichen.";
    let mut plain = String::new();
    let mut html = String::from(
        "<html><head><meta charset=\"utf-8\"><style>p{margin:0}</style></head><body><div class=\"WordSection1\">",
    );
    for i in 0..59 {
        plain.push_str(&format!("{paragraph} ({i})\n\n"));
        html.push_str(&format!("<p class=\"MsoNormal\">{paragraph} <b>({i})</b><br><a href=\"https://plugdesk.example/t/{i}\">Ticket ansehen</a></p>\n"));
    }
    html.push_str("<ul><li>Netzteil</li><li>Kabel &amp; Adapter</li></ul></div></body></html>");
    let attachment: Vec<u8> = (0..3_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let raw = format!(
        "From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@mueller-bau.de>\r\n\
         To: Plugdesk Support <support@plugdesk.example>\r\n\
         Subject: =?UTF-8?Q?AW=3A_Lieferung_unvollst=C3=A4ndig?=\r\n\
         Date: Tue, 24 Nov 2026 10:15:42 +0100\r\n\
         Message-ID: <bench-1@mueller-bau.de>\r\n\
         In-Reply-To: <t4711.2@plugdesk.example>\r\n\
         References: <t4711.1@plugdesk.example> <t4711.2@plugdesk.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"mixed-1\"\r\n\r\n\
         --mixed-1\r\nContent-Type: multipart/alternative; boundary=\"alt-1\"\r\n\r\n\
         --alt-1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n\
         --alt-1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n\
         --alt-1--\r\n\
         --mixed-1\r\nContent-Type: application/octet-stream; name=\"lieferschein.bin\"\r\n\
         Content-Disposition: attachment; filename=\"lieferschein.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --mixed-1--\r\n",
        quoted_printable(&plain),
        quoted_printable(&html),
        base64(&attachment),
    );
    raw.into_bytes()
}

/// A message as old mailers send it: 8-bit Windows-1252 text of about 15 KB, no charset
/// declared, a subject in raw 8-bit too. Reading it takes chardetng (body and header).
fn undeclared_message() -> Vec<u8> {
    let paragraph = "Sehr geehrte Damen und Herren, vielen Dank für Ihre schnelle Rückmeldung. Die Lieferung \
                     ist heute eingetroffen, allerdings fehlt das Netzteil. Die Rechnung über 1.249,00 € haben \
                     wir bereits beglichen. Mit freundlichen Grüßen";
    let mut raw = b"From: joerg@mueller-bau.de\r\nSubject: ".to_vec();
    raw.extend(encoding_rs::WINDOWS_1252.encode("Lieferung unvollständig, Grüße").0.iter());
    raw.extend_from_slice(b"\r\nMessage-ID: <bench-2@mueller-bau.de>\r\n\r\n");
    for i in 0..59 {
        raw.extend(encoding_rs::WINDOWS_1252.encode(&format!("{paragraph} ({i})\r\n\r\n")).0.iter());
    }
    raw
}

/// Parses `raw` a number of times and prints the mean time.
fn time(label: &str, raw: &[u8], limits: &Limits) {
    for _ in 0..50 {
        black_box(parse(black_box(raw), limits));
    }
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        black_box(parse(black_box(raw), limits));
    }
    let mean = start.elapsed() / ITERATIONS;
    println!(
        "{label}: {} bytes; mean parse time over {ITERATIONS} iterations: {:.1} µs ({:.0} MB/s)",
        raw.len(),
        mean.as_secs_f64() * 1e6,
        raw.len() as f64 / mean.as_secs_f64() / 1e6
    );
}

fn main() {
    let raw = message();
    let limits = Limits::default();
    let check = parse(&raw, &limits);
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(check.attachments.len(), 1);
    time("message", &raw, &limits);

    let raw = undeclared_message();
    let check = parse(&raw, &limits);
    assert!(check.text.as_deref().is_some_and(|t| t.contains("über 1.249,00 €")), "{:?}", check.text);
    assert_eq!(check.subject.as_deref(), Some("Lieferung unvollständig, Grüße"));
    assert!(check.problems.iter().all(|p| p.kind == ProblemKind::CharsetMismatch), "{:?}", check.problems);
    time("undeclared 8-bit message (charset detection)", &raw, &limits);
}
