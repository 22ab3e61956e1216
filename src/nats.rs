//! Connecting to NATS. A URL may carry credentials (`nats://user:password@host:port`, as
//! `up` writes them); async-nats does not send those by itself, so they are taken out of the
//! URL and sent as the user and password.

/// Connect options for `url` (its credentials set, if it has any) and the URL without them.
pub fn options(url: &str) -> (async_nats::ConnectOptions, String) {
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
    options.connect(bare).await
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
    }
}
