//! The two pages in a real browser (headless Chromium driven through
//! chromedriver) against the running cluster: nginx, API nodes, workers.
//! `scripts/test` starts the cluster and runs this with `--ignored`:
//!
//! - FLASHSALE_BROWSER_BASE_URL: the cluster (nginx), e.g. http://127.0.0.1:8080
//! - FLASHSALE_BROWSER_ADMIN_TOKEN: an operator's token (`flashsale-api token --admin`)
//! - FLASHSALE_BROWSER_SHOPPER_TOKEN: a shopper's token as an embedding shop
//!   would hand it over (any token the nodes accept; in oidc mode the
//!   provider's)
//! - FLASHSALE_TEST_OUTPUT_DIR: where the screenshots go
//!
//! The shopper signs in (development login), buys, sees "confirmed" (the
//! worker committed the order and the event stream said so), buys again and
//! sees "already purchased". A second shopper arrives from the shop with a
//! token in the URL fragment, is signed in without a form, and buys. The
//! operator pastes a token into the dashboard, watches its numbers move
//! while other shoppers buy, and pauses, resumes and adds stock.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use uuid::Uuid;

const STOCK: i64 = 50;
const OTHER_SHOPPERS: i64 = 20;
/// The held sale's hold: short, so the test watches one expire (the
/// cluster runs with FLASHSALE_HOLD_MIN_SECS=1, set by scripts/bench
/// --pay-ratio in scripts/test).
const HOLD_SECONDS: i64 = 6;
const WAIT: Duration = Duration::from_secs(30);

struct Chromedriver(Child);

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set; run scripts/test"))
}

