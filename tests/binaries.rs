//! The binaries as operators run them: configuration errors stop startup
//! with a message naming the variable, and SIGTERM stops them cleanly. The
//! worker's process tests are in workers/tests/.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{self, Signal},
    unistd::Pid,
};
use serde_json::json;
use sqlx::PgPool;

const API: &str = env!("CARGO_BIN_EXE_flashsale-api");

fn api_command(pg: &PgPool) -> Command {
    let mut command = Command::new(API);
    command
        .arg("serve")
        .env("FLASHSALE_DATABASE_URL", common::database_url(pg))
        .env("FLASHSALE_REDIS_URL", common::redis_url())
        .env("FLASHSALE_JWT_SECRET", common::JWT_SECRET)
        .env("FLASHSALE_AUTH_MODE", "dev")
        .env("FLASHSALE_BIND", "127.0.0.1:0")
        .env("FLASHSALE_OPERATOR_BIND", "127.0.0.1:0")
        .env(
            "FLASHSALE_REDIS_PREFIX",
            format!("bin-{}", uuid::Uuid::now_v7().simple()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn terminate(child: &Child) {
    let pid = Pid::from_raw(child.id().try_into().unwrap());
    signal::kill(pid, Signal::SIGTERM).expect("SIGTERM sent");
}

/// Waits for the child to exit, killing it and failing after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the child's log (stderr) until a line contains `needle`.
fn wait_for_line(child: &mut Child, needle: &str) -> String {
    use std::io::{BufRead, BufReader};
    let log = child.stderr.as_mut().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(log).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(needle) {
            return line;
        }
    }
    panic!("process ended without logging {needle:?}; it logged:\n{seen}");
}

#[sqlx::test]
async fn a_bad_setting_stops_the_api_at_boot_with_a_message_naming_it(pg: PgPool) {
    let cases = [
        ("FLASHSALE_JWT_SECRET", "short", "FLASHSALE_JWT_SECRET"),
        (
            "FLASHSALE_DEPENDENCY_TIMEOUT_MS",
            "0",
            "FLASHSALE_DEPENDENCY_TIMEOUT_MS",
        ),
        (
            "FLASHSALE_PG_MAX_CONNECTIONS",
            "lots",
            "FLASHSALE_PG_MAX_CONNECTIONS",
        ),
        ("FLASHSALE_REDIS_PREFIX", "a{b}", "FLASHSALE_REDIS_PREFIX"),
        ("FLASHSALE_LOG_FORMAT", "xml", "FLASHSALE_LOG_FORMAT"),
        // oidc mode (the default) needs the shop's provider.
        ("FLASHSALE_AUTH_MODE", "oidc", "FLASHSALE_OIDC_ISSUER"),
    ];
    for (variable, value, named) in cases {
        let output = api_command(&pg).env(variable, value).output().unwrap();
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named),
            "{variable}={value}: message does not name it:\n{stderr}"
        );
    }
    let output = api_command(&pg)
        .env_remove("FLASHSALE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("FLASHSALE_JWT_SECRET"));
    // A shared secret is not a provider's key: HS* is refused at boot.
    let output = api_command(&pg)
        .env("FLASHSALE_AUTH_MODE", "oidc")
        .env("FLASHSALE_OIDC_ISSUER", "https://login.example.com")
        .env("FLASHSALE_OIDC_AUDIENCES", "flashsale")
        .env("FLASHSALE_OIDC_ALGORITHMS", "RS256,HS256")
        .output()
        .unwrap();
    assert!(!output.status.success(), "HS256 was accepted in oidc mode");
    assert!(String::from_utf8_lossy(&output.stderr).contains("FLASHSALE_OIDC_ALGORITHMS"));
}

/// `flashsale-api token`, as an operator runs it from the shell.
fn token_command(pg: &PgPool, args: &[&str]) -> std::process::Output {
    Command::new(API)
        .arg("token")
        .args(args)
        .env("FLASHSALE_DATABASE_URL", common::database_url(pg))
        .env("FLASHSALE_JWT_SECRET", common::JWT_SECRET)
        .output()
        .unwrap()
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_token_command_mints_an_admin_token_from_the_shell_and_nothing_else_does(pg: PgPool) {
    let output = token_command(
        &pg,
        &["--admin", "--email", "Ops@Example.com", "--ttl", "10m"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the token on stdout: {stdout}"
    );
    let app = common::spawn_app(pg.clone()).await;
    let claims = app.tokens.verify(token).unwrap();
    assert_eq!(claims.role, flashsale::domain::Role::Admin);
    assert!(claims.exp - claims.iat <= 600);
    let product = app
        .post(
            "/api/admin/products",
            Some(token),
            json!({ "sku": "OPS-1", "name": "n", "price": 1, "currency": "EUR", "stock": 1 }),
        )
        .await;
    assert_eq!(
        product.status,
        reqwest::StatusCode::CREATED,
        "{}",
        product.body
    );
    let (subject, role): (String, String) =
        sqlx::query_as("select subject, role from users where id = $1")
            .bind(claims.sub)
            .fetch_one(&pg)
            .await
            .unwrap();
    assert_eq!(
        (subject.as_str(), role.as_str()),
        ("ops@example.com", "admin")
    );

    for (args, named) in [
        (vec!["--admin", "--email", "not-an-email"], "--email"),
        (vec!["--email", "ops@example.com", "--ttl", "30d"], "--ttl"),
    ] {
        let output = token_command(&pg, &args);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(named),
            "{args:?}"
        );
    }
    let output = Command::new(API)
        .args(["token", "--admin", "--email", "ops@example.com"])
        .env("FLASHSALE_DATABASE_URL", common::database_url(&pg))
        .env_remove("FLASHSALE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("FLASHSALE_JWT_SECRET"));
}

#[sqlx::test]
async fn the_api_logs_json_and_stops_cleanly_on_sigterm(pg: PgPool) {
    let mut child = api_command(&pg).spawn().unwrap();
    let line = wait_for_line(&mut child, "flashsale-api listening");
    let record: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
    assert_eq!(record["level"], "INFO");
    assert!(!line.contains(common::JWT_SECRET), "the secret was logged");
    terminate(&child);
    let status = exit_within(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
}

/// An open event stream must not hold a node's shutdown for the whole grace
/// period: the stream ends (the browser reconnects to another node) and the
/// process exits at once.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn sigterm_ends_open_event_streams_and_the_api_exits_promptly(pg: PgPool) {
    let mut node = KilledOnDrop(
        api_command(&pg)
            .env("FLASHSALE_SHUTDOWN_GRACE_SECS", "60")
            .spawn()
            .unwrap(),
    );
    let child = &mut node.0;
    let line = wait_for_line(child, "flashsale-api listening");
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    let address = record["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {line}"));
    let base = format!("http://{address}");
    let client = common::http_client();
    // "listening" comes before the pools have connected; on a loaded
    // machine the first PostgreSQL connection can take longer than the
    // dependency bound, so the node is asked for readiness first.
    common::eventually(Duration::from_secs(15), "the node is ready", || async {
        client
            .get(format!("{base}/api/health/ready"))
            .send()
            .await
            .is_ok_and(|reply| reply.status().is_success())
    })
    .await;
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut request = client.post(format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let reply = request.send().await.unwrap().error_for_status().unwrap();
            reply.json::<serde_json::Value>().await.unwrap()
        }
    };
    let minted = token_command(&pg, &["--admin", "--email", common::ADMIN_EMAIL]);
    assert!(minted.status.success());
    let minted = String::from_utf8(minted.stdout).unwrap();
    let admin = minted.trim();
    let sku = format!("SKU-{}", uuid::Uuid::now_v7().simple());
    let product = post(
        "/api/admin/products",
        Some(admin),
        json!({ "sku": sku, "name": "Sneaker", "price": 100, "currency": "EUR", "stock": 5 }),
    )
    .await;
    let sale = post(
        "/api/admin/flash-sales",
        Some(admin),
        common::TestApp::sale_body(product["id"].as_str().unwrap().parse().unwrap(), 5),
    )
    .await;
    let stream = client
        .get(format!(
            "{base}/api/flash-sale/events?sale_id={}",
            sale["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let mut events = common::sse::EventReader::new(stream);
    events.next_named("sale", Duration::from_secs(5)).await;

    terminate(child);
    let started = std::time::Instant::now();
    while events.next(Duration::from_secs(10)).await.is_some() {}
    let status = exit_within(child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stream held the shutdown for {:?}",
        started.elapsed()
    );
}

/// A child process that a failing test does not leave running.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
