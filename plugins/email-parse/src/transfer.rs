//! Content-Transfer-Encodings: base64 and quoted-printable. Both decoders are tolerant: they
//! decode what they can and say where they had to stop.

/// The value of each base64 alphabet byte, or `INVALID`; whitespace is `SKIP`.
const INVALID: u8 = 0xFF;
const SKIP: u8 = 0xFE;
const PAD: u8 = 0xFD;

const B64: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 26 {
        table[b'A' as usize + i] = i as u8;
        table[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        table[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    table[b'+' as usize] = 62;
    table[b'/' as usize] = 63;
    table[b'=' as usize] = PAD;
    table[b' ' as usize] = SKIP;
    table[b'\t' as usize] = SKIP;
    table[b'\r' as usize] = SKIP;
    table[b'\n' as usize] = SKIP;
    table[0x0B] = SKIP;
    table[0x0C] = SKIP;
    table
};

/// Why base64 decoding stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base64Error {
    /// A byte outside the alphabet at this offset; the data before it was decoded.
    InvalidAt(usize),
    /// The data ended with a single leftover character (six bits, not a whole byte).
    Incomplete,
}

/// Decodes base64, skipping whitespace and line breaks anywhere and accepting missing padding
/// and blocks padded one after another. Stops at the first byte outside the alphabet.
pub(crate) fn base64(input: &[u8]) -> (Vec<u8>, Option<Base64Error>) {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut n = 0u8;
    for (i, &byte) in input.iter().enumerate() {
        let v = B64[byte as usize];
        if v < 64 {
            acc = (acc << 6) | u32::from(v);
            n += 1;
            if n == 4 {
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                acc = 0;
                n = 0;
            }
        } else if v == SKIP {
            continue;
        } else if v == PAD {
            match n {
                0 => {}
                2 => out.push((acc >> 4) as u8),
                3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
                _ => return (out, Some(Base64Error::InvalidAt(i))),
            }
            acc = 0;
            n = 0;
        } else {
            flush(&mut out, acc, n);
            return (out, Some(Base64Error::InvalidAt(i)));
        }
    }
    if n == 1 {
        return (out, Some(Base64Error::Incomplete));
    }
    flush(&mut out, acc, n);
    (out, None)
}

/// Emits the whole bytes of an unpadded final group of `n` characters.
fn flush(out: &mut Vec<u8>, acc: u32, n: u8) {
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
}

/// The value of an ASCII hex digit, either case.
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes quoted-printable: `=XX` (either case) becomes a byte, `=` at the end of a line joins
/// it with the next (a soft line break), whitespace the transport added at line ends goes, and
/// anything malformed (`=` not followed by two hex digits) is kept as it is. Line breaks are
/// kept as they are in the input (CRLF or LF).
pub(crate) fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while !rest.is_empty() {
        let (line, newline, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let (line, crlf) = match rest[..i].strip_suffix(b"\r") {
                    Some(l) => (l, true),
                    None => (&rest[..i], false),
                };
                (line, Some(if crlf { &b"\r\n"[..] } else { &b"\n"[..] }), &rest[i + 1..])
            }
            None => (rest, None, &rest[rest.len()..]),
        };
        rest = next;
        let mut line = line;
        while let [head @ .., b' ' | b'\t'] = line {
            line = head;
        }
        let soft = line.last() == Some(&b'=');
        let body = if soft { &line[..line.len() - 1] } else { line };
        let mut i = 0;
        while i < body.len() {
            let b = body[i];
            if b == b'='
                && let (Some(hi), Some(lo)) =
                    (body.get(i + 1).copied().and_then(hex_value), body.get(i + 2).copied().and_then(hex_value))
            {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            out.push(b);
            i += 1;
        }
        if !soft && let Some(nl) = newline {
            out.extend_from_slice(nl);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_tolerates_whitespace_and_padding() {
        assert_eq!(base64(b"SGVsbG8sIFdvcmxkIQ=="), (b"Hello, World!".to_vec(), None));
        assert_eq!(base64(b"SGVs\r\nbG8s\n IFdv cmxk\tIQ"), (b"Hello, World!".to_vec(), None));
        assert_eq!(base64(b"SGk=SGk="), (b"HiHi".to_vec(), None));
        assert_eq!(base64(b""), (vec![], None));
        assert_eq!(base64(b"SGVsbG8="), (b"Hello".to_vec(), None));
        assert_eq!(base64(b"SGVsbA"), (b"Hell".to_vec(), None));
    }

    #[test]
    fn base64_reports_where_it_stopped() {
        assert_eq!(base64(b"SGVsbG8s!IFdvcmxk"), (b"Hello,".to_vec(), Some(Base64Error::InvalidAt(8))));
        assert_eq!(base64(b"SGVsb"), (b"Hel".to_vec(), Some(Base64Error::Incomplete)));
        assert_eq!(base64(b"S=").1, Some(Base64Error::InvalidAt(1)));
    }

    #[test]
    fn quoted_printable_rules() {
        assert_eq!(quoted_printable(b"Gr=C3=BC=c3=9fe"), "Grüße".as_bytes());
        assert_eq!(quoted_printable(b"soft=\r\nbreak\r\nhard"), b"softbreak\r\nhard");
        assert_eq!(quoted_printable(b"soft= \nbreak\n"), b"softbreak\n");
        assert_eq!(quoted_printable(b"trailing   \nx"), b"trailing\nx");
        assert_eq!(quoted_printable(b"a=3Db =XY =4 =\n"), b"a=b =XY =4 ");
        assert_eq!(quoted_printable(b"100% =E4"), b"100% \xe4");
        assert_eq!(quoted_printable(b"="), b"");
        assert_eq!(quoted_printable(b"x=4"), b"x=4");
    }
}
