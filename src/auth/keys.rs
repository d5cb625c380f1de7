//! The provider's signing keys on one node: a JWKS fetched through
//! discovery, from a URL or from a file, kept in memory and refreshed on a
//! timer. A token with a `kid` the node does not know triggers at most one
//! fetch per `min_refetch` (every request that waits meanwhile shares it, so
//! a flood of random `kid`s costs the provider one request); when the
//! provider cannot be reached the last keys keep working until `max_stale`
//! has passed since they were fetched, and then none do (503, not ready).

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use parking_lot::RwLock;

use base64::Engine;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::OidcSettings;

/// Largest discovery document or key set read, in bytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Shortest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
/// After a failed fetch, the next try comes this soon, doubling up to
/// [`RETRY_AT_MOST`], however usable the last keys still are: one failure
/// must not wait a whole refresh period while the keys grow stale.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_AT_MOST: Duration = Duration::from_secs(60);

/// One verification key of the provider.
#[derive(Clone)]
pub struct ProviderKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookupError {
    /// The provider's current keys do not include this `kid`.
    UnknownKid,
    /// No keys fetched within `max_stale`: the provider is unreachable.
    Unavailable,
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    Discovery { issuer: String },
    Url(String),
    File(PathBuf),
}

#[derive(Default)]
struct KeyState {
    keys: HashMap<String, ProviderKey>,
    /// When the keys above were fetched.
    fetched_at: Option<Instant>,
    /// When an unknown `kid` last caused a fetch.
    kid_fetch_at: Option<Instant>,
    /// The key set URL found by discovery, reused until a fetch fails.
    discovered_url: Option<String>,
}

pub struct KeyCache {
    source: KeySource,
    client: reqwest::Client,
    algorithms: Vec<Algorithm>,
    refresh_every: Duration,
    min_refetch: Duration,
    max_stale: Duration,
    state: RwLock<KeyState>,
    /// Held while fetching: concurrent refreshes wait and share the result.
    fetching: Mutex<()>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl KeyCache {
    pub fn new(settings: &OidcSettings) -> anyhow::Result<Self> {
        let issuer = settings
            .issuer()
            .ok_or_else(|| anyhow::anyhow!("FLASHSALE_OIDC_ISSUER is not set"))?;
        let source = match (settings.jwks_url(), settings.jwks_file()) {
            (_, Some(file)) => KeySource::File(file.to_owned()),
            (Some(url), None) => KeySource::Url(url.to_owned()),
            (None, None) => KeySource::Discovery {
                issuer: issuer.trim_end_matches('/').to_owned(),
            },
        };
        crate::tls::install_provider();
        let client = reqwest::Client::builder()
            .timeout(settings.oidc_fetch_timeout)
            .connect_timeout(settings.oidc_fetch_timeout)
            // A provider's keys are never behind a redirect to elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            source,
            client,
            algorithms: settings.algorithms()?,
            refresh_every: settings.oidc_keys_refresh,
            min_refetch: settings.oidc_keys_min_refetch,
            max_stale: settings.oidc_keys_max_stale,
            state: RwLock::default(),
            fetching: Mutex::new(()),
        })
    }

    /// The key for `kid`, fetching the key set once if the `kid` is new.
    pub async fn key(&self, kid: &str) -> Result<ProviderKey, KeyLookupError> {
        if let Some(found) = self.cached(kid)? {
            return Ok(found);
        }
        let waited_from = Instant::now();
        let _fetching = self.fetching.lock().await;
        // Someone else may have fetched while this request waited.
        if let Some(found) = self.cached(kid)? {
            return Ok(found);
        }
        let due = {
            let state = self.read();
            // A fetch that started while this request waited is shared too,
            // even when it took longer than `min_refetch`.
            let recent = state
                .kid_fetch_at
                .is_some_and(|at| at.elapsed() < self.min_refetch || at >= waited_from);
            !recent
        };
        if due {
            self.write().kid_fetch_at = Some(Instant::now());
            self.fetch_locked().await;
        }
        self.cached(kid)?.ok_or(KeyLookupError::UnknownKid)
    }

    /// Whether tokens can be verified now (keys fetched within `max_stale`).
    pub fn has_usable_keys(&self) -> bool {
        self.usable(&self.read())
    }

    /// Fetches the keys now and then every `refresh_every` (after a failure
    /// sooner, with backoff) until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut retry = RETRY_FIRST;
        loop {
            let fetched = {
                let _fetching = self.fetching.lock().await;
                self.fetch_locked().await
            };
            let wait = if fetched {
                retry = RETRY_FIRST;
                self.refresh_every
            } else {
                let wait = retry.min(self.refresh_every);
                retry = (retry * 2).min(RETRY_AT_MOST);
                wait
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn cached(&self, kid: &str) -> Result<Option<ProviderKey>, KeyLookupError> {
        let state = self.read();
        if !self.usable(&state) {
            return match state.fetched_at {
                // Never fetched, or the provider has been away too long.
                None if state.kid_fetch_at.is_none() => Ok(None),
                _ => Err(KeyLookupError::Unavailable),
            };
        }
        Ok(state.keys.get(kid).cloned())
    }

    fn usable(&self, state: &KeyState) -> bool {
        state
            .fetched_at
            .is_some_and(|at| at.elapsed() <= self.max_stale)
    }

    /// Fetches and installs the key set; the caller holds `fetching`.
    /// Returns whether it succeeded; on failure the old keys stay.
    async fn fetch_locked(&self) -> bool {
        match self.fetch_key_set().await {
            Ok(keys) => {
                metrics::counter!("flashsale_oidc_key_fetches_total", "outcome" => "ok")
                    .increment(1);
                tracing::info!(keys = keys.len(), "provider keys fetched");
                let mut state = self.write();
                state.keys = keys;
                state.fetched_at = Some(Instant::now());
                true
            }
            Err(error) => {
                metrics::counter!("flashsale_oidc_key_fetches_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(%error, "could not fetch the provider's keys; keeping the last ones");
                self.write().discovered_url = None;
                false
            }
        }
    }

    /// The provider's usable keys; a set with none is a failure (an empty
    /// or unusable set must not replace keys that verify today's tokens).
    async fn fetch_key_set(&self) -> anyhow::Result<HashMap<String, ProviderKey>> {
        let document = match &self.source {
            KeySource::File(path) => tokio::fs::read(path).await?,
            KeySource::Url(url) => self.get(url).await?,
            KeySource::Discovery { issuer } => {
                let known = self.read().discovered_url.clone();
                let url = match known {
                    Some(url) => url,
                    None => {
                        let url = self.discover(issuer).await?;
                        self.write().discovered_url = Some(url.clone());
                        url
                    }
                };
                self.get(&url).await?
            }
        };
        let set: JwkSet = serde_json::from_slice(&document)?;
        let keys = usable_keys(&set, &self.algorithms);
        if keys.is_empty() {
            anyhow::bail!(
                "the provider's key set holds no usable key ({} published; see the skipped-key lines)",
                set.keys.len()
            );
        }
        Ok(keys)
    }

    async fn discover(&self, issuer: &str) -> anyhow::Result<String> {
        let url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Discovery = serde_json::from_slice(&self.get(&url).await?)?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            anyhow::bail!(
                "the discovery document names issuer {:?}, not {issuer:?}",
                discovery.issuer
            );
        }
        let https = discovery.jwks_uri.starts_with("https://");
        let same_host_http = discovery.jwks_uri.starts_with("http://")
            && issuer.starts_with("http://")
            && host_of(&discovery.jwks_uri) == host_of(issuer);
        if !(https || same_host_http) {
            anyhow::bail!(
                "the discovery document's jwks_uri {:?} is not https",
                discovery.jwks_uri
            );
        }
        Ok(discovery.jwks_uri)
    }

    async fn get(&self, url: &str) -> anyhow::Result<Vec<u8>> {
        let mut response = self.client.get(url).send().await?.error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                anyhow::bail!("{url} sent more than {MAX_DOCUMENT_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, KeyState> {
        self.state.read()
    }

    fn write(&self) -> parking_lot::RwLockWriteGuard<'_, KeyState> {
        self.state.write()
    }
}

fn host_of(url: &str) -> Option<&str> {
    url.split("://").nth(1)?.split('/').next()
}

/// The set's signing keys this node may use, by `kid`: each needs a `kid`,
/// an allowed algorithm that fits its key type (its own `alg`, or the one
/// its type implies), and sane key material. Others are skipped with a log
/// line, never trusted.
pub fn usable_keys(set: &JwkSet, allowed: &[Algorithm]) -> HashMap<String, ProviderKey> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::warn!("provider key without a kid skipped");
            continue;
        };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        match provider_key(jwk, allowed) {
            Ok(key) => {
                keys.insert(kid, key);
            }
            Err(problem) => tracing::warn!(kid, problem, "provider key skipped"),
        }
    }
    keys
}

