//! The CPU cost of a request before any I/O: verifying the bearer token
//! (this deployment's HS256, and the identity provider's RS256, ES256 and
//! EdDSA through the real verifier and key cache), parsing and validating
//! the JSON body, and rendering the JSON answer.
//! Run with `cargo bench --bench request_handling`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::{
    auth::LocalTokens,
    config::Secret,
    domain::PurchaseStatus,
    domain::Role,
    http::routes::{
        flash_sales::CreateFlashSaleRequest,
        purchase::{PurchaseAccepted, PurchaseRequest},
    },
};
// The test identity provider's signing keys.
use flashsale_testkit::idp;
use uuid::Uuid;
use validator::Validate;

/// Counts allocations (glibc's underneath, as before), so what the
/// middleware allocates per request is a count, free of the machine's
/// noise, next to criterion's times.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes straight to the system allocator; the counter
// only observes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn tokens() -> LocalTokens {
    LocalTokens::new(
        &Secret::new("bench-secret-that-is-at-least-32-bytes"),
        "flashsale",
        "flashsale-api",
    )
}

fn token_verification(c: &mut Criterion) {
    let tokens = tokens();
    let token = tokens.issue(Uuid::now_v7(), Role::Shopper, 3600).token;
    c.bench_function("jwt_verify_hs256", |b| {
        b.iter(|| tokens.verify(black_box(&token)).unwrap())
    });
    c.bench_function("jwt_issue_hs256", |b| {
        b.iter(|| tokens.issue(black_box(Uuid::now_v7()), Role::Shopper, 3600))
    });
    // What the node did before verifying each token (decode the header to
    // choose the verifier), and what it does now for its own tokens.
    c.bench_function("jwt_header_decode", |b| {
        b.iter(|| jsonwebtoken::decode_header(black_box(&token)).unwrap())
    });
    c.bench_function("jwt_own_header_check", |b| {
        b.iter(|| assert!(tokens.wrote_header_of(black_box(&token))))
    });
}

/// The provider's tokens as `oidc` mode verifies them: header checks, the
/// key from the node's cache (a hash lookup once fetched), the signature and
/// the claims.
fn provider_token_verification(c: &mut Criterion) {
    use clap::Parser;
    use flashsale::{
        auth::{keys::KeyCache, oidc::OidcVerifier},
        config::OidcSettings,
    };
    use jsonwebtoken::Algorithm;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        oidc: OidcSettings,
    }
    let keys = [
        idp::SigningKey::generate("rsa", Algorithm::RS256),
        idp::SigningKey::generate("ec", Algorithm::ES256),
        idp::SigningKey::generate("ed", Algorithm::EdDSA),
    ];
    let jwks = std::env::temp_dir().join(format!("flashsale-bench-{}.jwks", std::process::id()));
    let set =
        serde_json::json!({ "keys": keys.iter().map(idp::SigningKey::jwk).collect::<Vec<_>>() });
    std::fs::write(&jwks, set.to_string()).unwrap();
    let settings = Args::parse_from([
        "bench",
        "--oidc-issuer=https://login.bench.example",
        "--oidc-audiences=flashsale",
        &format!("--oidc-jwks-file={}", jwks.display()),
    ])
    .oidc;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let verifier = runtime.block_on(async {
        OidcVerifier::new(&settings, Arc::new(KeyCache::new(&settings).unwrap())).unwrap()
    });
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "https://login.bench.example", "aud": "flashsale", "sub": "shopper-1",
        "iat": now, "nbf": now, "exp": now + 3600,
    });
    for key in &keys {
        let token = key.sign(&claims);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        // The first verification reads the key set; the bench measures the rest.
        runtime.block_on(verifier.verify(&token, &header)).unwrap();
        let name = format!("jwt_verify_{:?}_provider", key.algorithm).to_lowercase();
        c.bench_function(&name, |b| {
            b.to_async(&runtime)
                .iter(|| verifier.verify(black_box(&token), &header))
        });
    }
    // What every later request with the same token costs instead: the
    // node's verdict, looked up by the token's digest.
    let verified = flashsale::auth::verified::VerifiedTokens::default();
    let token = keys[0].sign(&claims);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    let caller = runtime.block_on(verifier.verify(&token, &header)).unwrap();
    verified.keep(&token, &caller, caller.expires_at);
    c.bench_function("jwt_provider_verdict_reused", |b| {
        b.iter(|| verified.get(black_box(&token)).unwrap())
    });
    // What the node no longer does before that lookup (issue 19): decode
    // the provider token's header.
    c.bench_function("jwt_provider_header_decode", |b| {
        b.iter(|| jsonwebtoken::decode_header(black_box(&token)).unwrap())
    });
    std::fs::remove_file(jwks).ok();
}

fn body_parsing_and_validation(c: &mut Criterion) {
    let body = format!(
        r#"{{"product_id":"{}","price":4999,"starts_at":"2030-01-01T10:00:00Z","ends_at":"2030-01-01T11:00:00Z","per_user_limit":1,"stock":10000}}"#,
        Uuid::now_v7()
    );
    c.bench_function("flash_sale_body_parse_and_validate", |b| {
        b.iter(|| {
            let request: CreateFlashSaleRequest = serde_json::from_str(black_box(&body)).unwrap();
            request.validate().unwrap();
            request
        })
    });
}

