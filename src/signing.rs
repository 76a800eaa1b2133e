//! scopegate's own issuer: its identity and signing keys, the one path that signs the tokens it
//! issues (minted and exchanged alike), and the documents that publish its keys (JWKS, OIDC
//! discovery).

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::keys::SigningKey;

/// Why a token could not be signed (a server-side fault: 500, never an open door).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No signing key is configured.
    #[error("no signing key is configured")]
    NoKey,
    /// The system random generator failed to make a `jti`.
    #[error("the random generator failed")]
    Random,
    /// The crypto library refused to sign.
    #[error("signing failed")]
    Key(#[source] jsonwebtoken::errors::Error),
}

/// scopegate's issuer identity and keys.
#[derive(Debug)]
pub(crate) struct Signing {
    /// `iss` of minted tokens, without a trailing `/`.
    pub issuer: String,
    /// The first key signs; all are published.
    pub keys: Vec<SigningKey>,
}

impl Signing {
    /// The path part of the issuer URL, where the issuer documents are served under.
    fn base_path(&self) -> &str {
        let after_scheme = self
            .issuer
            .split_once("://")
            .map_or(self.issuer.as_str(), |(_, r)| r);
        after_scheme.find('/').map_or("", |i| &after_scheme[i..])
    }

    pub(crate) fn jwks_path(&self) -> String {
        format!("{}/.well-known/jwks.json", self.base_path())
    }

    pub(crate) fn token_path(&self) -> String {
        format!("{}/oauth2/token", self.base_path())
    }

    pub(crate) fn revoke_path(&self) -> String {
        format!("{}/oauth2/revoke", self.base_path())
    }

    pub(crate) fn discovery_path(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base_path())
    }

    /// Signs `claims` with the active key as an `at+jwt`, after adding `iss`, `iat`, `exp`
    /// (`now` + `lifetime`) and a fresh `jti`: the one signing path of minted and exchanged
    /// tokens. Returns the compact token and its `jti`.
    pub(crate) fn sign(
        &self,
        mut claims: Map<String, Value>,
        now: u64,
        lifetime: Duration,
    ) -> Result<(String, String), SignError> {
        let key = self.keys.first().ok_or(SignError::NoKey)?;
        let jti = crate::token::random_id().ok_or(SignError::Random)?;
        claims.insert("iss".into(), Value::String(self.issuer.clone()));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + lifetime.as_secs()));
        claims.insert("jti".into(), Value::String(jti.clone()));
        let token = key.sign("at+jwt", &claims).map_err(SignError::Key)?;
        Ok((token, jti))
    }

    /// The JWKS document with every configured key.
    pub(crate) fn jwks(&self) -> Value {
        crate::keys::jwks(&self.keys)
    }

    /// The OIDC discovery document: what standard JWT authorizers read to trust scopegate.
    pub(crate) fn discovery(&self, token_endpoint: bool, revocation_endpoint: bool) -> Value {
        let mut algs: Vec<&str> = self
            .keys
            .iter()
            .map(|k| crate::keys::alg_name(k.alg))
            .collect();
        algs.dedup();
        let mut doc = json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "jti", "scope", "client_id", "org_id", "token_use", "act"],
        });
        if token_endpoint {
            doc["token_endpoint"] = Value::String(format!("{}/oauth2/token", self.issuer));
            doc["grant_types_supported"] = json!([crate::token::GRANT_TYPE]);
        }
        if revocation_endpoint {
            doc["revocation_endpoint"] = Value::String(format!("{}/oauth2/revoke", self.issuer));
            doc["revocation_endpoint_auth_methods_supported"] =
                json!(["client_secret_basic", "client_secret_post"]);
        }
        doc
    }
}
