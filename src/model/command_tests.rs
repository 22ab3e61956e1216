use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const ID: &str = "6f1d3c1e-8f4a-4a57-9d1e-1f0b2c3d4e5f";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 1, 12, 0, 0).unwrap()
}

fn run(v: Value) -> Result<Command, Rejection> {
    decode(
        &serde_json::to_vec(&v).unwrap(),
        now(),
        &TimeWindow::default(),
    )
}

fn rejected(v: Value) -> (Reason, Option<&'static str>) {
    let r = run(v).unwrap_err();
    (r.reason, r.field)
}

fn activity(extra: Value) -> Value {
    let mut base = json!({"type": "record_activity", "id": ID, "tenant": "acme",
        "user": "u1", "activity_type": "login"});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn decodes_each_command_type() {
    let cases = [
        (
            json!({"type": "create_tenant", "id": ID, "tenant": "acme", "name": "Acme"}),
            CommandBody::CreateTenant {
                name: "Acme".into(),
            },
        ),
        (
            json!({"type": "register_user", "id": ID, "tenant": "acme", "user": "u1", "email": "u@x.io"}),
            CommandBody::RegisterUser {
                user: "u1".into(),
                email: "u@x.io".into(),
                name: None,
            },
        ),
        (
            json!({"type": "change_user_email", "id": ID, "tenant": "acme", "user": "u1", "email": "v@x.io"}),
            CommandBody::ChangeUserEmail {
                user: "u1".into(),
                email: "v@x.io".into(),
            },
        ),
        (
            json!({"type": "forget_user", "id": ID, "tenant": "acme", "user": "u1"}),
            CommandBody::ForgetUser { user: "u1".into() },
        ),
    ];
    for (input, body) in cases {
        let c = run(input).unwrap();
        assert_eq!(
            (c.id.to_string().as_str(), c.tenant.as_str(), &c.body),
            (ID, "acme", &body)
        );
        assert_eq!(c.body.type_name(), body.type_name());
    }
}

#[test]
fn activity_defaults_to_received_time_and_empty_metadata() {
    let c = run(activity(json!({}))).unwrap();
    let CommandBody::RecordActivity {
        occurred_at,
        metadata,
        ..
    } = c.body
    else {
        panic!()
    };
    assert_eq!(occurred_at, now());
    assert!(metadata.is_empty());
}

#[test]
fn activity_time_is_normalised_to_utc() {
    for (input, want) in [
        ("2025-01-15T10:30:00Z", "2025-01-15T10:30:00+00:00"),
        ("2025-01-20 14:45:00", "2025-01-20T14:45:00+00:00"),
    ] {
        let c = run(activity(json!({"occurred_at": input}))).unwrap();
        let CommandBody::RecordActivity { occurred_at, .. } = c.body else {
            panic!()
        };
        assert_eq!(occurred_at.to_rfc3339(), want);
    }
}

#[test]
fn malformed_bytes() {
    let window = TimeWindow::default();
    for bytes in [
        &b"not json"[..],
        b"",
        b"\xff\xfe{}",
        b"[1,2]",
        b"\"s\"",
        b"{\"type\": ",
    ] {
        let r = decode(bytes, now(), &window).unwrap_err();
        assert_eq!(r.reason, Reason::Malformed, "{bytes:?}");
    }
}

#[test]
fn unknown_type() {
    let r = run(json!({"type": "delete_everything", "id": ID, "tenant": "acme"})).unwrap_err();
    assert_eq!((r.reason, r.field), (Reason::UnknownType, Some("type")));
    assert!(r.message.contains("delete_everything"));
}

#[test]
fn invalid_fields_name_the_field() {
    let cases = [
        (json!({"id": ID, "tenant": "acme"}), "type"),
        (json!({"type": 7, "id": ID, "tenant": "acme"}), "type"),
        (
            json!({"type": "forget_user", "tenant": "acme", "user": "u"}),
            "id",
        ),
        (
            json!({"type": "forget_user", "id": "nope", "tenant": "acme", "user": "u"}),
            "id",
        ),
        (
            json!({"type": "forget_user", "id": ID, "user": "u"}),
            "tenant",
        ),
        (
            json!({"type": "forget_user", "id": ID, "tenant": "Acme!", "user": "u"}),
            "tenant",
        ),
        (
            json!({"type": "forget_user", "id": ID, "tenant": "acme"}),
            "user",
        ),
        (
            json!({"type": "forget_user", "id": ID, "tenant": "acme", "user": 5}),
            "user",
        ),
        (
            json!({"type": "create_tenant", "id": ID, "tenant": "acme"}),
            "name",
        ),
        (
            json!({"type": "register_user", "id": ID, "tenant": "acme", "user": "u", "email": "x"}),
            "email",
        ),
        (
            json!({"type": "register_user", "id": ID, "tenant": "acme", "user": "u", "email": "u@x.io", "name": ""}),
            "name",
        ),
        (
            activity(json!({"activity_type": "Bad Type"})),
            "activity_type",
        ),
        (activity(json!({"occurred_at": "yesterday"})), "occurred_at"),
        (activity(json!({"occurred_at": 1700000000})), "occurred_at"),
        (activity(json!({"metadata": [1, 2]})), "metadata"),
    ];
    for (input, field) in cases {
        let r = run(input.clone()).unwrap_err();
        assert_eq!(
            (r.reason, r.field),
            (Reason::InvalidField, Some(field)),
            "{input}"
        );
        assert!(
            r.message.contains(field),
            "message `{}` names `{field}`",
            r.message
        );
    }
}

#[test]
fn unknown_fields_are_refused_not_dropped() {
    let r = run(activity(json!({"ocurred_at": "2025-01-15T10:30:00Z"}))).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidField);
    assert!(r.message.contains("ocurred_at"), "{}", r.message);
}

