//! The `cors:` blocks: the server file's (for every route) and a route's own (instead of it, or
//! `false` for none), validated into policy values.

use http::{HeaderName, Method};

use super::locate::Step;
use super::{Check, defaults, raw, upper_method};
use crate::policy::{Cors, OriginPattern, Origins};

/// A `cors:` block found at `at`; `None` (errors reported) when a value is invalid. `matched`
/// is the route's methods, for a route's own block.
pub(super) fn cors(
    check: &mut Check<'_>,
    at: &[Step<'_>],
    raw: &raw::Cors,
    matched: Option<&[Method]>,
) -> Option<Cors> {
    let key =
        |k: &'static str| -> Vec<Step<'_>> { at.iter().copied().chain([Step::Key(k)]).collect() };
    let item = |k: &'static str, i: usize| -> Vec<Step<'_>> {
        at.iter()
            .copied()
            .chain([Step::Key(k), Step::Index(i)])
            .collect()
    };
    let errors = check.errors.len();
    let origins = if let Some(star) = raw.allow_origins.iter().position(|o| o == "*") {
        if raw.allow_origins.len() > 1 {
            check.error(
                &item("allow_origins", star),
                "`*` is listed with other origins",
                "`*` already allows every origin: remove the others, or list origins without `*`",
            );
        }
        if raw.allow_credentials {
            check.error(
                &key("allow_credentials"),
                "`allow_credentials: true` with the `*` origin",
                "browsers refuse credentials for any origin (`*`): list the origins that may send them",
            );
        }
        Origins::Any
    } else {
        if raw.allow_origins.is_empty() {
            check.error(
                &key("allow_origins"),
                "`allow_origins` is empty",
                "list the origins whose pages may call, like `https://app.example.com`, or remove `cors`",
            );
        }
        let mut patterns = Vec::new();
        for (i, o) in raw.allow_origins.iter().enumerate() {
            match OriginPattern::parse(o) {
                Ok(p) => patterns.push(p),
                Err(e) => check.error(
                    &item("allow_origins", i),
                    format!("`{o}` is not an origin: {e}"),
                    "write an origin as browsers send it: `https://app.example.com`, `http://localhost:3000`, or `https://*.example.com` for any one label",
                ),
            }
        }
        Origins::List(patterns)
    };
    let methods = raw.allow_methods.as_ref().map(|ms| {
        let mut methods = Vec::new();
        for (i, m) in ms.iter().enumerate() {
            match upper_method(m) {
                Some(Method::HEAD) => check.error(
                    &item("allow_methods", i),
                    "`allow_methods` lists HEAD",
                    "HEAD is allowed wherever GET is: list GET",
                ),
                Some(method) if matched.is_some_and(|ms| !ms.contains(&method)) => check.error(
                    &item("allow_methods", i),
                    format!("the route does not match `{m}`"),
                    "a route's preflights are for the methods in its `match.method`",
                ),
                Some(method) => methods.push(method),
                None => check.error(
                    &item("allow_methods", i),
                    format!("`{m}` is not an upper-case method token"),
                    "write methods as browsers send them, like `GET`, `POST` or `PATCH`",
                ),
            }
        }
        methods
    });
    let header_list = |check: &mut Check<'_>, k: &'static str, names: &[String]| {
        let mut list = Vec::new();
        for (i, name) in names.iter().enumerate() {
            // `*` is a token, but no wildcard here: it would read as one.
            let parsed = HeaderName::from_bytes(name.as_bytes()).ok();
            match parsed.filter(|_| name != "*") {
                Some(h) if !list.contains(&h) => list.push(h),
                Some(_) => {}
                None => check.error(
                    &item(k, i),
                    format!("`{name}` is not a header name"),
                    "list header names like `Authorization` or `X-Request-Id`; `*` is not supported (it never covers Authorization)",
                ),
            }
        }
        list
    };
    let given: Vec<String>;
    let allow = match &raw.allow_headers {
        Some(h) => h.as_slice(),
        None => {
            given = defaults::CORS_ALLOW_HEADERS.map(String::from).to_vec();
            &given
        }
    };
    let headers = header_list(check, "allow_headers", allow);
    let mut expose = defaults::CORS_EXPOSE_HEADERS
        .map(HeaderName::from_static)
        .to_vec();
    for h in header_list(check, "expose_headers", &raw.expose_headers) {
        if !expose.contains(&h) {
            expose.push(h);
        }
    }
    let max_age = check.duration(
        &key("max_age"),
        raw.max_age.as_deref(),
        defaults::CORS_MAX_AGE,
    );
    if max_age > defaults::CORS_MAX_AGE_BOUND {
        check.error(
            &key("max_age"),
            "`max_age` is longer than 24h",
            "browsers cap it anyway (Chromium at 2h); 10m is the default",
        );
    }
    (check.errors.len() == errors).then_some(Cors {
        origins,
        methods,
        headers,
        expose: expose.into(),
        credentials: raw.allow_credentials,
        max_age,
    })
}
