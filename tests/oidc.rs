//! `oidc` mode against a real (local) OpenID Connect provider: discovery,
//! keys of three algorithms, rotation, a flood of unknown `kid`s, the
//! provider going away, forged tokens of every kind, and admin rights from
//! a claim.

mod common;

use std::time::Duration;

use common::{
    TestApp,
    idp::{FakeIdp, SigningKey},
    spawn_oidc_app,
};
use flashsale::domain::Identity;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Waits until the node has fetched the provider's keys (it is not ready
/// before).
async fn ready(app: &TestApp) {
    app.wait_for_status("/api/health/ready", StatusCode::OK, Duration::from_secs(10))
        .await;
}

fn user_of(idp: &FakeIdp, subject: &str) -> Uuid {
    Identity {
        issuer: idp.issuer.clone(),
        subject: subject.to_owned(),
    }
    .user_id()
}

/// An authenticated read that succeeds for any valid token: the caller's
/// own orders.
async fn own_orders(app: &TestApp, idp: &FakeIdp, subject: &str, token: &str) -> common::Reply {
    app.get(
        &format!("/api/purchase/user/{}", user_of(idp, subject)),
        Some(token),
    )
    .await
}

#[sqlx::test]
async fn tokens_signed_with_rs256_es256_and_eddsa_are_accepted_and_map_to_one_user(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    ready(&app).await;
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let reply = own_orders(&app, &idp, "ann", &idp.token(kid, "ann")).await;
        assert_eq!(reply.status, StatusCode::OK, "{kid}: {}", reply.body);
    }
    let (issuer, subject): (String, String) =
        sqlx::query_as("select issuer, subject from users where id = $1")
            .bind(user_of(&idp, "ann"))
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!((issuer, subject), (idp.issuer.clone(), "ann".to_string()));
    assert_eq!(app.count("users").await, 1, "one user per (issuer, sub)");
}

