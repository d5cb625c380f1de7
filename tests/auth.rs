//! Identity: login, token verification, roles.

mod common;

use common::{ADMIN_EMAIL, JWT_SECRET, spawn_app};
use flashsale::domain::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims like the API's, for forging tokens.
fn claims(role: &str) -> Value {
    json!({"sub": Uuid::now_v7(), "role": role, "iss": "flashsale", "aud": "flashsale-api",
           "iat": now(), "nbf": now(), "exp": now() + 600})
}

/// A token's header, payload and signature segments.
fn segments(token: &str) -> (&str, &str, &str) {
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    (head, payload, signature)
}

fn sign(claims: &Value, secret: &str) -> String {
    sign_with(&Header::new(Algorithm::HS256), claims, secret)
}

fn sign_with(header: &Header, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[sqlx::test]
async fn login_creates_the_user_once_and_returns_a_verifiable_token(pg: PgPool) {
    let app = spawn_app(pg).await;
    let first = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "  Ann@Example.com "}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["user"]["email"], "ann@example.com");
    assert_eq!(first.body["user"]["role"], "shopper");
    assert_eq!(first.body["token_type"], "Bearer");
    let claims = app
        .tokens
        .verify(first.body["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.sub.to_string(),
        first.body["user"]["id"].as_str().unwrap()
    );
    assert!(claims.exp > claims.iat);

    let again = app
        .post("/api/auth/login", None, json!({"email": "ann@example.com"}))
        .await;
    assert_eq!(
        again.body["user"]["id"], first.body["user"]["id"],
        "a second login made a second user"
    );
    assert_eq!(app.count("users").await, 1);
}

#[sqlx::test]
async fn the_development_login_never_grants_admin_even_for_the_operators_email(pg: PgPool) {
    let app = spawn_app(pg).await;
    let operator = app.admin_token().await;
    let reply = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": ADMIN_EMAIL.to_uppercase()}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user"]["role"], "shopper", "{}", reply.body);
    let token = reply.body["token"].as_str().unwrap();
    assert_eq!(app.tokens.verify(token).unwrap().role, Role::Shopper);
    app.post("/api/admin/products", Some(token), product())
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    // The operator's own token, minted from the shell, is the admin's.
    let created = app
        .post("/api/admin/products", Some(&operator), product())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
}

fn product() -> Value {
    json!({"sku": format!("SKU-{}", Uuid::now_v7().simple()), "name": "n", "price": 1, "currency": "EUR", "stock": 1})
}

#[sqlx::test]
async fn the_auth_config_names_the_mode(pg: PgPool) {
    let app = spawn_app(pg).await;
    let reply = app.get("/api/auth/config", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["mode"], "dev");
}