#[test]
fn out_of_range_times() {
    assert_eq!(
        rejected(activity(json!({"occurred_at": "2019-01-01T00:00:00Z"}))),
        (Reason::OutOfRange, Some("occurred_at"))
    );
    assert_eq!(
        rejected(activity(json!({"occurred_at": "2025-02-02T12:00:01Z"}))),
        (Reason::OutOfRange, Some("occurred_at"))
    );
    let narrow = TimeWindow {
        past: chrono::Duration::days(1),
        future: chrono::Duration::zero(),
    };
    let bytes =
        serde_json::to_vec(&activity(json!({"occurred_at": "2025-01-15T10:30:00Z"}))).unwrap();
    assert_eq!(
        decode(&bytes, now(), &narrow).unwrap_err().reason,
        Reason::OutOfRange
    );
}

#[test]
fn too_large() {
    let big = activity(json!({"metadata": {"blob": "x".repeat(17 * 1024)}}));
    assert_eq!(rejected(big), (Reason::TooLarge, Some("metadata")));
    let mut bytes = serde_json::to_vec(&activity(json!({}))).unwrap();
    bytes.extend(std::iter::repeat_n(b' ', fields::MAX_COMMAND_BYTES));
    let r = decode(&bytes, now(), &TimeWindow::default()).unwrap_err();
    assert_eq!((r.reason, r.field), (Reason::TooLarge, None));
}

#[test]
fn nul_characters_that_postgres_refuses_are_invalid() {
    assert_eq!(
        rejected(activity(json!({"user": "a\u{0}b"}))),
        (Reason::InvalidField, Some("user"))
    );
    assert_eq!(
        rejected(activity(json!({"metadata": {"k": "a\u{0}"}}))),
        (Reason::InvalidField, Some("metadata"))
    );
}

proptest! {
    #[test]
    fn decoding_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, now(), &TimeWindow::default());
    }

    /// Each type with only the fields it accepts, values biased towards valid ones, so that
    /// every field rule is reached, not only the unknown-field check.
    #[test]
    fn decoding_never_panics_and_accepts_only_valid_fields(
        kind in prop::sample::select(vec!["create_tenant", "register_user", "change_user_email",
            "record_activity", "forget_user"]),
        tenant in prop_oneof!["[a-z0-9][a-z0-9_-]{0,8}", "\\PC{0,70}"],
        user in prop_oneof!["[a-zA-Z0-9]{1,12}", "\\PC{0,140}"],
        email in prop_oneof!["[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,4}", "\\PC{0,40}"],
        activity_type in prop_oneof!["[a-z.:_-]{1,12}", "\\PC{0,60}"],
        at in prop_oneof![Just("2025-01-20 14:45:00".to_owned()), "\\PC{0,30}"],
    ) {
        let mut v = json!({"type": kind, "id": ID, "tenant": tenant});
        for field in allowed_fields(kind).unwrap() {
            v[*field] = match *field {
                "user" => json!(user),
                "email" => json!(email),
                "activity_type" => json!(activity_type),
                "occurred_at" => json!(at),
                "metadata" => json!({"k": user}),
                _ => json!(user), // name
            };
        }
        if let Ok(c) = decode(&serde_json::to_vec(&v).unwrap(), now(), &TimeWindow::default()) {
            prop_assert_eq!(c.body.type_name(), kind);
            prop_assert_eq!(c.tenant, tenant);
            if let Some(u) = c.body.user() {
                prop_assert_eq!(u, user.as_str());
            }
        }
    }
}

#[test]
fn a_command_may_name_the_contract_version_it_was_written_for() {
    let plain = run(activity(json!({}))).unwrap();
    let versioned = run(activity(json!({"version": 1}))).unwrap();
    assert_eq!(
        plain, versioned,
        "version 1 is the contract without a version"
    );
}

#[test]
fn a_contract_version_the_store_does_not_know_is_refused_never_guessed() {
    for v in [json!(2), json!(0), json!(99_999_999_999_u64)] {
        let r = run(activity(json!({"version": v}))).unwrap_err();
        assert_eq!(
            (r.reason, r.field),
            (Reason::UnsupportedVersion, Some("version")),
            "{v}"
        );
        assert!(r.message.contains("supports version 1"), "{}", r.message);
    }
    // Known before the type: a later version may have types this one does not.
    let future = json!({"type": "rename_tenant", "id": ID, "tenant": "acme", "version": 2});
    assert_eq!(
        rejected(future),
        (Reason::UnsupportedVersion, Some("version"))
    );
    for v in [json!("1"), json!(1.5), json!(-1), json!(null), json!([1])] {
        assert_eq!(
            rejected(activity(json!({"version": v}))),
            (Reason::InvalidField, Some("version")),
            "{v}"
        );
    }
}
