//! The operations listener: `GET /metrics`, `/healthz` and `/readyz`.
//!
//! [`router`] is a plain axum [`Router`], so a public HTTP listener can
//! mount it beside its own routes; [`serve`] runs it alone on the
//! address of `--metrics` (`[metrics] listen`), apart from the public
//! listeners, so scrapes can be firewalled separately.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::relay::Relay;

/// How long `/readyz` waits for the store before it answers 503.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What `prometheus-client` encodes: OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/metrics`, `/healthz` and `/readyz` over `relay`.
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(relay)
}

/// Serves [`router`] on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, relay: Arc<Relay>, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        // A dropped sender is a stop too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(listener, router(relay))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!("metrics listener failed: {e}");
    }
}

async fn metrics(State(relay): State<Arc<Relay>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        relay.metrics().encode(),
    )
}

/// Answers while the process runs: a liveness probe.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when the store answers a cheap query within [`READY_TIMEOUT`],
/// 503 otherwise: a wedged disk or a locked database makes the relay
/// unready without killing it.
async fn readyz(State(relay): State<Arc<Relay>>) -> (StatusCode, String) {
    ready(relay, READY_TIMEOUT).await
}

async fn ready(relay: Arc<Relay>, timeout: Duration) -> (StatusCode, String) {
    let probe = tokio::task::spawn_blocking(move || relay.store().usage().map(|_| ()));
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(Ok(()))) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Ok(Err(e))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store error: {e}\n"),
        ),
        Ok(Err(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store probe panicked\n".to_owned(),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store did not answer within {} ms\n", timeout.as_millis()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;
    use crate::store::memory::MemoryStore;
    use crate::Settings;

    fn relay(store: Arc<MemoryStore>) -> Arc<Relay> {
        Relay::new(
            Settings::default(),
            store,
            Box::new(SeededRandom::new(1)),
            pickup_proto::Instant::from_millis(0),
        )
    }

    #[tokio::test]
    async fn ready_while_the_store_answers_and_not_while_it_hangs() {
        let store = Arc::new(MemoryStore::new());
        let relay = relay(store.clone());
        let (status, body) = ready(relay.clone(), READY_TIMEOUT).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
        let held = store.hold();
        let (status, body) = ready(relay, Duration::from_millis(50)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "store did not answer within 50 ms\n");
        // The probe left waiting on the blocking pool finishes now.
        drop(held);
    }

    #[tokio::test]
    async fn the_router_serves_the_three_paths_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let relay = relay(Arc::new(MemoryStore::new()));
        relay.metrics().upload_started();
        let server = tokio::spawn(serve(listener, relay, stopped));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(request.as_bytes()).await.unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).await.unwrap();
            text
        };
        let bounded = Duration::from_secs(10);
        let health = tokio::time::timeout(bounded, get("/healthz"))
            .await
            .unwrap();
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("\r\n\r\nok\n"),
            "{health}"
        );
        let ready = tokio::time::timeout(bounded, get("/readyz")).await.unwrap();
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        let metrics = tokio::time::timeout(bounded, get("/metrics"))
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!("content-type: {OPENMETRICS}")),
            "{metrics}"
        );
        assert!(
            metrics.contains("\npickup_uploads_started_total 1\n"),
            "{metrics}"
        );
        stop.send(true).unwrap();
        tokio::time::timeout(bounded, server)
            .await
            .unwrap()
            .unwrap();
    }
}
