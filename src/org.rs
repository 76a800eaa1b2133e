//! Organization (tenant) resolution: where a route finds the organization a request acts in.
//! The value is checked to be a plain identifier, so it can key caches and backend calls safely.

use crate::policy::OrgSource;
use crate::principal::Principal;

#[cfg(test)]
mod tests;

/// Why no organization could be resolved (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    /// The source holds nothing.
    #[error("the request names no organization ({0})")]
    Missing(String),
    /// The value is not a plain identifier.
    #[error("the organization is not a valid identifier ({0})")]
    Invalid(String),
}

/// The most an organization identifier may weigh.
const MAX_ORG_BYTES: usize = 128;

impl OrgSource {
    fn describe(&self) -> String {
        match self {
            OrgSource::Path(p) => format!("path parameter `{p}`"),
            OrgSource::Header(h) => format!("header `{h}`"),
            OrgSource::Query(q) => format!("query parameter `{q}`"),
            OrgSource::Host => "host".to_string(),
            OrgSource::Claim(c) => format!("token claim `{c}`"),
        }
    }

    /// The organization of a request.
    pub fn resolve(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
        host: Option<&str>,
        params: &[(&str, &str)],
        principal: Option<&Principal>,
    ) -> Result<String, OrgError> {
        let value: Option<String> = match self {
            OrgSource::Path(name) => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| (*v).to_string()),
            OrgSource::Header(name) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(v), None) => v.to_str().ok().map(str::to_string),
                    (Some(_), Some(_)) => {
                        return Err(OrgError::Invalid(format!(
                            "{} appears more than once",
                            self.describe()
                        )));
                    }
                    _ => None,
                }
            }
            OrgSource::Query(name) => query_value(query, name)
                .map_err(|why| OrgError::Invalid(format!("{} {why}", self.describe())))?,
            OrgSource::Host => host
                .filter(|h| h.parse::<std::net::IpAddr>().is_err())
                .and_then(|h| h.split_once('.'))
                .map(|(first, _)| first.to_string()),
            OrgSource::Claim(name) => principal
                .and_then(|p| p.claims.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string),
        };
        match value {
            None => Err(OrgError::Missing(self.describe())),
            Some(v) if v.is_empty() => Err(OrgError::Missing(self.describe())),
            Some(v)
                if v.len() > MAX_ORG_BYTES
                    || !v.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':')
                    }) =>
            {
                Err(OrgError::Invalid(self.describe()))
            }
            Some(v) => Ok(v),
        }
    }
}

/// The one value of query parameter `name`, decoded as `application/x-www-form-urlencoded`
/// (what upstream frameworks do). Refused, because some framework would read another value:
/// the name twice (after decoding: `org=a&%6Frg=b`), a case variant (`ORG=`), an array or
/// object form (`org[]=`, `org[x]=`, `org.x=`), or a `;` anywhere (a separator to some servers).
fn query_value(query: Option<&str>, name: &str) -> Result<Option<String>, &'static str> {
    let Some(query) = query else { return Ok(None) };
    if query.contains(';') {
        return Err("cannot be read from a query that contains `;`");
    }
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let Some(prefix) = key.get(..name.len()) else {
            continue;
        };
        if !prefix.eq_ignore_ascii_case(name) {
            continue;
        }
        let rest = &key[name.len()..];
        let variant = rest
            .bytes()
            .next()
            .is_some_and(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        if (rest.is_empty() && prefix != name) || variant {
            return Err("has a variant spelling in the query");
        }
        if !rest.is_empty() {
            continue;
        }
        if found.is_some() {
            return Err("appears more than once");
        }
        found = Some(value.into_owned());
    }
    Ok(found)
}
