//! Path normalization: the one place that turns a request path into the path that is both
//! authorized and forwarded, so the two can never differ.
//!
//! Rules (documented in the README):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, once;
//!   every other escape is kept, with its hex digits upper-cased;
//! - `%2F`, `%5C` (encoded `/` and `\`), `%00`, a raw `\`, invalid percent-encoding, and
//!   dot segments (`.`/`..`, raw or encoded) are rejected;
//! - runs of `/` collapse into one (`//a` is `/a`); a trailing `/` is kept and significant;
//! - case is kept: paths are case-sensitive;
//! - bytes outside ASCII are rejected; `;` is kept here, and refused by the gateway unless the
//!   matched route accepts matrix parameters.

#[cfg(test)]
mod tests;

/// Why a request path was refused; each is answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (for example `*` or an authority-form target).
    #[error("the request path must start with `/`")]
    NotAbsolute,
    /// `%2F` or `%5C`: an encoded separator would be read differently upstream.
    #[error("the path contains an encoded `/` or `\\`")]
    EncodedSeparator,
    /// `%00`.
    #[error("the path contains an encoded NUL")]
    EncodedNul,
    /// A raw `\`, which some servers treat as `/`.
    #[error("the path contains a backslash")]
    Backslash,
    /// `%` not followed by two hex digits.
    #[error("the path contains invalid percent-encoding")]
    BadPercentEncoding,
    /// A `.` or `..` segment, raw or encoded.
    #[error("the path contains a dot segment")]
    DotSegment,
    /// A byte outside ASCII: upstreams decode it in different charsets.
    #[error("the path contains bytes outside ASCII; percent-encode them")]
    NonAscii,
    /// The path differs from another route's only by case or a trailing `/`, and the upstream
    /// folds them: it would act on that other route.
    #[error(
        "the path differs from another route only by case or a trailing `/`, which the upstream ignores"
    )]
    FoldsToAnotherRoute,
    /// A `;` path parameter (`/admin;/users`, `/static/..;/admin`), which Java and some
    /// other servers strip before routing; refused unless the route accepts matrix parameters.
    #[error("the path contains `;` parameters, which this route does not accept")]
    MatrixParameter,
}

/// Normalizes `raw` (the path of a request target, without the query) per the module rules.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(h), Some(l)) => (hex(*h), hex(*l)),
                    _ => (None, None),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let decoded = hi << 4 | lo;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0 => return Err(PathError::EncodedNul),
                    c if is_unreserved(c) => out.push(char::from(c)),
                    c => {
                        out.push('%');
                        out.push(char::from(HEX_UPPER[usize::from(c >> 4)]));
                        out.push(char::from(HEX_UPPER[usize::from(c & 0xf)]));
                    }
                }
                i += 3;
            }
            b'/' => {
                if !out.ends_with('/') {
                    out.push('/');
                }
                i += 1;
            }
            0x80.. => return Err(PathError::NonAscii),
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    // `..;x` is `..` to servers that strip path parameters before resolving dot segments.
    if out
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(PathError::DotSegment);
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}
