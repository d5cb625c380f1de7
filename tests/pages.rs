//! The shop and dashboard pages as a browser receives them: HTML and their
//! assets with the right types and a policy that allows nothing foreign.
//! What they do is driven in Chromium by tests/browser.rs.

mod common;

use common::spawn_app;
use reqwest::StatusCode;
use sqlx::PgPool;

#[sqlx::test]
async fn pages_and_assets_are_served_with_a_strict_policy(pg: PgPool) {
    let app = spawn_app(pg).await;
    for (path, marker) in [("/", "/assets/shop.js"), ("/admin", "/assets/admin.js")] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-type"], "text/html; charset=utf-8",
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let html = response.text().await.unwrap();
        assert!(html.contains(marker), "{path} does not load {marker}");
        assert!(!html.contains("<script>"), "{path} has an inline script");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{path} loads something foreign"
        );
    }
    for (asset, content_type) in [
        ("api.js", "text/javascript; charset=utf-8"),
        ("shop.js", "text/javascript; charset=utf-8"),
        ("admin.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
    ] {
        let response = app
            .client
            .get(format!("{}/assets/{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert_eq!(response.headers()["content-type"], content_type, "{asset}");
        assert!(!response.text().await.unwrap().is_empty());
    }
    app.get("/assets/../Cargo.toml", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    app.get("/assets/secret.js", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}
