//! How every request ends in the proxy and forward-auth modes: a refusal rendered as its answer
//! (a gRPC one to a gRPC request), and the count and audit event of what was answered.

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::Gateway;
use crate::audit::Audit;
use crate::reject::Rejection;

impl Gateway {
    /// The answer to a refused request: a gRPC one to a gRPC request (of its content type).
    pub(super) fn reject(
        &self,
        rejection: Rejection,
        started: Instant,
        grpc: Option<HeaderValue>,
    ) -> Response<Bytes> {
        // A failure after the allow (upstream) had its gateway time recorded as an allow.
        if !rejection.after_allow() {
            self.metrics
                .gateway_duration
                .with_label_values(&["deny"])
                .observe(started.elapsed().as_secs_f64());
        }
        match grpc {
            Some(content_type) => rejection.to_grpc_response(content_type),
            None => rejection.to_response(),
        }
    }

    /// Counts the request and writes its audit event.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per mode; a struct would only rename them"
    )]
    pub(super) fn finish(
        &self,
        audit: &Audit<'_>,
        mode: &'static str,
        method: &str,
        (allowed, reason): (bool, &'static str),
        traceparent: Option<&str>,
        started: Instant,
        status: StatusCode,
    ) {
        // The gateway's decision, not the upstream's answer: an allowed request whose upstream
        // said 404 or failed was still allowed.
        let decision = if allowed { "allow" } else { "deny" };
        self.metrics
            .requests
            .with_label_values(&[audit.route_name(), decision, status.as_str()])
            .inc();
        audit.emit(&crate::audit::Outcome {
            mode,
            method,
            status: status.as_u16(),
            decision,
            reason,
            latency: started.elapsed(),
            traceparent,
        });
    }
}
