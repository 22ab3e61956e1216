//! The API is a supervised role: its heartbeat is a request to itself, so `/livez` says
//! `ok` for an idle API that answers, and `/readyz` names it.

use std::time::Duration;

use crate::api_support::Api;

#[tokio::test]
async fn an_idle_api_that_answers_is_alive_and_ready() {
    let api = Api::start().await;
    // Longer than the liveness timeout (2 s here) with no request from outside.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let (status, body) = api.store().get("/livez").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = api.store().get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    api.stop().await;
}