#[tokio::test]
#[ignore = "needs the running cluster and Chromium; scripts/test runs it"]
async fn shopper_page_and_dashboard_in_headless_chromium() {
    let base = env("FLASHSALE_BROWSER_BASE_URL");
    let admin = env("FLASHSALE_BROWSER_ADMIN_TOKEN");
    let embedded_shopper = env("FLASHSALE_BROWSER_SHOPPER_TOKEN");
    let output = PathBuf::from(env("FLASHSALE_TEST_OUTPUT_DIR"));
    std::fs::create_dir_all(&output).unwrap();

    flashsale::tls::install_provider();
    let api = reqwest::Client::new();
    let sale_id = open_sale(&api, &base, &admin).await;

    let (_driver, browser) = start_browser().await;
    let screenshot = |name: &'static str| {
        let browser = browser.clone();
        let path = output.join(name);
        async move {
            std::fs::write(&path, browser.screenshot().await.unwrap()).unwrap();
            eprintln!("screenshot: {}", path.display());
        }
    };

    // The shopper page.
    browser
        .goto(&format!("{base}/?sale_id={sale_id}"))
        .await
        .unwrap();
    let shopper_email = format!("shopper-{}@browser.test", Uuid::now_v7().simple());
    sign_in(&browser, &shopper_email).await;
    wait_for_text(&browser, "#remaining", |text| text == STOCK.to_string()).await;
    wait_for_text(&browser, "#link", |text| text == "live").await;
    // The page names what is for sale.
    wait_for_text(&browser, "#product", |text| text == "Sneaker").await;
    wait_for_text(&browser, "#description", |text| {
        text == "Limited run, one pair each"
    })
    .await;
    screenshot("shop-1-signed-in.png").await;

    click(&browser, "#buy").await;
    wait_for_text(&browser, "#result", |text| text.contains("confirmed")).await;
    screenshot("shop-2-confirmed.png").await;

    click(&browser, "#buy").await;
    wait_for_text(&browser, "#result", |text| {
        text.contains("already purchased")
    })
    .await;
    screenshot("shop-3-already-purchased.png").await;

    // A shopper sent over by the shop that embeds the page: the token
    // travels in the fragment, is kept, and leaves the address bar.
    click(&browser, "#logout").await;
    browser
        .goto(&format!(
            "{base}/?sale_id={sale_id}#access_token={embedded_shopper}"
        ))
        .await
        .unwrap();
    wait_for_text(&browser, "#link", |text| text == "live").await;
    let address = browser.current_url().await.unwrap();
    assert!(
        address.fragment().is_none(),
        "the token stayed in the address bar: {address}"
    );
    assert!(
        !browser
            .find(Locator::Css("#login"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "a shopper with the shop's token is not asked to sign in"
    );
    click(&browser, "#buy").await;
    wait_for_text(&browser, "#result", |text| text.contains("confirmed")).await;
    screenshot("shop-4-embedded-confirmed.png").await;

    // A sale with a checkout hold: the order waits for a payment, with a
    // countdown; the development payment path pays it.
    let held_sale = open_sale_with(&api, &base, &admin, Some(HOLD_SECONDS), STOCK).await;
    browser
        .goto(&format!("{base}/?sale_id={held_sale}"))
        .await
        .unwrap();
    wait_for_text(&browser, "#link", |text| text == "live").await;
    click(&browser, "#buy").await;
    wait_for_text(&browser, "#result", |text| text.contains("held for you")).await;
    wait_for_text(&browser, "#pay-by", |text| {
        text.starts_with("pay within 00:00:")
    })
    .await;
    screenshot("shop-5-awaiting-payment.png").await;
    click(&browser, "#pay").await;
    wait_for_text(&browser, "#result", |text| text == "Paid. It's yours!").await;
    screenshot("shop-6-paid.png").await;

    // Another shopper lets the hold run out: the page says so when the
    // sweep expires it (the hold, then the 2 s grace, then a sweep).
    // A fresh page, as a second shopper would open it (signing in again
    // on the same page raced the first shopper's stream, closing).
    click(&browser, "#logout").await;
    browser
        .goto(&format!("{base}/?sale_id={held_sale}"))
        .await
        .unwrap();
    sign_in(
        &browser,
        &format!("late-{}@browser.test", Uuid::now_v7().simple()),
    )
    .await;
    wait_for_text(&browser, "#link", |text| text == "live").await;
    click(&browser, "#buy").await;
    wait_for_text(&browser, "#result", |text| text.contains("held for you")).await;
    wait_for_text(&browser, "#result", |text| text.contains("expired")).await;
    screenshot("shop-7-expired.png").await;

    // A sale of one unit, held by someone who will not pay: the page offers
    // the waitlist, and the unit comes back to the shopper waiting for it.
    let one_unit = open_sale_with(&api, &base, &admin, Some(HOLD_SECONDS), 1).await;
    click(&browser, "#logout").await;
    browser
        .goto(&format!("{base}/?sale_id={one_unit}"))
        .await
        .unwrap();
    sign_in(
        &browser,
        &format!("waiter-{}@browser.test", Uuid::now_v7().simple()),
    )
    .await;
    wait_for_text(&browser, "#link", |text| text == "live").await;
    // The unit goes only once the waiter's page is live: their whole hold
    // is left to join the waitlist in.
    let holder = login(
        &api,
        &base,
        &format!("holder-{}@browser.test", Uuid::now_v7().simple()),
    )
    .await;
    let reply = api
        .post(format!("{base}/api/purchase/attempt"))
        .bearer_auth(&holder)
        .header("idempotency-key", "hold-and-walk-away")
        .json(&json!({ "sale_id": one_unit }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::ACCEPTED);
    wait_for_text(&browser, "#buy", |text| text == "Sold out").await;
    click(&browser, "#waitlist-join").await;
    wait_for_text(&browser, "#waitlist-place", |text| {
        text.starts_with("You are number 1 of 1")
    })
    .await;
    screenshot("shop-8-waitlist.png").await;
    wait_for_text(&browser, "#result", |text| text.contains("offered to you")).await;
    wait_for_text(&browser, "#pay-by", |text| {
        text.starts_with("pay within 00:00:")
    })
    .await;
    screenshot("shop-9-offered.png").await;
    click(&browser, "#pay").await;
    wait_for_text(&browser, "#result", |text| text == "Paid. It's yours!").await;

    // The dashboard.
    browser
        .goto(&format!("{base}/admin?sale_id={sale_id}"))
        .await
        .unwrap();
    paste_token(&browser, &admin).await;
    wait_for_text(&browser, "#accepted", |text| text == "2").await;
    wait_for_text(&browser, "#link", |text| text == "live").await;

    // A small load: other shoppers buy through the cluster.
    for _ in 0..OTHER_SHOPPERS {
        let token = login(
            &api,
            &base,
            &format!("{}@browser.test", Uuid::now_v7().simple()),
        )
        .await;
        let reply = api
            .post(format!("{base}/api/purchase/attempt"))
            .bearer_auth(&token)
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&json!({ "sale_id": sale_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), reqwest::StatusCode::ACCEPTED);
    }
    let bought = 2 + OTHER_SHOPPERS;
    wait_for_text(&browser, "#accepted", |text| text == bought.to_string()).await;
    wait_for_text(&browser, "#remaining", |text| {
        text == (STOCK - bought).to_string()
    })
    .await;
    wait_for_text(&browser, "#confirmed", |text| text == bought.to_string()).await;
    wait_for_text(&browser, "#pending", |text| text == "0").await;
    wait_for_text(&browser, "[data-rate=accepted]", |text| {
        text.parse::<f64>().is_ok_and(|rate| rate > 0.0)
    })
    .await;
    screenshot("admin-1-after-load.png").await;

    // The controls, seen back through the event stream.
    click(&browser, "#pause").await;
    wait_for_text(&browser, "#state", |text| text == "paused").await;
    click(&browser, "#resume").await;
    wait_for_text(&browser, "#state", |text| text == "active").await;
    let amount = browser.find(Locator::Css("#add-amount")).await.unwrap();
    amount.clear().await.unwrap();
    amount.send_keys("10").await.unwrap();
    click(&browser, "#add-stock").await;
    wait_for_text(&browser, "#remaining", |text| {
        text == (STOCK - bought + 10).to_string()
    })
    .await;
    // Sent under an idempotency key, which the page reuses for its retries
    // after a lost answer (tests/admin_retries.rs: a key adds once).
    let audit: Value = api
        .get(format!(
            "{base}/api/admin/audit?limit=1&target_id={sale_id}"
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let change = &audit["entries"][0];
    assert_eq!(change["action"], "sale.add_stock", "{audit}");
    assert!(change["idempotency_key"].is_string(), "{audit}");
    wait_for_text(&browser, "#latency", |text| text.ends_with(" ms")).await;
    screenshot("admin-2-controls.png").await;

    // The held sale: its holds and payments, and a cancel that asks first.
    browser
        .goto(&format!("{base}/admin?sale_id={held_sale}"))
        .await
        .unwrap();
    wait_for_text(&browser, "#paid", |text| text == "1").await;
    wait_for_text(&browser, "#expired", |text| text == "1").await;
    click(&browser, "#cancel").await;
    wait_for_text(&browser, "#confirm-text", |text| {
        text.starts_with("Cancel the sale now?")
    })
    .await;
    click(&browser, "#confirm-no").await;
    click(&browser, "#end").await;
    screenshot("admin-3-confirm-end.png").await;
    click(&browser, "#confirm-yes").await;
    wait_for_text(&browser, "#state", |text| text == "ended").await;
    screenshot("admin-4-ended.png").await;

    browser.close().await.unwrap();
}

async fn login(api: &reqwest::Client, base: &str, email: &str) -> String {
    let reply = post(
        api,
        &format!("{base}/api/auth/login"),
        None,
        json!({ "email": email }),
    )
    .await;
    reply["token"].as_str().unwrap().to_string()
}

/// A sale open now for an hour, one unit per shopper.
async fn open_sale(api: &reqwest::Client, base: &str, admin: &str) -> String {
    open_sale_with(api, base, admin, None, STOCK).await
}

/// A sale of the page's product, with a checkout hold if given.
async fn open_sale_with(
    api: &reqwest::Client,
    base: &str,
    admin: &str,
    hold_seconds: Option<i64>,
    stock: i64,
) -> String {
    let sku = format!("BROWSER-{}", Uuid::now_v7().simple());
    let product = json!({
        "sku": sku, "name": "Sneaker", "description": "Limited run, one pair each",
        "price": 12_999, "currency": "EUR", "stock": stock + 10,
    });
    let product = post(
        api,
        &format!("{base}/api/admin/products"),
        Some(admin),
        product,
    )
    .await;
    let now = chrono::Utc::now();
    let sale = json!({
        "product_id": product["id"], "price": 4_999, "per_user_limit": 1, "stock": stock,
        "starts_at": now - chrono::Duration::minutes(1),
        "ends_at": now + chrono::Duration::hours(1),
        "hold_seconds": hold_seconds,
    });
    let sale = post(
        api,
        &format!("{base}/api/admin/flash-sales"),
        Some(admin),
        sale,
    )
    .await;
    sale["id"].as_str().unwrap().to_string()
}

/// POSTs JSON and returns the JSON answer; panics on an error status.
async fn post(api: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = api.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status();
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {body}");
    body
}

/// chromedriver on a free port, and a headless Chromium session on it.
async fn start_browser() -> (Chromedriver, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Chromedriver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (scripts/test installs chromium-driver)"),
    );
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1100,1000"],
        }
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..50 {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no browser session: {last_error:?}");
}

/// The shop's development login: an email.
async fn sign_in(browser: &Client, email: &str) {
    fill_login_form(browser, "#email", email).await;
}

/// The dashboard's sign-in: an operator pastes a token.
async fn paste_token(browser: &Client, token: &str) {
    fill_login_form(browser, "#token", token).await;
}

async fn fill_login_form(browser: &Client, field: &str, text: &str) {
    let field = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(field))
        .await
        .unwrap();
    // The form shows once the page's script found no session.
    for _ in 0..100 {
        if field.is_displayed().await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    field.send_keys(text).await.unwrap();
    click(browser, "#login button[type=submit]").await;
}

async fn click(browser: &Client, selector: &str) {
    let element: Element = browser.find(Locator::Css(selector)).await.unwrap();
    // A button is clicked once it is enabled (the page disables it while a
    // purchase is in flight).
    for _ in 0..100 {
        if element.is_enabled().await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    element.click().await.unwrap();
}

/// Waits until the element's text satisfies `accept`; panics with the last
/// text seen.
async fn wait_for_text(browser: &Client, selector: &str, accept: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(element) = browser.find(Locator::Css(selector)).await {
            last = element.text().await.unwrap_or_default();
            if accept(last.trim()) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{selector}: still {last:?} after {WAIT:?}");
}
