//! Attacks that need no cluster: security headers and CORS on every kind of
//! response, object-level authorization across many ids, and hostile JSON.
//! Token forgery is in `auth.rs`; rate limits per user in `purchase.rs`;
//! the proxy-level attacks (per-address limits, spoofed X-Forwarded-For,
//! slow and idle clients) in `scripts/chaos abuse`.

mod common;

use common::{CORS_ORIGIN, Reply, Route, TestApp, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn assert_security_headers(what: &str, reply: &Reply) {
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("{what} ({}): no {name} header", reply.status))
            .to_owned()
    };
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(
        header("content-security-policy"),
        "frame-ancestors 'none'",
        "{what}"
    );
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
}

#[sqlx::test]
async fn every_kind_of_response_carries_the_security_headers(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let (_, shopper) = app.shopper();
    let url = |path: &str| format!("{}{path}", app.base);

    let mut replies: Vec<(&str, Reply)> = vec![
        ("liveness", app.get("/api/health/live", None).await),
        ("health details", app.operator_get("/api/health").await),
        (
            "sale status",
            app.get(&format!("/api/flash-sale/status?sale_id={sale}"), None)
                .await,
        ),
        (
            "login",
            app.post("/api/auth/login", None, json!({"email": "h@example.com"}))
                .await,
        ),
        (
            "accepted purchase",
            app.attempt(&shopper, "headers", json!({"sale_id": sale}))
                .await,
        ),
        (
            "refused purchase",
            app.attempt(&shopper, "headers-2", json!({"sale_id": sale}))
                .await,
        ),
        ("no token", app.get("/api/flash-sale/stats", None).await),
        (
            "shopper on an admin route",
            app.get("/api/flash-sale/stats", Some(&shopper)).await,
        ),
        (
            "invalid body",
            app.post("/api/auth/login", None, json!({"email": 7})).await,
        ),
        ("unknown route", app.get("/api/nothing-here", None).await),
        (
            "wrong method",
            app.request(Method::DELETE, "/api/health/live", None, None)
                .await,
        ),
        ("openapi document", app.get("/api/openapi.json", None).await),
        ("metrics", app.operator_get("/metrics").await),
    ];
    let oversized = app
        .client
        .post(url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{}\"}}", "x".repeat(64 * 1024)))
        .send()
        .await
        .unwrap();
    replies.push(("oversized body", TestApp::read(oversized).await));
    let docs = app.client.get(url("/api/docs/")).send().await.unwrap();
    replies.push(("docs page", TestApp::read(docs).await));

    let statuses: Vec<u16> = replies.iter().map(|(_, r)| r.status.as_u16()).collect();
    for expected in [200, 202, 400, 401, 403, 404, 405, 409, 413] {
        assert!(
            statuses.contains(&expected),
            "no {expected} among the checked responses: {statuses:?}"
        );
    }
    for (what, reply) in &replies {
        assert_security_headers(what, reply);
    }
}