/// The whole CPU side of a purchase request before Redis: verify the
/// token, parse and validate the body, render the 202 body.
fn purchase_request_without_io(c: &mut Criterion) {
    let tokens = tokens();
    let token = tokens.issue(Uuid::now_v7(), Role::Shopper, 3600).token;
    let sale_id = Uuid::now_v7();
    let body = format!(r#"{{"sale_id":"{sale_id}","quantity":1}}"#);
    c.bench_function("purchase_request_without_io", |b| {
        b.iter(|| {
            let claims = tokens.verify(black_box(&token)).unwrap();
            let request: PurchaseRequest = serde_json::from_str(black_box(&body)).unwrap();
            request.validate().unwrap();
            let reservation_id = Uuid::now_v7();
            let accepted = PurchaseAccepted {
                reservation_id,
                sale_id: request.sale_id.unwrap(),
                status: PurchaseStatus::Pending,
                status_url: format!(
                    "/api/purchase/status?sale_id={sale_id}&reservation_id={reservation_id}"
                ),
                hold: None,
            };
            (claims, serde_json::to_vec(&accepted).unwrap())
        })
    });
}

/// What the middleware every request passes through costs (request id,
/// the request's trace span under the production JSON subscriber, security
/// headers, error rendering, panic catching, the request timeout, the body
/// limit), against the same handler routed bare: a purchase-sized POST
/// answered 202 with a small JSON body, through the router as hyper calls
/// it.
fn middleware_stack(c: &mut Criterion) {
    use axum::{Json, Router, body::Body, http::Request, http::StatusCode, routing::post};
    use clap::Parser;
    use flashsale::{config::HttpSettings, http::with_middleware, telemetry::json_subscriber};
    use tower::ServiceExt;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        http: HttpSettings,
    }
    let settings = Args::parse_from(["bench"]).http;
    let routes = || {
        Router::new().route(
            "/api/purchase",
            post(|Json(body): Json<serde_json::Value>| async move {
                (StatusCode::ACCEPTED, Json(body))
            }),
        )
    };
    let body = format!(r#"{{"sale_id":"{}","quantity":1}}"#, Uuid::now_v7());
    let request = || {
        Request::post("/api/purchase")
            .header("content-type", "application/json")
            .header("idempotency-key", "bench-key-0001")
            .body(Body::from(body.clone()))
            .unwrap()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Logs at `info` as a node runs, written nowhere.
    let _logging = tracing::subscriber::set_default(json_subscriber(
        tracing_subscriber::EnvFilter::new("info"),
        std::io::sink,
    ));
    for (name, router) in [
        ("purchase_route_bare", routes()),
        (
            "purchase_route_with_middleware",
            with_middleware(routes(), &settings),
        ),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let response = router.clone().oneshot(request()).await.unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                response
            })
        });
        let (router, request) = (&router, &request);
        report_allocations(&runtime, name, || async move {
            let response = router.clone().oneshot(request()).await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        });
    }
}

/// Every layer a request meets in a node, per-route metrics included, on
/// the one public route that does no I/O (`GET /api/health/live`): the
/// production router around the state `flashsale-api serve` builds, whose
/// lazy connections this route never opens.
fn node_router(c: &mut Criterion) {
    use axum::{body::Body, http::Request, http::StatusCode};
    use clap::Parser;
    use flashsale::{
        config::ApiSettings, http::router, server::build_state, telemetry::json_subscriber,
    };
    use tower::ServiceExt;

    #[derive(Parser)]
    struct Node {
        #[command(flatten)]
        settings: ApiSettings,
    }
    let settings = Node::parse_from([
        "flashsale-api",
        "--database-url",
        "postgres://127.0.0.1:1/never-opened",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--auth-mode",
        "dev",
        "--jwt-secret",
        "bench-secret-that-is-at-least-32-bytes",
    ])
    .settings;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = {
        let _runtime = runtime.enter();
        router(
            build_state(&settings).expect("the node's state"),
            &settings.http,
        )
    };
    let _logging = tracing::subscriber::set_default(json_subscriber(
        tracing_subscriber::EnvFilter::new("info"),
        std::io::sink,
    ));
    let request = || {
        Request::get("/api/health/live")
            .body(Body::empty())
            .unwrap()
    };
    c.bench_function("live_route_through_the_node_router", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = router.clone().oneshot(request()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response
        })
    });
    let (router, request) = (&router, &request);
    report_allocations(
        &runtime,
        "live_route_through_the_node_router",
        || async move {
            let response = router.clone().oneshot(request()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        },
    );
}

/// Allocations per request, over 10,000 requests made one after another.
fn report_allocations<F: std::future::Future<Output = ()>>(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    mut request: impl FnMut() -> F,
) {
    const COUNTED: u64 = 10_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    runtime.block_on(async {
        for _ in 0..COUNTED {
            request().await;
        }
    });
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "{name}: {:.1} allocations per request (building the request included)",
        allocations as f64 / COUNTED as f64
    );
}

criterion_group!(
    benches,
    middleware_stack,
    node_router,
    token_verification,
    provider_token_verification,
    body_parsing_and_validation,
    purchase_request_without_io
);
criterion_main!(benches);
