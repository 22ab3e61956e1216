//! The README's tour and its HTTP API examples, run as they are (`curl` and the CLI) against
//! a running store: a reader with a token does from curl what `query` does, and a producer
//! learns the fate of its commands.

use std::path::Path;

use crate::api_support::Api;
use crate::support::nats_url;

/// The shell of the README's fenced block that follows `marker` (the first one after it).
fn block_after(readme: &str, marker: &str) -> String {
    let from = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no {marker}"));
    let rest = &readme[from..];
    let start = rest.find("```sh\n").unwrap() + "```sh\n".len();
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end].to_owned()
}

#[tokio::test]
async fn the_readme_curl_examples_work_as_written() {
    let api = Api::start().await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let binary = env!("CARGO_BIN_EXE_activity-store");
    let tour = block_after(&readme, "## A tour");
    // The tour publishes, then reads: a person types the reads after the store folded the
    // commands; the test waits for that between the two.
    let at = tour.find(" publish ").unwrap();
    let cut = at + tour[at..].find('\n').unwrap() + 1;
    let (publish, reads) = tour.split_at(cut);
    let reads = format!("{reads}\n{}", block_after(&readme, "<!-- api-examples -->"));
    // A folder laid out as `up` leaves it: the env file the examples read.
    let dir = std::env::temp_dir().join(crate::support::unique_name("readme"));
    std::fs::create_dir_all(dir.join(".activity-store")).unwrap();
    std::fs::write(
        dir.join(".activity-store/env"),
        format!(
            "DATABASE_URL={}\nNATS_URL={}\nAPI_URL={}\n",
            api.db.url(),
            nats_url(),
            api.base
        ),
    )
    .unwrap();
    let run = async |script: &str| {
        let out = tokio::process::Command::new("bash")
            .args([
                "-euo",
                "pipefail",
                "-c",
                &script.replace("target/release/activity-store", binary),
            ])
            .current_dir(&dir)
            .env(
                "ACTIVITY_SUBJECT_PREFIX",
                format!("{}.commands", api.prefix),
            )
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    };
    run(publish).await;
    let token = api.token("acme").await;
    let bob = "0193c4d0-0000-7000-8000-000000000004".parse().unwrap();
    assert_eq!(api.settled("acme", &token, bob).await["status"], "refused");
    let ann = "0193c4d0-0000-7000-8000-000000000003".parse().unwrap();
    let position = api.settled("acme", &token, ann).await["position"]
        .as_i64()
        .unwrap();
    api.folded("acme", &token, position).await;
    let stdout = run(&reads).await;
    // The summary, the feed, the search, the days, both command states and the read of
    // one's write all answered.
    for expected in [
        "\"user_id\":\"ann\"",
        "\"activity_type\":\"login\"",
        "\"ip\":\"10.0.0.1\"",
        "\"status\":\"applied\"",
        "\"reason\":\"unknown_user\"",
        "\"events\":1",
    ] {
        assert!(stdout.contains(expected), "{expected} not in:\n{stdout}");
    }
    std::fs::remove_dir_all(Path::new(&dir)).ok();
    api.stop().await;
}
