//! The `file` backend: organizations, their members and what each member is granted, in YAML
//! files (merged). Re-read when a file's modification time changes; a broken file keeps the
//! last good data.
//!
//! ```yaml
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
    #[serde(default)]
    organizations: BTreeMap<String, Organization>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Organization {
    #[serde(default)]
    members: BTreeMap<String, Grants>,
}

type Orgs = BTreeMap<String, Organization>;

/// Reads and merges `files`; an organization defined in two files is an error.
fn read(files: &[PathBuf]) -> Result<Orgs, String> {
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
        for (name, org) in data.organizations {
            if merged.contains_key(&name) {
                return Err(format!(
                    "{}: organization `{name}` is also defined in an earlier file",
                    file.display()
                ));
            }
            merged.insert(name, org);
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
pub struct FileBackend {
    files: Vec<PathBuf>,
    data: ArcSwap<Orgs>,
    seen: Mutex<Vec<Option<SystemTime>>>,
}

impl FileBackend {
    /// Loads `files`; an error names the file and line.
    pub fn load(files: Vec<PathBuf>) -> Result<Self, String> {
        let seen = modified(&files);
        let data = read(&files)?;
        Ok(Self {
            files,
            data: ArcSwap::from_pointee(data),
            seen: Mutex::new(seen),
        })
    }
}

impl Backend for FileBackend {
    fn lookup<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Answer, BackendError>> {
        let data = self.data.load();
        let membership = match data
            .get(&query.organization)
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
        let data = read(&self.files)?;
        self.data.store(Arc::new(data));
        Ok(true)
    }
}
