//! scopegate: an HTTP reverse-proxy authorization gateway. It verifies the caller's JWT, enforces
//! per-route scope rules from YAML policy files, and forwards allowed requests upstream.
//!
//! The request flows one way through small modules: [`normalize`] → [`route`] → [`verify`] →
//! [`org`] → [`permissions`] → [`decide`] → [`mint`] → [`proxy`], composed only by [`gateway`].

pub(crate) mod admin;
pub(crate) mod audit;
pub mod cli;
pub(crate) mod condition;
pub mod config;
pub(crate) mod cores;
pub(crate) mod cors;
pub(crate) mod decide;
pub(crate) mod described;
pub(crate) mod dev;
pub mod dev_issuer;
pub mod echo;
pub(crate) mod exchange;
pub(crate) mod explain;
pub(crate) mod fetch;
pub mod forward_auth;
pub(crate) mod gateway;
pub(crate) mod grpc;
pub mod host;
pub mod inbound;
pub(crate) mod jwks;
pub mod keys;
pub(crate) mod metrics;
pub(crate) mod mint;
pub mod normalize;
pub(crate) mod org;
pub(crate) mod permissions;
pub mod policy;
pub(crate) mod principal;
pub(crate) mod proxy;
pub(crate) mod reject;
pub(crate) mod reload;
pub(crate) mod route;
pub mod serve;
pub(crate) mod signing;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod supervise;
pub mod token;
pub mod verify;
pub mod websocket;
