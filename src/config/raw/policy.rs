//! A policy file (`policies/*.yaml`) as serde sees it: roles, routes, exchange rules and
//! policy tests.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// One `policies/*.yaml` file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Policy {
    /// Role name to the scopes it grants.
    #[serde(default)]
    pub(crate) roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    /// Token exchange rules.
    #[serde(default)]
    pub(crate) exchange: Vec<ExchangeRule>,
    /// Expected decisions, run by `scopegate check`.
    #[serde(default)]
    pub(crate) tests: Vec<PolicyTest>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyTest {
    pub(crate) name: String,
    pub(crate) request: TestRequest,
    /// The caller's token claims (defaults: `iss` and `aud` of the first issuer, `sub: test-user`,
    /// `exp` in an hour). Without `claims`, the request has no token.
    #[serde(default)]
    pub(crate) claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// The permissions backend's answer; without it (and without `member: false`) the configured
    /// backend is asked.
    #[serde(default)]
    pub(crate) grants: Option<crate::policy::Grants>,
    /// `false`: the backend says "not a member".
    #[serde(default)]
    pub(crate) member: Option<bool>,
    pub(crate) expect: TestExpect,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestRequest {
    #[serde(default)]
    pub(crate) method: Option<String>,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestExpect {
    /// `allow` or `deny`.
    pub(crate) decision: String,
    /// The denial's code (`insufficient_scope`, `not_member`, ...).
    #[serde(default)]
    pub(crate) code: Option<String>,
    /// The minted token's `scope`, for an allow.
    #[serde(default)]
    pub(crate) scope: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExchangeRule {
    pub(crate) name: String,
    pub(crate) client: String,
    pub(crate) audience: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) max_ttl: String,
    /// A path template the requested `resource` must match; the token is bound to that path.
    #[serde(default)]
    pub(crate) bind: Option<String>,
    /// How many times the issued token may be presented at the gateway, across every replica
    /// (needs `state.redis`).
    #[serde(default)]
    pub(crate) uses: Option<u32>,
    /// The methods the issued token is bound to (with `bind`), like `[PUT]`.
    #[serde(default)]
    pub(crate) bind_methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) name: String,
    #[serde(rename = "match")]
    pub(crate) matches: Match,
    pub(crate) upstream: String,
    #[serde(default)]
    pub(crate) public: bool,
    #[serde(default)]
    pub(crate) require: Option<Require>,
    #[serde(default)]
    pub(crate) organization: Option<Organization>,
    /// A CEL expression that must be true.
    #[serde(default)]
    pub(crate) condition: Option<String>,
    /// The largest request body this route forwards (413 beyond).
    #[serde(default)]
    pub(crate) max_body_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) forward: Option<Forward>,
    /// Accept `;` path parameters (`/cars;color=red`), refused by default because servers that
    /// strip them would route `/admin;/users` to `/admin/users`.
    #[serde(default)]
    pub(crate) matrix_params: bool,
    /// Accept WebSocket upgrades (`true`, or bounds like `{ idle_timeout: 5m, max_lifetime: 1h }`);
    /// refused (400) by default.
    #[serde(default)]
    pub(crate) websocket: Option<WebSocket>,
    /// This route's CORS policy instead of the server file's `cors:`, or `false` for none.
    #[serde(default)]
    pub(crate) cors: Option<RouteCors>,
}

/// `true`, `false`, or `{ idle_timeout, max_lifetime }`.
pub(crate) type WebSocket = OrBool<WebSocketBounds>;

/// `false` (no CORS on this route), or the route's own policy instead of the server file's.
pub(crate) type RouteCors = OrBool<Cors>;

/// A key that is `true`, `false`, or a map of settings.
// Deserialized by hand rather than as an untagged enum, so that a typo in the map is reported
// as an unknown field at its line instead of "did not match any variant".
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub(crate) enum OrBool<T> {
    Bool(bool),
    Map(T),
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebSocketBounds {
    /// No byte either way for this long closes the connection (default 5m).
    #[serde(default)]
    pub(crate) idle_timeout: Option<String>,
    /// The longest a connection stays open; it can only shorten the default, the minted
    /// token's remaining lifetime (public routes: 1h).
    #[serde(default)]
    pub(crate) max_lifetime: Option<String>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrBool<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = OrBool<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`true`, `false` or a map of settings")
            }
            fn visit_bool<E>(self, v: bool) -> Result<OrBool<T>, E> {
                Ok(OrBool::Bool(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<OrBool<T>, A::Error> {
                let de = serde::de::value::MapAccessDeserializer::new(map);
                T::deserialize(de).map(OrBool::Map)
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// A CORS policy: the server file's `cors:` (every route), or a route's own.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cors {
    /// Origins whose pages may call: exact (`https://app.example.com`, `http://localhost:3000`),
    /// one-label patterns (`https://*.example.com`), or `*` (any origin, not with credentials).
    pub(crate) allow_origins: Vec<String>,
    /// Methods a preflight may ask for (default: any method the route matches).
    #[serde(default)]
    pub(crate) allow_methods: Option<Vec<String>>,
    /// Request headers a page may send (default `[Authorization, Content-Type]`).
    #[serde(default)]
    pub(crate) allow_headers: Option<Vec<String>>,
    /// Response headers a page may read, besides `WWW-Authenticate` and `Retry-After`.
    #[serde(default)]
    pub(crate) expose_headers: Vec<String>,
    /// Allow cookies and TLS client certificates (`Access-Control-Allow-Credentials: true`).
    #[serde(default)]
    pub(crate) allow_credentials: bool,
    /// How long a browser may cache a preflight answer (default 10m, at most 24h).
    #[serde(default)]
    pub(crate) max_age: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Organization {
    pub(crate) from: OrgFrom,
    /// Path or query parameter name.
    #[serde(default)]
    pub(crate) param: Option<String>,
    /// Header name.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Token claim name.
    #[serde(default)]
    pub(crate) claim: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OrgFrom {
    Path,
    Header,
    Query,
    Host,
    Claim,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forward {
    #[serde(default)]
    pub(crate) scopes: Option<ForwardScopes>,
    #[serde(default)]
    pub(crate) ttl: Option<String>,
    #[serde(default)]
    pub(crate) claims: Vec<ForwardClaim>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum ForwardScopes {
    /// `required` or `effective`.
    Keyword(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum ForwardClaim {
    Same(String),
    Renamed(RenamedClaim),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenamedClaim {
    pub(crate) from: String,
    #[serde(rename = "as")]
    pub(crate) to: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Match {
    #[serde(default)]
    pub(crate) method: Option<OneOrMany>,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) host: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Require {
    /// All of these.
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    /// At least one of these.
    #[serde(default)]
    pub(crate) any_scopes: Vec<String>,
}