#[sqlx::test]
async fn the_admin_claim_grants_admin_and_its_absence_does_not(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    ready(&app).await;
    let product = || json!({"sku": format!("SKU-{}", Uuid::now_v7().simple()), "name": "n", "price": 1, "currency": "EUR", "stock": 1});

    let mut admin = idp.claims("ops");
    admin["roles"] = json!(["viewer", "flashsale:admin"]);
    let reply = app
        .post(
            "/api/admin/products",
            Some(&idp.key("ec-1").sign(&admin)),
            product(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    let mut other_role = idp.claims("eve");
    other_role["roles"] = json!(["flashsale:shopper"]);
    let mut admin_as_email = idp.claims("mallory");
    admin_as_email["email"] = json!("admin@flashsale.local");
    for claims in [idp.claims("bob"), other_role, admin_as_email] {
        app.post(
            "/api/admin/products",
            Some(&idp.key("rsa-1").sign(&claims)),
            product(),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    assert_eq!(app.count("products").await, 1);
}

#[sqlx::test]
async fn in_oidc_mode_the_development_login_and_payment_do_not_exist(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    app.post("/api/auth/login", None, json!({"email": "ann@example.com"}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let token = idp.token("rsa-1", "ann");
    app.post(
        &format!("/api/dev/orders/{}/pay", uuid::Uuid::now_v7()),
        Some(&token),
        json!({}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let documented = app.get("/api/openapi.json", None).await;
    assert!(
        documented.body["paths"]
            .get("/api/dev/orders/{id}/pay")
            .is_none()
    );
    let config = app.get("/api/auth/config", None).await;
    assert_eq!(config.body["mode"], "oidc");
    assert_eq!(config.body["issuer"], idp.issuer);
    assert_eq!(app.count("users").await, 0);
}

#[sqlx::test]
async fn a_rotation_costs_exactly_one_extra_key_fetch(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    ready(&app).await;
    assert_eq!(idp.jwks_fetches(), 1);
    let old_token = idp.token("rsa-1", "ann");
    assert_eq!(
        own_orders(&app, &idp, "ann", &old_token).await.status,
        StatusCode::OK
    );

    let old_key = idp.key("rsa-1");
    idp.rotate(SigningKey::generate("rsa-2", Algorithm::RS256), "rsa-1");
    let new_token = idp.token("rsa-2", "ann");
    for _ in 0..3 {
        let reply = own_orders(&app, &idp, "ann", &new_token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(idp.jwks_fetches(), 2, "the new kid fetched the keys once");
    // The retired key left with that fetch: nothing it signs verifies any
    // more. (A token it signed that this node already verified is reused
    // until its exp, for at most auth::verified::KEEP_FOR.)
    let mut claims = idp.claims("bob");
    claims["jti"] = json!("signed after the rotation");
    let retired = old_key.sign(&claims);
    own_orders(&app, &idp, "bob", &retired)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(
        own_orders(&app, &idp, "ann", &old_token).await.status,
        StatusCode::OK
    );
}

#[sqlx::test]
async fn a_thousand_random_kids_cost_at_most_one_key_fetch(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    ready(&app).await;
    let before = idp.jwks_fetches();
    let attacker = SigningKey::generate("attacker", Algorithm::ES256);
    let requests = (0..1000).map(|_| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(Uuid::new_v4().to_string());
        let token = attacker.sign_with(header, &idp.claims("ann"));
        let app = &app;
        async move {
            app.get(
                "/api/purchase/status?sale_id=00000000-0000-0000-0000-000000000000",
                Some(&token),
            )
            .await
            .status
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED)
    );
    assert!(
        idp.jwks_fetches() - before <= 1,
        "{} fetches for 1,000 unknown kids",
        idp.jwks_fetches() - before
    );
}

#[sqlx::test]
async fn while_the_provider_is_down_the_last_keys_work_for_the_bound_then_stop(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |settings| {
        let oidc = &mut settings.auth.oidc;
        oidc.oidc_keys_refresh = Duration::from_secs(1);
        oidc.oidc_keys_min_refetch = Duration::from_secs(1);
        oidc.oidc_keys_max_stale = Duration::from_secs(3);
    })
    .await;
    ready(&app).await;
    idp.set_down(true);
    let token = idp.token("ed-1", "ann");
    let reply = own_orders(&app, &idp, "ann", &token).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the last keys keep working: {}",
        reply.body
    );

    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    let stopped = loop {
        let reply = own_orders(&app, &idp, "ann", &token).await;
        if reply.status != StatusCode::OK || tokio::time::Instant::now() > give_up {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stopped.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(stopped.headers.contains_key("retry-after"));
    app.get("/api/health/ready", None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");

    idp.set_down(false);
    ready(&app).await;
    assert_eq!(
        own_orders(&app, &idp, "ann", &token).await.status,
        StatusCode::OK
    );
}

/// `nbf` is checked when present but not required: the access tokens of
/// Okta, Google, Keycloak and Auth0 carry none.
#[sqlx::test]
async fn a_token_without_nbf_is_accepted_and_a_future_nbf_is_not(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    ready(&app).await;
    let mut claims = idp.claims("ann");
    claims.as_object_mut().unwrap().remove("nbf");
    let reply = own_orders(&app, &idp, "ann", &idp.key("ec-1").sign(&claims)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    claims["nbf"] = json!(chrono::Utc::now().timestamp() + 3600);
    own_orders(&app, &idp, "ann", &idp.key("ec-1").sign(&claims))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

/// A node reuses its verdict on a provider token it verified (looked up
/// before anything of the token is decoded), but never past a ban of its
/// user or the token's expiry.
#[sqlx::test]
async fn a_verified_provider_token_stops_working_at_its_users_ban_and_at_its_expiry(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |settings| {
        settings.auth.oidc.oidc_leeway_secs = 0;
    })
    .await;
    ready(&app).await;
    let mut operator = idp.claims("ops");
    operator["roles"] = json!(["flashsale:admin"]);
    let admin = idp.key("ec-1").sign(&operator);
    let ann = idp.token("rsa-1", "ann");
    for _ in 0..2 {
        let reply = own_orders(&app, &idp, "ann", &ann).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let ban_path = format!("/api/admin/users/{}/ban", user_of(&idp, "ann"));
    let ban = app.post(&ban_path, Some(&admin), json!({})).await;
    assert_eq!(ban.status, StatusCode::OK, "{}", ban.body);
    own_orders(&app, &idp, "ann", &ann)
        .await
        .assert_error(StatusCode::FORBIDDEN, "ACCOUNT_SUSPENDED");

    let mut claims = idp.claims("bob");
    let expires_at = chrono::Utc::now().timestamp() + 2;
    claims["exp"] = json!(expires_at);
    let bob = idp.key("rsa-1").sign(&claims);
    let reply = own_orders(&app, &idp, "bob", &bob).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    while chrono::Utc::now().timestamp() <= expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired = own_orders(&app, &idp, "bob", &bob).await;
    expired.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(
        expired.body["error"]["message"], "the access token has expired; sign in again",
        "{}",
        expired.body
    );
}

/// A key set with nothing usable in it (emptied by mistake, or only keys of
/// algorithms not allowed) must not replace the keys that verify today's
/// tokens.
#[sqlx::test]
async fn a_key_set_without_a_usable_key_keeps_the_last_keys(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    ready(&app).await;
    let token = idp.token("ed-1", "ann");
    idp.publish_only(vec![]);
    // An unknown kid makes the node fetch the (now empty) set.
    let stranger = SigningKey::generate("new-kid", Algorithm::ES256);
    own_orders(&app, &idp, "ann", &stranger.sign(&idp.claims("ann")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(
        own_orders(&app, &idp, "ann", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/health/ready", None).await.status,
        StatusCode::OK
    );
}

#[sqlx::test]
async fn a_node_is_not_ready_until_it_has_the_providers_keys(pg: PgPool) {
    let idp = FakeIdp::start().await;
    idp.set_down(true);
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.get("/api/health/ready", None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    idp.set_down(false);
    ready(&app).await;
}

#[sqlx::test]
async fn forged_and_foreign_tokens_are_refused_with_invalid_token(pg: PgPool) {
    let idp = FakeIdp::start().await;
    let app = spawn_oidc_app(pg, &idp, |_| {}).await;
    ready(&app).await;
    let rsa = idp.key("rsa-1");
    let now = chrono::Utc::now().timestamp();
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = idp.claims("ann");
        claims["roles"] = json!(["flashsale:admin"]);
        change(&mut claims);
        rsa.sign(&claims)
    };
    let unsigned = {
        let header = common::b64url(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
        let signed = with(&|_| {});
        let payload = signed.split('.').nth(1).unwrap();
        format!("{header}.{payload}.")
    };
    // HS256 signed with the RSA key's public JWK as the shared secret: the
    // classic algorithm confusion.
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let secret = rsa.jwk().to_string();
        let claims = idp.claims("ann");
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let no_kid = rsa.sign_with(Header::new(Algorithm::RS256), &idp.claims("ann"));
    let attacker = SigningKey::generate("rsa-1", Algorithm::RS256);
    let jku_elsewhere = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("attacker-key".into());
        header.jku = Some("http://127.0.0.1:9/jwks".into());
        attacker.sign_with(header, &idp.claims("ann"))
    };
    let other_issuer = FakeIdp::start().await;
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned),
        ("HS256 keyed with the RSA public key", confused),
        ("wrong audience", with(&|c| c["aud"] = json!("another-api"))),
        (
            "audiences that are all someone else's",
            with(&|c| c["aud"] = json!(["x", "y"])),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        ("expired", with(&|c| c["exp"] = json!(now - 3600))),
        ("not valid yet", with(&|c| c["nbf"] = json!(now + 3600))),
        (
            "no iat",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "no sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("no kid", no_kid),
        (
            "a kid of ours signed by another key",
            attacker.sign(&idp.claims("ann")),
        ),
        ("jku pointing elsewhere", jku_elsewhere),
        (
            "another provider's token",
            other_issuer.token("rsa-1", "ann"),
        ),
        (
            "oversized",
            format!(
                "{}.{}.{}",
                "a".repeat(4000),
                "b".repeat(4000),
                "c".repeat(400)
            ),
        ),
    ];
    for (case, token) in cases {
        let reply = app
            .post(
                "/api/admin/products",
                Some(&token),
                json!({"sku": "X", "name": "n", "price": 1, "currency": "EUR", "stock": 1}),
            )
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        assert_eq!(
            reply.headers.get("www-authenticate").unwrap(),
            r#"Bearer error="invalid_token""#,
            "{case}"
        );
    }
    assert_eq!(app.count("products").await, 0);
    assert_eq!(
        app.count("users").await,
        0,
        "no refused token created a user"
    );
}
