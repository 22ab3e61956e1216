//! Both HTTP ports close a connection that is slow to send its headers or sits idle, so
//! idle and half-open connections cannot pile up.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api_support::Api;

/// Opens a connection to `addr`, sends `first` and waits for the server to close it;
/// returns how long that took (or None if it stayed open past `patience`).
async fn closed_after(addr: &str, first: &[u8], patience: Duration) -> Option<Duration> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(patience, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_on_both_ports() {
    let api = Api::start().await;
    let api_addr = api.base.trim_start_matches("http://").to_owned();
    let metrics_addr = api.store().base().trim_start_matches("http://").to_owned();
    for (addr, limit) in [(api_addr.as_str(), 10), (metrics_addr.as_str(), 5)] {
        // Half a request line, never finished.
        let slow = closed_after(
            addr,
            b"GET /livez HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(20),
        )
        .await
        .expect("a slow-header connection stays open");
        assert!(slow <= Duration::from_secs(limit + 2), "{addr}: {slow:?}");
        // A finished request, then silence on a keep-alive connection.
        let idle = closed_after(
            addr,
            b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(20),
        )
        .await
        .expect("an idle keep-alive connection stays open");
        assert!(idle <= Duration::from_secs(limit + 2), "{addr}: {idle:?}");
    }
    api.stop().await;
}
