//! The route table: method + path template + optional host to a route. Static segments win over
//! parameters (matchit's rule); two templates that could match the same path with the same
//! method and host are a configuration error, never a silent first-match.
//!
//! Lookup order: host-specific routes before host-less ones, and within a host, routes for the
//! request's method before any-method routes.

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::policy::Route;

/// A route that matched, with the path parameters it captured (name, raw value).
#[derive(Debug)]
pub struct Matched<'r, 'p> {
    pub route: &'r Arc<Route>,
    pub params: Vec<(&'r str, &'p str)>,
}

/// Two routes that would both match some request.
#[derive(Debug)]
pub struct Conflict {
    /// Index of the route that could not be added.
    pub route: usize,
    /// Index of the route it conflicts with.
    pub other: usize,
    pub message: String,
}

/// All routes, indexed for lookup.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    by_host: HashMap<String, Methods>,
    any_host: Methods,
}

#[derive(Default)]
struct Methods {
    by_method: HashMap<Method, Paths>,
    any_method: Paths,
}

impl std::fmt::Debug for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Methods")
            .field("methods", &self.by_method.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A matchit router of route indices, plus the template each index was inserted with.
#[derive(Default)]
struct Paths {
    router: matchit::Router<usize>,
    templates: HashMap<String, usize>,
}

impl Paths {
    fn insert(
        &mut self,
        template: &str,
        index: usize,
        routes: &[Arc<Route>],
    ) -> Result<(), Conflict> {
        if let Some(&other) = self.templates.get(template) {
            return Err(conflict(
                index,
                other,
                routes,
                "has the same method, host and path as",
            ));
        }
        match self.router.insert(template, index) {
            Ok(()) => {
                self.templates.insert(template.to_string(), index);
                Ok(())
            }
            Err(matchit::InsertError::Conflict { with }) => {
                let other = self.templates.get(&with).copied().unwrap_or(index);
                Err(conflict(index, other, routes, "is ambiguous with"))
            }
            Err(e) => Err(Conflict {
                route: index,
                other: index,
                message: format!(
                    "route `{}` path `{template}` is not a valid template: {e}",
                    routes[index].name
                ),
            }),
        }
    }
}

fn conflict(index: usize, other: usize, routes: &[Arc<Route>], what: &str) -> Conflict {
    let (a, b) = (&routes[index], &routes[other]);
    Conflict {
        route: index,
        other,
        message: format!(
            "route `{}` (`{}`) {what} route `{}` (`{}`)",
            a.name, a.path, b.name, b.path
        ),
    }
}

impl RouteTable {
    /// Indexes `routes`; every conflicting pair is reported.
    pub fn build(routes: Vec<Arc<Route>>) -> Result<Self, Vec<Conflict>> {
        let mut table = RouteTable::default();
        let mut conflicts = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let methods = match &route.host {
                Some(h) => table.by_host.entry(h.clone()).or_default(),
                None => &mut table.any_host,
            };
            let result = match &route.methods {
                None => methods.any_method.insert(&route.path, index, &routes),
                Some(ms) => ms.iter().try_for_each(|m| {
                    methods.by_method.entry(m.clone()).or_default().insert(
                        &route.path,
                        index,
                        &routes,
                    )
                }),
            };
            if let Err(c) = result {
                conflicts.push(c);
            }
        }
        table.routes = routes;
        if conflicts.is_empty() {
            Ok(table)
        } else {
            Err(conflicts)
        }
    }

    /// The route for a request, if any. `host` is the request's host, lower-cased, no port.
    pub fn find<'r, 'p>(
        &'r self,
        method: &Method,
        host: Option<&str>,
        path: &'p str,
    ) -> Option<Matched<'r, 'p>> {
        let host_methods = host.and_then(|h| self.by_host.get(h));
        host_methods
            .into_iter()
            .chain([&self.any_host])
            .find_map(|methods| {
                let specific = methods
                    .by_method
                    .get(method)
                    .and_then(|p| p.router.at(path).ok());
                let found = specific.or_else(|| methods.any_method.router.at(path).ok())?;
                Some(Matched {
                    route: &self.routes[*found.value],
                    params: found.params.iter().collect(),
                })
            })
    }

    /// Routes whose path template matches `path` but which did not match the request, and why
    /// (for `explain`'s "why 404").
    pub fn near_misses(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
    ) -> Vec<(String, String)> {
        self.routes
            .iter()
            .filter_map(|r| {
                let mut router = matchit::Router::new();
                router.insert(r.path.as_str(), ()).ok()?;
                router.at(path).ok()?;
                let reason = match (&r.methods, &r.host) {
                    (Some(ms), _) if !ms.contains(method) => {
                        format!(
                            "method {method} is not {}",
                            ms.iter().map(Method::as_str).collect::<Vec<_>>().join("/")
                        )
                    }
                    (_, Some(h)) if host != Some(h.as_str()) => format!("host is not `{h}`"),
                    _ => "a more specific route took the request".to_string(),
                };
                Some((r.name.clone(), reason))
            })
            .collect()
    }

    /// Every route, in load order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}
