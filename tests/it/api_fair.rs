//! Fair shares: one tenant over its share of long-polls or position waiters gets 429 with
//! `Retry-After`, and another tenant's requests are answered as if it were quiet.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::api_support::{Api, register, tenant};

#[tokio::test]
async fn a_tenant_over_its_share_gets_429_and_another_is_served() {
    let api = Api::start().await;
    let acme = api.token("acme").await;
    let globex = api.token("globex").await;
    for (t, token) in [("acme", &acme), ("globex", &globex)] {
        api.apply(t, token, vec![tenant(t), register(t, "u1")])
            .await;
    }
    let never = uuid::Uuid::new_v4();

    // 24 long-polls from acme at once: 16 are its share, 8 are refused at once.
    let polls = (0..24).map(|_| {
        let path = format!("/v1/tenants/acme/commands/{never}?wait_ms=1500");
        let api = &api;
        let acme = &acme;
        async move { api.get(&path, Some(acme)).await }
    });
    let theirs = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let a = api
            .get(
                &format!("/v1/tenants/globex/commands/{never}?wait_ms=200"),
                Some(&globex),
            )
            .await;
        (a, started.elapsed())
    };
    let (answers, (globex_poll, took)) = tokio::join!(join_all(polls), theirs);
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        refused.len(),
        8,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for a in &refused {
        assert_eq!(a.header("retry-after").as_deref(), Some("1"));
        assert_eq!(a.json()["error"]["code"], "too_many_requests");
    }
    assert!(answers.iter().all(|a| a.status == 200 || a.status == 429));
    assert_eq!(globex_poll.status, 200, "{}", globex_poll.text);
    assert!(took < Duration::from_secs(1), "globex waited {took:?}");

    // 300 position waiters from acme: 256 are its share; globex's own wait is served.
    let waits = (0..300).map(|_| {
        let api = &api;
        let acme = &acme;
        async move {
            api.get_with(
                "/v1/tenants/acme/daily",
                Some(acme),
                &[("X-Activity-Min-Position", "999999999")],
            )
            .await
        }
    });
    let theirs = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        api.get_with(
            "/v1/tenants/globex/daily",
            Some(&globex),
            &[("X-Activity-Min-Position", "1")],
        )
        .await
    };
    let (answers, globex_read) = tokio::join!(join_all(waits), theirs);
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(
        refused,
        300 - 256,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(globex_read.status, 200, "{}", globex_read.text);
    api.stop().await;
}
