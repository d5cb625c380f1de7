//! The CPU cost of a request before any I/O: verifying the bearer token,
//! parsing and validating the JSON body, and rendering the JSON answer.
//! Run with `cargo bench --bench request_handling`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::{
    auth::TokenService,
    config::{AuthSettings, Secret},
    domain::Role,
    http::routes::flash_sales::CreateFlashSaleRequest,
};
use uuid::Uuid;
use validator::Validate;

fn tokens() -> TokenService {
    TokenService::new(&AuthSettings {
        jwt_secret: Secret::new("bench-secret-that-is-at-least-32-bytes"),
        jwt_issuer: "flashsale".into(),
        jwt_audience: "flashsale-api".into(),
        token_ttl_secs: 3600,
        admin_emails: vec![],
    })
}

fn token_verification(c: &mut Criterion) {
    let tokens = tokens();
    let token = tokens.issue(Uuid::now_v7(), Role::Shopper).token;
    c.bench_function("jwt_verify_hs256", |b| {
        b.iter(|| tokens.verify(black_box(&token)).unwrap())
    });
    c.bench_function("jwt_issue_hs256", |b| {
        b.iter(|| tokens.issue(black_box(Uuid::now_v7()), Role::Shopper))
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

criterion_group!(benches, token_verification, body_parsing_and_validation);
criterion_main!(benches);
