//! Structured logs (JSON lines by default) and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Subscriber;
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global `tracing` subscriber, writing to stderr (stdout is
/// left for what a command prints, such as `flashsale-api token`). Call
/// once, first thing in `main`.
pub fn init_logging(settings: &LogSettings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log).map_err(|error| {
        anyhow::anyhow!(
            "invalid configuration: FLASHSALE_LOG {:?}: {error}",
            settings.log
        )
    })?;
    match settings.log_format {
        LogFormat::Json => json_subscriber(filter, std::io::stderr).try_init()?,
        LogFormat::Pretty => tracing_subscriber::registry()
            .with(filter)
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()?,
    }
    Ok(())
}

/// The JSON lines subscriber: each event flattened, with the fields of the
/// span it happened in (a request's id, method and path).
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(filter).with(
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer),
    )
}

/// Latency buckets (seconds) sized for a service that should answer in
/// single-digit milliseconds: fine resolution below 50 ms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide Prometheus recorder. The `metrics` facade is global by
/// design, so it is installed once per process (several test apps in one
/// process share it) and its handle renders `/metrics`.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("latency buckets are a non-empty constant")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, in which case
            // ours simply stays empty; never the case in our binaries.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
