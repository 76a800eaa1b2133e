//! Which route a request is for, decided once for every use: the checks a request passes before
//! it is judged, its normalized path, and the route matched for it. The pipeline and CORS
//! preflights both call these, so a preflight is answered for exactly the route the real
//! request will be decided on.

use http::Method;

use super::{Gateway, Target};
use crate::reject::Rejection;
use crate::route::Matched;

impl Gateway {
    /// The request checks (header count, method, query) and the normalized path: the method
    /// the request is routed by (HEAD as GET) and the path that is authorized and forwarded.
    pub(super) fn checked(&self, target: &Target<'_>) -> Result<(Method, String), Rejection> {
        self.requests.check_headers(target.headers)?;
        // HEAD is judged as GET; the upstream still gets the HEAD.
        let method = self.requests.routing_method(target.method)?;
        crate::inbound::check_query(target.uri.query())?;
        let path = crate::normalize::normalize(target.uri.path())?;
        Ok((method, path))
    }

    /// The route for a checked request: matched on method, host and path, and refused when the
    /// path has `;` parameters the route does not accept, or when its upstream would fold it
    /// onto another route.
    pub(super) fn matched<'a, 'p>(
        &'a self,
        method: &Method,
        host: Option<&str>,
        path: &'p str,
    ) -> Result<Matched<'a, 'p>, Rejection> {
        let matched = self
            .routes
            .find(method, host, path)
            .ok_or(Rejection::NoRoute)?;
        if !matched.route.matrix_params && path.contains(';') {
            return Err(crate::normalize::PathError::MatrixParameter.into());
        }
        if self.folds_to_another_route(matched.route, method, host, path) {
            return Err(crate::normalize::PathError::FoldsToAnotherRoute.into());
        }
        Ok(matched)
    }
}
