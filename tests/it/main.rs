//! End-to-end tests: real servers on loopback, real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]
#![allow(
    unreachable_pub,
    missing_debug_implementations,
    reason = "a test binary has no public API"
)]

mod util;

mod admin;
mod auth;
mod check;
mod cors;
mod dashboard;
mod deploy;
mod dev;
mod exchange;
mod explain;
mod ext_authz;
mod forward;
mod forward_auth;
mod grpc;
mod layers;
mod operate;
mod paths;
mod permissions;
mod postgres;
mod private_ca;
mod props;
mod scenarios;
mod schema;
mod shared_state;
mod tls;
mod trust;
mod websocket;
