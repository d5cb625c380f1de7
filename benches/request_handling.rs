//! The CPU cost of a request before any I/O: verifying the bearer token,
//! parsing and validating the JSON body, and rendering the JSON answer.
//! Run with `cargo bench --bench request_handling`.

use std::hint::black_box;

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
use uuid::Uuid;
use validator::Validate;

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
            };
            (claims, serde_json::to_vec(&accepted).unwrap())
        })
    });
}

criterion_group!(
    benches,
    token_verification,
    body_parsing_and_validation,
    purchase_request_without_io
);
criterion_main!(benches);