/// A token of this deployment's key whose header is written otherwise
/// (no `typ`) is not told by its header's bytes: its header is decoded,
/// and it verifies like any other.
#[sqlx::test]
async fn an_hs256_token_with_another_header_encoding_still_verifies(pg: PgPool) {
    let app = spawn_app(pg).await;
    let valid = app.admin_token().await;
    let (usual_head, payload, _) = segments(&valid);
    let claims: Value = {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let untyped = Header {
        typ: None,
        ..Header::new(Algorithm::HS256)
    };
    let other = sign_with(&untyped, &claims, JWT_SECRET);
    let (other_head, _, _) = segments(&other);
    assert_ne!(
        other_head, usual_head,
        "the header must be written otherwise"
    );
    let reply = app
        .post("/api/admin/products", Some(&other), product())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[sqlx::test]
async fn forged_expired_and_malformed_tokens_are_refused_with_401(pg: PgPool) {
    let app = spawn_app(pg).await;
    let valid = app.admin_token().await;
    let (head, payload, signature) = segments(&valid);
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered_signature = format!("{head}.{payload}.{flipped}{}", &signature[1..]);
    let mut admin_claims = claims("admin");
    let escalated_payload = common::b64url(admin_claims.to_string().as_bytes());
    let tampered_payload = format!("{head}.{escalated_payload}.{signature}");
    let alg_none = format!(
        "{}.{}.",
        common::b64url(br#"{"alg":"none","typ":"JWT"}"#),
        escalated_payload
    );
    admin_claims["exp"] = json!(now() - 3600);
    let expired = sign(&admin_claims, JWT_SECRET);
    let mut future = claims("admin");
    future["nbf"] = json!(now() + 3600);
    let not_yet_valid = sign(&future, JWT_SECRET);
    let mut wrong_iss = claims("admin");
    wrong_iss["iss"] = json!("someone-else");
    let mut wrong_aud = claims("admin");
    wrong_aud["aud"] = json!("another-api");
    // Algorithm confusion: a header naming an asymmetric or another HMAC
    // algorithm, signed with the shared secret (an RS/HS confusion forger
    // signs with whatever key material the server might use).
    let signed_as = |alg: &str, secret: &str| {
        let head = common::b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let hs256 = sign(&claims("admin"), secret);
        let (_, rest) = hs256.split_once('.').unwrap();
        format!("{head}.{rest}")
    };
    let hs512 = sign_with(&Header::new(Algorithm::HS512), &claims("admin"), JWT_SECRET);
    let mut no_exp = claims("admin");
    no_exp.as_object_mut().unwrap().remove("exp");

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("not a bearer scheme", Some(format!("Basic {valid}"))),
        ("garbage", Some("Bearer not.a.jwt".into())),
        (
            "tampered signature",
            Some(format!("Bearer {tampered_signature}")),
        ),
        (
            "tampered payload",
            Some(format!("Bearer {tampered_payload}")),
        ),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        (
            "RS256 header over an HMAC signature",
            Some(format!("Bearer {}", signed_as("RS256", JWT_SECRET))),
        ),
        (
            "ES256 header over an HMAC signature",
            Some(format!("Bearer {}", signed_as("ES256", JWT_SECRET))),
        ),
        (
            "HS512 with the right secret",
            Some(format!("Bearer {hs512}")),
        ),
        ("empty bearer", Some("Bearer ".into())),
        // This deployment's exact header is told by its bytes alone; the
        // rest must still verify.
        ("our header alone", Some(format!("Bearer {head}."))),
        (
            "our header and a payload, no signature",
            Some(format!("Bearer {head}.{payload}.")),
        ),
        ("two dots only", Some("Bearer ..".into())),
        (
            "oversized token",
            Some(format!(
                "Bearer {}.{}.{}",
                "a".repeat(3000),
                "b".repeat(3000),
                "c".repeat(3000)
            )),
        ),
        (
            "valid token with trailing garbage",
            Some(format!("Bearer {valid}x")),
        ),
        ("expired", Some(format!("Bearer {expired}"))),
        ("not yet valid", Some(format!("Bearer {not_yet_valid}"))),
        (
            "wrong key",
            Some(format!(
                "Bearer {}",
                sign(&claims("admin"), "another-secret-of-at-least-32-bytes!!")
            )),
        ),
        (
            "wrong issuer",
            Some(format!("Bearer {}", sign(&wrong_iss, JWT_SECRET))),
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", sign(&wrong_aud, JWT_SECRET))),
        ),
        (
            "no expiry",
            Some(format!("Bearer {}", sign(&no_exp, JWT_SECRET))),
        ),
    ];
    for (case, authorization) in cases {
        let mut request = app
            .client
            .post(format!("{}/api/admin/products", app.base))
            .json(&json!({"sku": "X", "name": "n", "price": 1, "currency": "EUR", "stock": 1}));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let reply = common::TestApp::read(request.send().await.unwrap()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        // RFC 6750: a request without credentials gets the bare challenge,
        // a refused token `invalid_token`.
        let challenge = if case == "no Authorization header" {
            "Bearer"
        } else {
            r#"Bearer error="invalid_token""#
        };
        assert_eq!(
            reply.headers.get("www-authenticate").unwrap(),
            challenge,
            "{case}"
        );
    }
    assert_eq!(app.count("products").await, 0);
}

#[sqlx::test]
async fn a_shopper_on_an_admin_route_is_forbidden(pg: PgPool) {
    let app = spawn_app(pg).await;
    let shopper = app.login("ann@example.com").await;
    let product = app
        .post(
            "/api/admin/products",
            Some(&shopper),
            json!({"sku": "X", "name": "n", "price": 1, "currency": "EUR", "stock": 1}),
        )
        .await;
    product.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    let sale = app
        .get(
            &format!("/api/admin/flash-sales/{}", Uuid::now_v7()),
            Some(&shopper),
        )
        .await;
    sale.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    assert_eq!(app.count("products").await, 0);
}
