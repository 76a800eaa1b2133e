//! Private signing keys: generated (development issuer, `keygen`) or read from PKCS#8 PEM, each
//! with its public JWK. The private half never leaves this module except as a jsonwebtoken
//! `EncodingKey` or as PEM written by `keygen`; `Debug` prints only the `kid` and algorithm.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The algorithm is not one scopegate signs with.
    #[error("algorithm `{0}` cannot sign; use ES256, EdDSA or RS256")]
    Unsupported(String),
    /// The PEM is not a PKCS#8 private key of the algorithm's type.
    #[error("not a PKCS#8 {0} private key")]
    BadKey(&'static str),
    /// Key generation failed in the crypto library.
    #[error("key generation failed")]
    Generate,
}

/// A private key with its `kid`, algorithm and public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// PKCS#8 DER of the private key, kept only to write it out with `keygen`.
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The algorithms scopegate can sign with, by JOSE name.
pub fn signing_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    match name {
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "RS256" => Ok(Algorithm::RS256),
        other => Err(KeyError::Unsupported(other.to_string())),
    }
}

impl SigningKey {
    /// A fresh key.
    pub fn generate(kid: impl Into<String>, alg: Algorithm) -> Result<Self, KeyError> {
        let pkcs8 = match alg {
            Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
            Algorithm::EdDSA => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8())
                .map(|d| d.as_ref().to_vec()),
            Algorithm::RS256 | Algorithm::PS256 => {
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .and_then(|k| k.as_der())
                    .map(|d| d.as_ref().to_vec())
            }
            other => return Err(KeyError::Unsupported(format!("{other:?}"))),
        }
        .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(kid, alg, pkcs8)
    }

    /// A key from PKCS#8 PEM text.
    pub fn from_pem(kid: impl Into<String>, alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        use rustls::pki_types::pem::PemObject;
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| KeyError::BadKey(kind(alg)))?;
        Self::from_pkcs8(kid, alg, der.secret_pkcs8_der().to_vec())
    }

    fn from_pkcs8(
        kid: impl Into<String>,
        alg: Algorithm,
        pkcs8: Vec<u8>,
    ) -> Result<Self, KeyError> {
        let kid = kid.into();
        let bad = || KeyError::BadKey(kind(alg));
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let (encoding, jwk) = match alg {
            Algorithm::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .map_err(|_| bad())?;
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])});
                (EncodingKey::from_ec_der(&pkcs8), jwk)
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| bad())?;
                (
                    EncodingKey::from_ed_der(&pkcs8),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
                )
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8).map_err(|_| bad())?;
                let public =
                    aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", &pkcs8).as_bytes())
                    .map_err(|_| bad())?;
                (
                    encoding,
                    json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)}),
                )
            }
            other => return Err(KeyError::Unsupported(format!("{other:?}"))),
        };
        let mut jwk = jwk;
        jwk["kid"] = Value::String(kid.clone());
        jwk["alg"] = Value::String(alg_name(alg).to_string());
        jwk["use"] = Value::String("sig".into());
        Ok(Self {
            kid,
            alg,
            encoding,
            pkcs8,
            jwk,
        })
    }

    /// Signs `claims` as a compact JWS with this key's `kid` and the given `typ`.
    pub fn sign(
        &self,
        typ: &str,
        claims: &impl serde::Serialize,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// The public JWK (with `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// The private key as PKCS#8 PEM, for `keygen` to write to a file.
    pub fn private_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }
}

/// The JOSE name of an algorithm.
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

fn kind(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "P-256 EC",
        Algorithm::EdDSA => "Ed25519",
        _ => "RSA",
    }
}

/// Wraps DER in PEM armor (RFC 7468).
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A JWKS document publishing `keys`.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Value {
    json!({ "keys": keys.into_iter().map(|k| k.public_jwk().clone()).collect::<Vec<_>>() })
}