#[sqlx::test]
async fn cors_answers_only_the_configured_origin(pg: PgPool) {
    let app = spawn_app(pg).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(
                Method::OPTIONS,
                format!("{}/api/purchase/attempt", app.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };

    let allowed = TestApp::read(preflight(CORS_ORIGIN).await.unwrap()).await;
    assert!(allowed.status.is_success(), "{}", allowed.status);
    // A node reached directly (no nginx to add them) answers a preflight
    // with the browser-safety headers too.
    assert_security_headers("preflight", &allowed);
    let headers = &allowed.headers;
    assert_eq!(headers["access-control-allow-origin"], CORS_ORIGIN);
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }
    assert!(
        headers.get("access-control-allow-credentials").is_none(),
        "tokens travel in a header; cookies are never invited"
    );

    let foreign = preflight("https://evil.example.net").await.unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "a foreign origin was allowed: {:?}",
        foreign.headers()
    );

    let simple = app
        .client
        .get(format!("{}/api/health/live", app.base))
        .header("origin", CORS_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(simple.headers()["access-control-allow-origin"], CORS_ORIGIN);
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    let simple_foreign = app
        .client
        .get(format!("{}/api/health/live", app.base))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert!(
        simple_foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[sqlx::test]
async fn without_configured_origins_no_response_invites_another_origin(pg: PgPool) {
    let app = spawn_app_with(pg, Route::default(), |settings| {
        settings.http.cors_origins = Default::default();
    })
    .await;
    let preflight = app
        .client
        .request(
            Method::OPTIONS,
            format!("{}/api/purchase/attempt", app.base),
        )
        .header("origin", CORS_ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let simple = app
        .client
        .get(format!("{}/api/health/live", app.base))
        .header("origin", CORS_ORIGIN)
        .send()
        .await
        .unwrap();
    for response in [preflight, simple] {
        let cors: Vec<_> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{}: {cors:?}", response.status());
    }
}

/// What a response reveals once the per-request id is taken out.
fn revealed(reply: &Reply) -> (StatusCode, Value) {
    let mut body = reply.body.clone();
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        error.remove("request_id");
    }
    (reply.status, body)
}

#[sqlx::test]
async fn a_shopper_learns_nothing_about_other_shoppers_purchases(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 100, 5).await;
    let victim_token = app.login("victim@example.com").await;
    let victim = app.tokens.verify(&victim_token).unwrap().sub;
    let attacker = app.login("attacker@example.com").await;

    // The victim's reservations: pending ones in Redis, confirmed orders
    // only in PostgreSQL.
    let mut victim_reservations = Vec::new();
    for index in 0..3 {
        let reply = app
            .attempt(
                &victim_token,
                &format!("v-{index}"),
                json!({"sale_id": sale}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        victim_reservations.push(reply.body["reservation_id"].as_str().unwrap().to_owned());
    }
    for reservation in app.insert_orders(victim, &sale, 2).await {
        victim_reservations.push(reservation.to_string());
    }

    // The answer for an id nobody holds is the baseline: the victim's ids
    // must get exactly the same answer.
    let unknown = app
        .get(
            &format!("/api/purchase/status?reservation_id={}", Uuid::now_v7()),
            Some(&attacker),
        )
        .await;
    unknown.assert_error(StatusCode::NOT_FOUND, "PURCHASE_NOT_FOUND");
    for reservation in &victim_reservations {
        for query in [
            format!("reservation_id={reservation}"),
            format!("reservation_id={reservation}&sale_id={sale}"),
        ] {
            let probe = app
                .get(&format!("/api/purchase/status?{query}"), Some(&attacker))
                .await;
            assert_eq!(revealed(&probe), revealed(&unknown), "{query}");
        }
    }
    let own_sale = app
        .get(
            &format!("/api/purchase/status?sale_id={sale}"),
            Some(&attacker),
        )
        .await;
    assert_eq!(
        revealed(&own_sale),
        revealed(&unknown),
        "the attacker bought nothing"
    );

    let nobody = app
        .get(
            &format!("/api/purchase/user/{}", Uuid::now_v7()),
            Some(&attacker),
        )
        .await;
    nobody.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    for path in [
        format!("/api/purchase/user/{victim}"),
        format!("/api/purchase/user/{victim}?page=1&per_page=100"),
        format!("/api/purchase/user/{victim}?page=2&per_page=1"),
    ] {
        let probe = app.get(&path, Some(&attacker)).await;
        assert_eq!(revealed(&probe), revealed(&nobody), "{path}");
    }
    let victims_own = app
        .get(&format!("/api/purchase/user/{victim}"), Some(&victim_token))
        .await;
    assert_eq!(victims_own.body["total"], 2, "{}", victims_own.body);

    for path in [
        format!("/api/admin/flash-sales/{sale}"),
        format!("/api/admin/flash-sales/{sale}/stats"),
        format!("/api/flash-sale/stats?sale_id={sale}"),
    ] {
        app.get(&path, Some(&attacker))
            .await
            .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    app.patch(
        &format!("/api/admin/flash-sales/{sale}"),
        Some(&attacker),
        json!({"action": "pause"}),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    assert_eq!(
        app.get(&format!("/api/flash-sale/status?sale_id={sale}"), None)
            .await
            .body["state"],
        "active"
    );
}

#[sqlx::test]
async fn deeply_nested_and_hostile_json_is_refused_without_harm(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let (_, shopper) = app.shopper();
    let send = |body: String| {
        app.client
            .post(format!("{}/api/purchase/attempt", app.base))
            .bearer_auth(&shopper)
            .header("idempotency-key", "hostile")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let depth = 5_000;
    let nested_array = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let nested_object = format!(
        "{{\"sale_id\":\"{sale}\",\"extra\":{}1{}}}",
        "{\"a\":".repeat(depth / 6),
        "}".repeat(depth / 6)
    );
    let duplicate_keys = format!("{{\"sale_id\":\"{sale}\",\"sale_id\":\"{sale}\"}}");
    let huge_number = format!(
        "{{\"sale_id\":\"{sale}\",\"quantity\":1{}}}",
        "0".repeat(400)
    );
    for (what, body) in [
        ("nested arrays", nested_array),
        ("nested objects", nested_object),
        ("duplicate keys", duplicate_keys),
        ("huge number", huge_number),
        (
            "lone surrogate",
            format!("{{\"sale_id\":\"\\ud800{sale}\"}}"),
        ),
    ] {
        let reply = TestApp::read(send(body).await.unwrap()).await;
        assert!(
            reply.status.is_client_error(),
            "{what}: {} {}",
            reply.status,
            reply.body
        );
        assert!(
            reply.body["error"]["code"].is_string(),
            "{what}: {}",
            reply.body
        );
    }
    assert_eq!(
        app.redis_stock(&sale).await,
        Some(5),
        "nothing was reserved"
    );
    assert_eq!(
        app.get("/api/health/live", None).await.status,
        StatusCode::OK
    );
}
