use super::*;

fn from_query(q: &str) -> Result<String, OrgError> {
    OrgSource::Query("org".into()).resolve(&http::HeaderMap::new(), Some(q), None, &[], None)
}

#[test]
fn the_query_organization_is_read_decoded() {
    assert_eq!(from_query("org=acme"), Ok("acme".into()));
    assert_eq!(from_query("page=2&org=ac%6De"), Ok("acme".into()));
    assert_eq!(
        from_query("organization=x&org=acme&orgs=y"),
        Ok("acme".into())
    );
}

/// Regression: names were compared raw, so `?org=acme&%6Frg=globex` was authorized for acme
/// while the upstream's parser saw two `org` values.
#[test]
fn encoded_case_and_array_variants_of_the_name_are_refused() {
    for q in [
        "org=acme&%6Frg=globex",
        "org=acme&org=acme",
        "org=acme&ORG=globex",
        "Org=acme",
        "org=acme&org[]=globex",
        "org[]=acme",
        "org[0]=acme",
        "org.x=acme",
        "org%5B%5D=globex&org=acme",
        "org=acme;org=globex",
        "x=1;org=globex&org=acme",
        "org%00=globex&org=acme",
    ] {
        assert!(
            matches!(from_query(q), Err(OrgError::Invalid(_))),
            "{q}: {:?}",
            from_query(q)
        );
    }
    assert!(matches!(from_query("org=a+b"), Err(OrgError::Invalid(_))));
    assert!(matches!(from_query("x=1"), Err(OrgError::Missing(_))));
}

#[test]
fn the_host_organization_is_the_first_label_of_a_name() {
    let resolve =
        |h: &str| OrgSource::Host.resolve(&http::HeaderMap::new(), None, Some(h), &[], None);
    assert_eq!(resolve("acme.api.example.com"), Ok("acme".into()));
    assert!(resolve("localhost").is_err());
    assert!(resolve("127.0.0.1").is_err());
}
