//! Paths an upstream folds onto another route: for upstreams whose router ignores case or a
//! trailing `/`, the route scopegate matched must be the one the upstream will act on.

use std::sync::Arc;

use http::Method;

use super::Gateway;
use crate::policy::Route;

impl Gateway {
    /// Whether `path`, as the route's upstream folds it (lower-case, no trailing `/`), matches
    /// another route than `route`: the upstream would then act on that route. A path already
    /// in folded form is routed alike by both and never refused.
    pub(super) fn folds_to_another_route(
        &self,
        route: &Arc<Route>,
        method: &Method,
        host: Option<&str>,
        path: &str,
    ) -> bool {
        let upstream = &route.upstream;
        if !upstream.folds_case && !upstream.folds_trailing_slash {
            return false;
        }
        let mut folded = path.to_string();
        if upstream.folds_case {
            folded.make_ascii_lowercase();
        }
        if upstream.folds_trailing_slash && folded.len() > 1 && folded.ends_with('/') {
            folded.pop();
        }
        folded != path
            && self
                .routes
                .find(method, host, &folded)
                .is_some_and(|m| !Arc::ptr_eq(m.route, route))
    }
}
