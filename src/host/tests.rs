use super::*;

fn canon(v: &str) -> Result<(String, String), HostError> {
    Host::parse(v.as_bytes()).map(|h| (h.authority().to_string(), h.name().to_string()))
}

#[test]
fn canonical_forms() {
    let ok = |v: &str, authority: &str, name: &str| {
        assert_eq!(
            canon(v),
            Ok((authority.to_string(), name.to_string())),
            "{v}"
        );
    };
    ok("API.Example.com", "api.example.com", "api.example.com");
    ok("api.example.com.", "api.example.com", "api.example.com");
    ok(
        "api.example.com.:8443",
        "api.example.com:8443",
        "api.example.com",
    );
    ok("127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1");
    ok("[::1]:443", "[::1]:443", "::1");
    ok("[0:0::1]", "[::1]", "::1");
    ok("svc_internal", "svc_internal", "svc_internal");
    ok("localhost:080", "localhost:80", "localhost");
}

#[test]
fn ambiguous_or_invalid_hosts_are_refused() {
    for bad in [
        "",
        ".",
        "a..b",
        "example.com..",
        ".example.com",
        "user@example.com",
        "example.com/path",
        "example.com:",
        "example.com:0",
        "example.com:65536",
        "example.com:123456",
        "example.com:8a",
        "exa mple.com",
        "exa%6Dple.com",
        "example.com:80:80",
        "[::1",
        "[::1]x",
        "[fe80::1%25eth0]",
        "[v1.x]",
        "::1",
        "ex\u{e4}mple.com",
        "example.com\t",
    ] {
        assert_eq!(canon(bad), Err(HostError::Invalid), "{bad:?}");
    }
    let long_label = "a".repeat(64);
    assert_eq!(canon(&long_label), Err(HostError::Invalid));
    let long_name = ["a"; 130].join(".");
    assert_eq!(canon(&long_name), Err(HostError::Invalid));
}

fn request(uri: &str, hosts: &[&str], version: http::Version) -> Result<Option<String>, HostError> {
    let uri: http::Uri = uri.parse().unwrap();
    let mut headers = http::HeaderMap::new();
    for h in hosts {
        headers.append(http::header::HOST, h.parse().unwrap());
    }
    of_request(version, &uri, &headers).map(|h| h.map(|h| h.authority().to_string()))
}

#[test]
fn the_request_names_one_host() {
    use http::Version;
    assert_eq!(
        request("/x", &["A.example"], Version::HTTP_11),
        Ok(Some("a.example".into()))
    );
    assert_eq!(
        request("/x", &["a.example", "b.example"], Version::HTTP_11),
        Err(HostError::Repeated)
    );
    // Absolute form (HTTP/1.1) or :authority (HTTP/2) against Host.
    assert_eq!(
        request("http://a.example/x", &["a.example."], Version::HTTP_11),
        Ok(Some("a.example".into()))
    );
    assert_eq!(
        request("http://b.example/x", &["a.example"], Version::HTTP_11),
        Err(HostError::Mismatch)
    );
    assert_eq!(
        request("https://b.example/x", &["a.example"], Version::HTTP_2),
        Err(HostError::Mismatch)
    );
    assert_eq!(
        request("https://b.example/x", &[], Version::HTTP_2),
        Ok(Some("b.example".into()))
    );
    assert_eq!(
        request("http://user@a.example/x", &["a.example"], Version::HTTP_11),
        Err(HostError::Invalid)
    );
    assert_eq!(
        request("/x", &[], Version::HTTP_11),
        Err(HostError::Missing)
    );
    assert_eq!(request("/x", &[], Version::HTTP_10), Ok(None));
}
