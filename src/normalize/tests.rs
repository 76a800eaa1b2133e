use super::{PathError, normalize};

#[test]
fn plain_paths_pass_unchanged() {
    assert_eq!(normalize("/").as_deref(), Ok("/"));
    assert_eq!(
        normalize("/orgs/acme/builds").as_deref(),
        Ok("/orgs/acme/builds")
    );
    assert_eq!(normalize("/a:b@c;d=e,f").as_deref(), Ok("/a:b@c;d=e,f"));
}

#[test]
fn unreserved_escapes_decode_once() {
    assert_eq!(normalize("/%61%62c").as_deref(), Ok("/abc"));
    // `%25` is `%`, not unreserved: kept, so `%2561` never becomes `a`.
    assert_eq!(normalize("/%2561").as_deref(), Ok("/%2561"));
    assert_eq!(normalize("/%252F").as_deref(), Ok("/%252F"));
}

#[test]
fn reserved_escapes_are_kept_upper_cased() {
    assert_eq!(normalize("/a%20b%3f").as_deref(), Ok("/a%20b%3F"));
}

#[test]
fn encoded_separators_and_nul_are_refused() {
    assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSeparator));
    assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
    assert_eq!(normalize("/a%5Cb"), Err(PathError::EncodedSeparator));
    assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
    assert_eq!(normalize("/a%00"), Err(PathError::EncodedNul));
    assert_eq!(normalize("/a\\b"), Err(PathError::Backslash));
}

#[test]
fn bad_percent_encoding_is_refused() {
    assert_eq!(normalize("/a%"), Err(PathError::BadPercentEncoding));
    assert_eq!(normalize("/a%4"), Err(PathError::BadPercentEncoding));
    assert_eq!(normalize("/a%zz"), Err(PathError::BadPercentEncoding));
}

#[test]
fn dot_segments_raw_or_encoded_are_refused() {
    for p in [
        "/a/../b",
        "/a/./b",
        "/..",
        "/a/..",
        "/%2e%2e/b",
        "/%2E/b",
        "/.%2e/x",
        "/a/..",
    ] {
        assert_eq!(normalize(p), Err(PathError::DotSegment), "{p}");
    }
    // Dots inside a segment are fine.
    assert_eq!(
        normalize("/a/..b/.c/file.json").as_deref(),
        Ok("/a/..b/.c/file.json")
    );
}

#[test]
fn slashes_collapse_and_trailing_slash_is_kept() {
    assert_eq!(normalize("//a///b").as_deref(), Ok("/a/b"));
    assert_eq!(normalize("/a/b/").as_deref(), Ok("/a/b/"));
    assert_eq!(normalize("/a//").as_deref(), Ok("/a/"));
}

#[test]
fn case_is_kept() {
    assert_eq!(normalize("/Orgs/ACME").as_deref(), Ok("/Orgs/ACME"));
}

#[test]
fn not_absolute_is_refused() {
    assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    assert_eq!(normalize(""), Err(PathError::NotAbsolute));
}

#[test]
fn dot_segments_hidden_behind_path_parameters_are_refused() {
    for p in ["/static/..;/admin", "/a/.;x/b", "/..;"] {
        assert_eq!(normalize(p), Err(PathError::DotSegment), "{p}");
    }
    // `;` itself is left for the route to accept or refuse.
    assert_eq!(normalize("/admin;/users").as_deref(), Ok("/admin;/users"));
}

/// Regression: bytes at or above 0x80 were turned into Latin-1 characters.
#[test]
fn bytes_outside_ascii_are_refused() {
    assert_eq!(normalize("/caf\u{e9}"), Err(PathError::NonAscii));
    assert_eq!(normalize("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
}
