//! A NATS client that writes the protocol by hand, so tests can put any byte in a subject,
//! a header or a body, as a hostile producer can.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawNats {
    conn: TcpStream,
    buf: Vec<u8>,
    next_inbox: u64,
}

impl RawNats {
    pub async fn connect(url: &str) -> RawNats {
        let addr = url.trim_start_matches("nats://");
        let mut conn = TcpStream::connect(addr).await.expect("connect to NATS");
        conn.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\nPING\r\n",
        )
        .await
        .unwrap();
        let mut raw = RawNats {
            conn,
            buf: Vec::new(),
            next_inbox: 0,
        };
        raw.read_until_contains(b"PONG\r\n").await;
        raw.buf.clear();
        raw
    }

    async fn read_until_contains(&mut self, needle: &[u8]) {
        while !self.buf.windows(needle.len()).any(|w| w == needle) {
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.conn.read(&mut chunk),
        )
        .await
        .expect("NATS answered in time")
        .unwrap();
        assert!(n > 0, "NATS closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Publishes `body` (with `headers`, the raw header block without its version line, if
    /// given) on `subject` and waits for JetStream's answer: the stream sequence it stored
    /// the message at, or `None` when nothing stored it (no stream listens on that subject,
    /// or the stream refused it).
    pub async fn publish(
        &mut self,
        subject: &[u8],
        headers: Option<&[u8]>,
        body: &[u8],
    ) -> Option<u64> {
        self.next_inbox += 1;
        let inbox = format!("_INBOX.raw{}", self.next_inbox);
        let mut out = format!("SUB {inbox} {}\r\n", self.next_inbox).into_bytes();
        match headers {
            None => {
                out.extend_from_slice(b"PUB ");
                out.extend_from_slice(subject);
                out.extend_from_slice(format!(" {inbox} {}\r\n", body.len()).as_bytes());
            }
            Some(h) => {
                let mut block = b"NATS/1.0\r\n".to_vec();
                block.extend_from_slice(h);
                block.extend_from_slice(b"\r\n");
                out.extend_from_slice(b"HPUB ");
                out.extend_from_slice(subject);
                out.extend_from_slice(
                    format!(" {inbox} {} {}\r\n", block.len(), block.len() + body.len()).as_bytes(),
                );
                out.extend_from_slice(&block);
            }
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\nPING\r\n");
        self.conn.write_all(&out).await.unwrap();
        // The answer comes to the inbox: a JSON ack, an error, or a 503 no-responders status.
        let payload = self.read_message(&inbox).await;
        let reply: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        if reply.get("error").is_some() {
            return None;
        }
        reply.get("seq").and_then(|s| s.as_u64())
    }

    /// The payload of the next message on `inbox` (empty for a status without a body).
    async fn read_message(&mut self, inbox: &str) -> Vec<u8> {
        let marker = format!(" {inbox} ").into_bytes();
        self.read_until_contains(&marker).await;
        let at = self
            .buf
            .windows(marker.len())
            .position(|w| w == marker.as_slice())
            .unwrap();
        loop {
            let Some(line_end) = self.buf[at..].windows(2).position(|w| w == b"\r\n") else {
                self.read_more().await;
                continue;
            };
            let line_end = at + line_end;
            let line = String::from_utf8_lossy(&self.buf[at..line_end]).into_owned();
            let numbers: Vec<usize> = line.split(' ').filter_map(|t| t.parse().ok()).collect();
            // MSG <inbox> <sid> <len> or HMSG <inbox> <sid> <header len> <total len>.
            let (header_len, total) = match numbers.as_slice() {
                [_, h, t] => (*h, *t),
                [_, t] => (0, *t),
                other => panic!("unexpected reply line {line:?} {other:?}"),
            };
            let body_start = line_end + 2;
            if self.buf.len() < body_start + total + 2 {
                self.read_more().await;
                continue;
            }
            let payload = self.buf[body_start + header_len..body_start + total].to_vec();
            self.buf.clear();
            return payload;
        }
    }
}
