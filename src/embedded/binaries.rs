//! Finding the server binaries and the unprivileged user to run PostgreSQL as.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use super::EmbeddedError;

/// Finds `name` on `PATH`, then in the places Debian installs it
/// (`/usr/lib/postgresql/<version>/bin`, newest first, and `/usr/sbin`).
pub fn find(name: &'static str, package: &'static str) -> Result<PathBuf, EmbeddedError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(postgres_bin_dirs());
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or(EmbeddedError::MissingBinary {
            binary: name,
            package,
        })
}

fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, p)| p).collect()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The user a PostgreSQL server runs as. PostgreSQL refuses to run as root, so when this
/// process is root the server runs as the `postgres` user that Debian's package creates.
#[derive(Debug, Clone, Copy)]
pub struct ServiceUser {
    /// Its user id.
    pub uid: Uid,
    /// Its primary group id.
    pub gid: Gid,
}

impl ServiceUser {
    /// `None` when this process is not root and runs the server itself.
    pub fn for_postgres() -> Result<Option<ServiceUser>, EmbeddedError> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(EmbeddedError::NoServiceUser)?;
        Ok(Some(ServiceUser {
            uid: user.uid,
            gid: user.gid,
        }))
    }

    /// Gives `path` to this user.
    pub fn own(&self, path: &Path) -> Result<(), EmbeddedError> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| EmbeddedError::io(format!("chown {}", path.display()), e.into()))
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16, EmbeddedError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EmbeddedError::io("find a free loopback port", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_package_to_install() {
        let e = find("no-such-server-binary", "some-package").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`no-such-server-binary` was not found"),
            "{msg}"
        );
        assert!(msg.contains("apt-get install some-package"), "{msg}");
    }

    #[test]
    fn finds_an_executable_on_path() {
        let sh = find("sh", "dash").expect("sh is on PATH");
        assert!(sh.ends_with("sh"));
    }

    #[test]
    fn a_free_port_is_bindable() {
        let port = free_port().unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
