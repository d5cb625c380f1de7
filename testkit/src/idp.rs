//! A local OpenID Connect provider for the tests: an axum server on port 0
//! serving discovery and a JWKS, with RS256, ES256 and EdDSA keys generated
//! here, that mints tokens, rotates keys, counts key fetches and can be
//! taken down.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};

/// The audience the provider writes for the API under test.
pub const AUDIENCE: &str = "flashsale-test-api";

/// A key the provider signs with.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    pub fn generate(kid: &str, algorithm: Algorithm) -> Self {
        let encoding = match algorithm {
            Algorithm::RS256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
                EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes())
            }
            Algorithm::ES256 => {
                use p256::pkcs8::EncodePrivateKey;
                let key = p256::ecdsa::SigningKey::random(&mut OsRng);
                EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes())
            }
            Algorithm::EdDSA => {
                use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
                let mut seed = [0u8; 32];
                OsRng.fill_bytes(&mut seed);
                // The PKCS#8 v1 form: the one jsonwebtoken derives a JWK from.
                let der = KeypairBytes {
                    secret_key: seed,
                    public_key: None,
                }
                .to_pkcs8_der()
                .unwrap();
                EncodingKey::from_ed_der(der.as_bytes())
            }
            other => panic!("the test provider has no {other:?} keys"),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            algorithm,
            encoding,
            jwk,
        }
    }

    /// Signs `claims` with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    /// Signs with a header of the caller's making.
    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    pub fn jwk(&self) -> Value {
        serde_json::to_value(&self.jwk).unwrap()
    }
}

struct Published {
    keys: Mutex<Vec<SigningKey>>,
    jwks_fetches: AtomicUsize,
    down: AtomicBool,
}

pub struct FakeIdp {
    pub issuer: String,
    pub addr: SocketAddr,
    published: Arc<Published>,
}

impl FakeIdp {
    /// A provider publishing one key of each algorithm: `rsa-1`, `ec-1`, `ed-1`.
    pub async fn start() -> Self {
        let keys = vec![
            SigningKey::generate("rsa-1", Algorithm::RS256),
            SigningKey::generate("ec-1", Algorithm::ES256),
            SigningKey::generate("ed-1", Algorithm::EdDSA),
        ];
        let published = Arc::new(Published {
            keys: Mutex::new(keys),
            jwks_fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state((issuer.clone(), published.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            issuer,
            addr,
            published,
        }
    }

    /// The published key with this `kid`.
    pub fn key(&self, kid: &str) -> SigningKey {
        self.published
            .keys
            .lock()
            .unwrap()
            .iter()
            .find(|key| key.kid == kid)
            .cloned()
            .unwrap_or_else(|| panic!("no key {kid}"))
    }

    /// Claims a valid access token of this provider carries.
    pub fn claims(&self, subject: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    /// A valid token for `subject`, signed with key `kid`.
    pub fn token(&self, kid: &str, subject: &str) -> String {
        self.key(kid).sign(&self.claims(subject))
    }

    /// Publishes `key` and stops publishing `retired`.
    pub fn rotate(&self, key: SigningKey, retired: &str) {
        let mut keys = self.published.keys.lock().unwrap();
        keys.retain(|published| published.kid != retired);
        keys.push(key);
    }

    /// Publishes exactly `keys` from now on.
    pub fn publish_only(&self, keys: Vec<SigningKey>) {
        *self.published.keys.lock().unwrap() = keys;
    }

    /// Key set fetches served so far.
    pub fn jwks_fetches(&self) -> usize {
        self.published.jwks_fetches.load(Ordering::SeqCst)
    }

    /// While down, every request answers 503.
    pub fn set_down(&self, down: bool) {
        self.published.down.store(down, Ordering::SeqCst);
    }
}

type IdpState = State<(String, Arc<Published>)>;

async fn discovery(State((issuer, published)): IdpState) -> Result<Json<Value>, StatusCode> {
    if published.down.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
    })))
}

async fn jwks(State((_, published)): IdpState) -> Result<Json<JwkSet>, StatusCode> {
    if published.down.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    published.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = published.keys.lock().unwrap();
    Ok(Json(JwkSet {
        keys: keys.iter().map(|key| key.jwk.clone()).collect(),
    }))
}
