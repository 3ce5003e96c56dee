//! Base64 and quoted-printable encoding (RFC 2045), for message bodies and SMTP AUTH, and the
//! FNV-1a hash that derives stable names (MIME boundaries, ids of mail without a Message-ID).

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` as base64 (RFC 4648, with padding), on one line.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64[*s as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Encodes `data` as base64 in lines of 76 characters, each ended by CRLF.
pub(crate) fn base64_lines(data: &[u8]) -> String {
    let encoded = base64_encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push_str("\r\n");
    }
    out
}

/// Encodes text as quoted-printable: line breaks (`\n`, `\r\n` or `\r`) become CRLF, every
/// other byte outside printable ASCII (and `=`, and a space or tab before a line break) is
/// `=XX`, and lines are kept to 76 characters with soft breaks (`=` at the end of a line).
/// The result ends with CRLF unless `text` is empty.
pub fn quoted_printable_encode(text: &str) -> String {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(normalized.len() * 11 / 10 + 4);
    let lines: Vec<&str> = normalized.split('\n').collect();
    let count = if normalized.ends_with('\n') { lines.len() - 1 } else { lines.len() };
    for line in lines.iter().take(count) {
        let bytes = line.as_bytes();
        let mut col = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece_len = if literal { 1 } else { 3 };
            // A soft break keeps each line at 76 characters including the `=`; the last
            // piece of a line may use the column the `=` would have taken.
            let room = if last { 76 } else { 75 };
            if col + piece_len > room {
                out.push_str("=\r\n");
                col = 0;
            }
            if literal {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("={b:02X}"));
            }
            col += piece_len;
        }
        out.push_str("\r\n");
    }
    out
}

/// FNV-1a (64 bits): a stable, non-cryptographic hash for names derived from content.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_values() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0xfd]), "//79");
        let lines = base64_lines(&[7u8; 200]);
        assert!(lines.split("\r\n").all(|l| l.len() <= 76));
    }

    #[test]
    fn quoted_printable_rules() {
        assert_eq!(quoted_printable_encode("Grüße = 1 \nx\t"), "Gr=C3=BC=C3=9Fe =3D 1=20\r\nx=09\r\n");
        let long = "a".repeat(200);
        let qp = quoted_printable_encode(&long);
        assert!(qp.split("\r\n").all(|l| l.len() <= 76), "{qp}");
        assert_eq!(qp.replace("=\r\n", ""), format!("{long}\r\n"));
        let umlauts = "ä".repeat(60);
        let qp = quoted_printable_encode(&umlauts);
        assert!(qp.split("\r\n").all(|l| l.len() <= 76));
        assert!(!qp.contains("=\r\n=\r\n"));
    }

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
