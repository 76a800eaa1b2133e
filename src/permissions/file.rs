//! The `file` backend: organizations, their members and what each member is granted, in YAML
//! files (merged). Re-read when a file's modification time changes; a broken file keeps the
//! last good data.
//!
//! Members are users of one issuer: identity is (issuer, subject), never a bare `sub`, so a
//! partner IdP's `alice` is not corp's `alice`. A file names its issuer (by its key under
//! `issuers:` or its URL); a file without `issuer:` is valid only when exactly one issuer is
//! configured.
//!
//! ```yaml
//! issuer: corp
//! organizations:
//!   acme:
//!     members:
//!       alice: { roles: [admin] }
//!       bob: { roles: [viewer], scopes: [export:reports], claims: { allowed_countries: [nl, de] } }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Deserialize;

use super::{Answer, Backend, BackendError, BoxFuture, Grants, Membership, Query};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Data {
    /// The issuer whose users the members are: its name under `issuers:` or its URL. Required
    /// when more than one issuer is configured.
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    organizations: BTreeMap<String, Organization>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Organization {
    #[serde(default)]
    members: BTreeMap<String, Grants>,
}

/// (issuer URL, organization) to its members.
type Orgs = BTreeMap<(String, String), Organization>;

/// The configured issuers: (name under `issuers:`, issuer URL).
pub(crate) type KnownIssuers = Vec<(String, String)>;

/// The issuer URL a data file's `issuer:` names.
fn issuer_of(
    file: &std::path::Path,
    named: Option<&str>,
    known: &KnownIssuers,
) -> Result<String, String> {
    match (named, known.as_slice()) {
        (None, [(_, only)]) => Ok(only.clone()),
        (None, _) => Err(format!(
            "{}: `issuer:` is required when several issuers are configured (the same `sub` from two issuers is two people)",
            file.display()
        )),
        (Some(n), _) => known
            .iter()
            .find(|(name, url)| name == n || url == n)
            .map(|(_, url)| url.clone())
            .ok_or_else(|| format!("{}: issuer `{n}` is not configured", file.display())),
    }
}

/// Reads and merges `files`; an organization defined twice for one issuer is an error.
fn read(files: &[PathBuf], known: &KnownIssuers) -> Result<Orgs, String> {
    let mut merged = Orgs::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read file: {e}", file.display()))?;
        let data: Data = serde_yaml::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            let mut msg = e.to_string();
            if let Some(cut) = msg.find(" at line ") {
                msg.truncate(cut);
            }
            format!("{}{at}: {msg}", file.display())
        })?;
        let issuer = issuer_of(file, data.issuer.as_deref(), known)?;
        for (name, org) in data.organizations {
            let key = (issuer.clone(), name);
            if merged.contains_key(&key) {
                return Err(format!(
                    "{}: organization `{}` is also defined in an earlier file",
                    file.display(),
                    key.1
                ));
            }
            merged.insert(key, org);
        }
    }
    Ok(merged)
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Permissions from YAML files.
#[derive(Debug)]
pub(crate) struct FileBackend {
    files: Vec<PathBuf>,
    known: KnownIssuers,
    data: ArcSwap<Orgs>,
    seen: Mutex<Vec<Option<SystemTime>>>,
}

impl FileBackend {
    /// Loads `files`; an error names the file and line.
    pub(crate) fn load(files: Vec<PathBuf>, known: KnownIssuers) -> Result<Self, String> {
        let seen = modified(&files);
        let data = read(&files, &known)?;
        Ok(Self {
            files,
            known,
            data: ArcSwap::from_pointee(data),
            seen: Mutex::new(seen),
        })
    }
}

impl Backend for FileBackend {
    fn lookup<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Answer, BackendError>> {
        let data = self.data.load();
        // The key is built per lookup only on a cache miss (the permissions cache sits in front).
        let membership = match data
            .get(&(query.issuer.clone(), query.organization.clone()))
            .and_then(|o| o.members.get(&query.subject))
        {
            Some(grants) => Membership::Member(grants.clone()),
            None => Membership::NotMember,
        };
        Box::pin(std::future::ready(Ok(Answer {
            membership,
            ttl: None,
        })))
    }

    fn reload(&self) -> Result<bool, String> {
        let now = modified(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Ok(false);
        }
        *seen = now;
        let data = read(&self.files, &self.known)?;
        self.data.store(Arc::new(data));
        Ok(true)
    }
}
