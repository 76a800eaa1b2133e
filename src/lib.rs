//! scopegate: an HTTP reverse-proxy authorization gateway. It verifies the caller's JWT, enforces
//! per-route scope rules from YAML policy files, and forwards allowed requests upstream.
//!
//! The request flows one way through small modules: [`normalize`] → [`route`] → [`verify`] →
//! [`org`] → [`permissions`] → [`decide`] → [`mint`] → [`proxy`], composed only by [`gateway`].

pub mod admin;
pub mod audit;
pub mod cli;
pub mod condition;
pub mod config;
pub mod decide;
pub mod described;
pub mod dev;
pub mod dev_issuer;
pub mod echo;
pub mod exchange;
pub mod explain;
pub mod fetch;
pub mod forward_auth;
pub mod gateway;
pub mod host;
pub mod inbound;
pub mod jwks;
pub mod keys;
pub mod metrics;
pub mod mint;
pub mod normalize;
pub mod org;
pub mod permissions;
pub mod policy;
pub mod principal;
pub mod proxy;
pub mod reject;
pub mod reload;
pub mod route;
pub mod serve;
pub mod signing;
pub mod state;
pub mod supervise;
pub mod token;
pub mod verify;
