//! Connecting to NATS as the store. A URL may carry credentials
//! (`nats://user:password@host:port`, as `up` writes them); async-nats does not send those
//! by itself, so they are taken out of the URL and sent as the user and password.
//!
//! The store's replies (pull deliveries of every tenant's commands, `STREAM.MSG.GET`
//! answers, cache reads) come to inboxes under [`STORE_INBOX`], not the default `_INBOX`
//! that producers' clients use and may subscribe to: a producer allowed `_INBOX.>` for its
//! own publish acks sees none of them.

/// The prefix of the store's reply subjects.
pub const STORE_INBOX: &str = "_STORE_INBOX";

/// Connect options for `url` (its credentials set, if it has any) and the URL without them.
pub fn options(url: &str) -> (async_nats::ConnectOptions, String) {
    let (options, bare) = credentials(url);
    (options.custom_inbox_prefix(STORE_INBOX), bare)
}

/// `url` without its password, to show in messages.
pub fn redacted(url: &str) -> String {
    credentials(url).1
}

fn credentials(url: &str) -> (async_nats::ConnectOptions, String) {
    if let Some((scheme, rest)) = url.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some((userinfo, host)) = rest[..host_end].rsplit_once('@') {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let bare = format!("{scheme}://{host}{}", &rest[host_end..]);
            let options = async_nats::ConnectOptions::with_user_and_password(
                user.to_owned(),
                password.to_owned(),
            );
            return (options, bare);
        }
    }
    (async_nats::ConnectOptions::new(), url.to_owned())
}

/// Connects to `url`, with the credentials it carries.
pub async fn connect(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let (options, bare) = options(url);
    options.connect(servers(&bare).as_slice()).await
}

/// The servers of a URL that lists several, comma-separated (a cluster's seeds:
/// `nats://a:4222,nats://b:4222`); the client tries them all and learns the rest.
pub fn servers(bare: &str) -> Vec<&str> {
    bare.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::options;

    #[test]
    fn credentials_leave_the_url() {
        let (_, bare) = options("nats://producer:s3cret@127.0.0.1:4222");
        assert_eq!(bare, "nats://127.0.0.1:4222");
        let (_, bare) = options("nats://127.0.0.1:4222");
        assert_eq!(bare, "nats://127.0.0.1:4222");
        let (_, bare) = options("tls://a:b@host:1,host2:2");
        assert_eq!(bare, "tls://host:1,host2:2");
        assert_eq!(
            super::servers("nats://a:1, nats://b:2,"),
            ["nats://a:1", "nats://b:2"]
        );
    }
}