fn provider_key(jwk: &Jwk, allowed: &[Algorithm]) -> Result<ProviderKey, &'static str> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let bits = base64url_len(&rsa.n).ok_or("unreadable RSA modulus")? * 8;
            if bits < MIN_RSA_BITS {
                return Err("RSA modulus shorter than 2048 bits");
            }
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (algorithm, size) = match ec.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return Err("unsupported elliptic curve"),
            };
            if base64url_len(&ec.x) != Some(size) || base64url_len(&ec.y) != Some(size) {
                return Err("elliptic curve point of the wrong size");
            }
            algorithm
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            // A short Ed25519 key makes the verifier panic: check it here.
            if okp.curve != EllipticCurve::Ed25519 || base64url_len(&okp.x) != Some(32) {
                return Err("not a 32-byte Ed25519 key");
            }
            Algorithm::EdDSA
        }
        _ => return Err("not a public signing key (symmetric or unknown type)"),
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(declared) => {
            let declared = Algorithm::try_from(declared).map_err(|_| "unknown alg")?;
            if declared.family() != implied.family() {
                return Err("alg does not fit the key type");
            }
            declared
        }
    };
    if !allowed.contains(&algorithm) {
        return Err("algorithm not in FLASHSALE_OIDC_ALGORITHMS");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "unreadable key material")?;
    Ok(ProviderKey { algorithm, key })
}

fn base64url_len(value: &str) -> Option<usize> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .ok()
        .map(|bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str) -> JwkSet {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn short_or_symmetric_or_unlabelled_keys_are_skipped() {
        let keys = usable_keys(
            &set(r#"{"keys":[
                {"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"short-ed"},
                {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
                {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","alg":"RS256"},
                {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"good"}
            ]}"#),
            &[Algorithm::RS256, Algorithm::EdDSA],
        );
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(keys["good"].algorithm, Algorithm::EdDSA);
    }

    #[test]
    fn keys_of_algorithms_not_allowed_are_skipped() {
        let keys = usable_keys(
            &set(
                r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}]}"#,
            ),
            &[Algorithm::RS256],
        );
        assert!(keys.is_empty());
    }
}
