//! The worker binary as operators run it.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::PgPool;

const WORKER: &str = env!("CARGO_BIN_EXE_flashsale-worker");

fn redis_url() -> String {
    std::env::var("FLASHSALE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379".into())
}

fn worker(pg: &PgPool) -> Command {
    let options = pg.connect_options();
    let url = format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    );
    let mut command = Command::new(WORKER);
    command
        .env("FLASHSALE_DATABASE_URL", url)
        .env("FLASHSALE_REDIS_URL", redis_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the worker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[sqlx::test(migrations = false)]
async fn the_worker_refuses_a_database_without_migrations(pg: PgPool) {
    sqlx::query(
        "create table _sqlx_migrations (version bigint primary key, success boolean not null)",
    )
    .execute(&pg)
    .await
    .unwrap();
    let output = worker(&pg).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("flashsale-api migrate"),
        "the message does not say what to run:\n{stderr}"
    );
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_worker_connects_idles_and_stops_cleanly_on_sigterm(pg: PgPool) {
    let mut child = worker(&pg).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let connected = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("flashsale-worker connected"));
    assert!(connected, "the worker never logged that it connected");
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = exit_within(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
}
