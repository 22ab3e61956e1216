use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;

#[test]
fn tenant_slugs() {
    for ok in ["a", "acme", "0", "acme-corp_2", &"a".repeat(63)] {
        assert!(tenant_slug("tenant", ok).is_ok(), "{ok} should pass");
    }
    for bad in ["", "-acme", "_a", "Acme", "ac me", "acmé", &"a".repeat(64)] {
        let r = tenant_slug("tenant", bad).unwrap_err();
        assert_eq!(
            (r.reason, r.field),
            (Reason::InvalidField, Some("tenant")),
            "{bad}"
        );
    }
}

#[test]
fn user_ids_are_1_to_128_chars() {
    assert!(user_id("u").is_ok());
    assert!(
        user_id(&"é".repeat(128)).is_ok(),
        "counted in characters, not bytes"
    );
    assert_eq!(user_id("").unwrap_err().field, Some("user"));
    assert!(
        user_id(&"u".repeat(129))
            .unwrap_err()
            .message
            .contains("1-128")
    );
    assert!(
        user_id("a\0b").is_err(),
        "NUL is refused by PostgreSQL text"
    );
}

#[test]
fn emails() {
    for ok in ["a@b.co", "first.last+tag@sub.example.org", "ü@exämple.de"] {
        assert!(email(ok).is_ok(), "{ok} should pass");
    }
    for bad in [
        "", "plain", "a@b", "a@@b.co", "a@b@c.co", "@b.co", "a@.co", "a@b.", "a b@c.co", "a@b..co",
    ] {
        let r = email(bad).unwrap_err();
        assert_eq!(
            (r.reason, r.field),
            (Reason::InvalidField, Some("email")),
            "{bad}"
        );
    }
    let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
    assert!(email(&long).unwrap_err().message.contains("254"));
    assert!(email(&format!("{}@b.co", "a".repeat(65))).is_err());
}

#[test]
fn activity_types() {
    for ok in ["login", "page.view", "cart:add", "a-b_c", &"x".repeat(50)] {
        assert!(activity_type(ok).is_ok(), "{ok}");
    }
    for bad in ["", "Login", "page view", "ü", &"x".repeat(51)] {
        assert_eq!(
            activity_type(bad).unwrap_err().field,
            Some("activity_type"),
            "{bad}"
        );
    }
}

#[test]
fn timestamps_normalise_to_utc() {
    let cases = [
        ("2025-01-15T10:30:00Z", "2025-01-15T10:30:00+00:00"),
        ("2025-01-20 14:45:00", "2025-01-20T14:45:00+00:00"),
        ("2025-01-15T12:30:00+02:00", "2025-01-15T10:30:00+00:00"),
        (
            "2025-01-15T10:30:00.123456-05:00",
            "2025-01-15T15:30:00.123456+00:00",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(timestamp(input).unwrap().to_rfc3339(), want, "{input}");
    }
    for leap in ["2016-12-31T23:59:60Z", "2016-12-31 23:59:60"] {
        let r = timestamp(leap).unwrap_err();
        assert!(r.message.contains("leap second"), "{leap}: {}", r.message);
    }
    for bad in [
        "",
        "2025-01-15",
        "2025-13-01 00:00:00",
        "15/01/2025 10:30",
        "2025-01-15T10:30:00",
    ] {
        assert_eq!(
            timestamp(bad).unwrap_err().field,
            Some("occurred_at"),
            "{bad}"
        );
    }
}

#[test]
fn window_edges() {
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let w = TimeWindow::default();
    let (earliest, latest) = w.bounds(now);
    assert!(within_window(earliest, now, &w).is_ok());
    assert!(within_window(latest, now, &w).is_ok());
    let early = within_window(earliest - Duration::seconds(1), now, &w).unwrap_err();
    assert_eq!(
        (early.reason, early.field),
        (Reason::OutOfRange, Some("occurred_at"))
    );
    assert!(within_window(latest + Duration::seconds(1), now, &w).is_err());
    assert!(earliest < Utc.with_ymd_and_hms(2021, 6, 2, 0, 0, 0).unwrap());
}

#[test]
fn metadata_rules() {
    assert!(metadata(json!({"a": {"b": [1, "ü"]}})).is_ok());
    assert_eq!(
        metadata(json!([1])).unwrap_err().reason,
        Reason::InvalidField
    );
    assert_eq!(metadata(json!("x")).unwrap_err().field, Some("metadata"));
    let big = json!({ "k": "x".repeat(MAX_METADATA_BYTES) });
    assert_eq!(metadata(big).unwrap_err().reason, Reason::TooLarge);
    let just_fits = json!({ "k": "x".repeat(MAX_METADATA_BYTES - 8) });
    assert!(
        metadata(just_fits).is_ok(),
        "16 KiB including braces and key"
    );
    assert!(metadata(json!({"deep": [{"s": "a\u{0}"}]})).is_err());
    assert!(metadata(json!({"k\u{0}": 1})).is_err());
}

#[test]
fn a_new_user_id_is_one_spelling_of_itself() {
    for ok in ["ann", "josé", "用户-7", "ann.o'neil@x", "Ann"] {
        assert!(new_user_id(ok).is_ok(), "{ok}");
    }
    for (bad, why) in [
        ("jose\u{301}", "NFKC"),           // decomposed é
        ("ａｎｎ", "NFKC"),                // fullwidth letters
        ("ﬁle", "NFKC"),                   // a ligature
        ("an\u{200b}n", "format"),         // zero-width space
        ("ann\u{202e}", "format"),         // right-to-left override
        ("\u{2066}ann\u{2069}", "format"), // bidi isolates
        ("ann\u{feff}", "format"),         // byte-order mark
        ("an\u{ad}n", "format"),           // soft hyphen
    ] {
        let r = new_user_id(bad).unwrap_err();
        assert_eq!(
            (r.reason, r.field),
            (Reason::InvalidField, Some("user")),
            "{bad:?}"
        );
        assert!(r.message.contains(why), "{bad:?}: {}", r.message);
    }
}
