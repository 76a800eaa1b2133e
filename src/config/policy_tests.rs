//! Policy tests written in policy files, compiled to described requests.

#[allow(
    clippy::wildcard_imports,
    reason = "a section of the configuration module, written against its imports and helpers"
)]
use super::*;

pub(super) fn policy_test(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::PolicyTest,
    issuer: Option<&Arc<IssuerConfig>>,
) -> Option<crate::described::PolicyTest> {
    let at = |key: &'static str| [Step::Key("tests"), Step::Index(i), Step::Key(key)];
    let location = format!(
        "{}{}",
        check.file.display(),
        line_suffix(check.locator.find(&[Step::Key("tests"), Step::Index(i)]))
    );
    let method = match Method::from_bytes(
        raw.request
            .method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase()
            .as_bytes(),
    ) {
        Ok(m) => m,
        Err(_) => {
            check.error(
                &at("request"),
                format!("test `{}` has an invalid method", raw.name),
                "write a method like GET or POST",
            );
            return None;
        }
    };
    let uri_text = match &raw.request.host {
        Some(h) => format!("http://{h}{}", raw.request.path),
        None => raw.request.path.clone(),
    };
    let Ok(uri) = uri_text.parse::<Uri>() else {
        check.error(
            &at("request"),
            format!("test `{}` has an invalid path", raw.name),
            "write a path like `/orgs/acme/builds?x=1`",
        );
        return None;
    };
    let mut headers = http::HeaderMap::new();
    for (k, v) in &raw.request.headers {
        match (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                headers.append(k, v);
            }
            _ => {
                check.error(
                    &at("request"),
                    format!("test `{}` has an invalid header `{k}`", raw.name),
                    "header names are tokens, values printable text",
                );
                return None;
            }
        }
    }
    let allow = match raw.expect.decision.as_str() {
        "allow" => true,
        "deny" => false,
        other => {
            check.error(
                &at("expect"),
                format!("`{other}` is not a decision"),
                "write `allow` or `deny`",
            );
            return None;
        }
    };
    let claims = raw
        .claims
        .clone()
        .map(|c| crate::described::with_default_claims(c, issuer.map(|i| i.as_ref())));
    let grants = match (raw.member, &raw.grants) {
        (Some(false), _) => Some(None),
        (_, Some(g)) => Some(Some(g.clone())),
        _ => None,
    };
    Some(crate::described::PolicyTest {
        name: raw.name.clone(),
        location,
        request: crate::described::Described {
            method,
            uri,
            headers,
            claims,
            grants,
        },
        allow,
        code: raw.expect.code.clone(),
        scope: raw.expect.scope.clone(),
    })
}
