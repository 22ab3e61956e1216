use chrono::TimeZone;
use serde_json::{Value, json};

use super::*;
use crate::model::{EventType, TimeWindow, decode};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 1, 12, 0, 0).unwrap()
}

fn cmd(v: Value) -> Command {
    let mut v = v;
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    decode(
        &serde_json::to_vec(&v).unwrap(),
        now(),
        &TimeWindow::default(),
    )
    .unwrap()
}

fn run(view: &mut RegistryView, v: Value) -> Result<NewEvent, Rejection> {
    view.decide(cmd(v), now(), Lineage::default())
}

fn reason(view: &mut RegistryView, v: Value) -> Reason {
    run(view, v).unwrap_err().reason
}

fn create(t: &str) -> Value {
    json!({"type": "create_tenant", "tenant": t, "name": "T"})
}
fn register(t: &str, u: &str, email: &str) -> Value {
    json!({"type": "register_user", "tenant": t, "user": u, "email": email})
}
fn activity(t: &str, u: &str) -> Value {
    json!({"type": "record_activity", "tenant": t, "user": u, "activity_type": "login"})
}
fn forget(t: &str, u: &str) -> Value {
    json!({"type": "forget_user", "tenant": t, "user": u})
}
fn email(t: &str, u: &str, e: &str) -> Value {
    json!({"type": "change_user_email", "tenant": t, "user": u, "email": e})
}

#[test]
fn a_new_tenant_its_user_and_an_activity_in_one_batch() {
    let mut view = RegistryView::default();
    let kinds: Vec<EventType> = [
        create("acme"),
        register("acme", "u1", "u@x.io"),
        activity("acme", "u1"),
    ]
    .into_iter()
    .map(|v| run(&mut view, v).unwrap().event_type)
    .collect();
    assert_eq!(
        kinds,
        [
            EventType::TenantCreated,
            EventType::UserRegistered,
            EventType::ActivityRecorded
        ]
    );
    assert_eq!(view.new_tenants(), [("acme".to_owned(), "T".to_owned())]);
    let change = &view.user_changes()[&("acme".to_owned(), "u1".to_owned())];
    assert_eq!(
        change,
        &UserChange::Register(UserRow {
            email: "u@x.io".into(),
            name: None
        })
    );
}

#[test]
fn each_registry_reason_code() {
    let mut view = RegistryView::new(["acme".to_owned()], [("acme".to_owned(), "u1".to_owned())]);
    assert_eq!(reason(&mut view, create("acme")), Reason::TenantExists);
    assert_eq!(
        reason(&mut view, activity("nope", "u1")),
        Reason::UnknownTenant
    );
    assert_eq!(
        reason(&mut view, register("nope", "u1", "u@x.io")),
        Reason::UnknownTenant
    );
    assert_eq!(
        reason(&mut view, register("acme", "u1", "u@x.io")),
        Reason::UserExists
    );
    for v in [
        activity("acme", "u2"),
        email("acme", "u2", "a@b.co"),
        forget("acme", "u2"),
    ] {
        assert_eq!(reason(&mut view, v), Reason::UnknownUser);
    }
    let r = run(&mut view, activity("acme", "ghost")).unwrap_err();
    assert_eq!(r.field, Some("user"));
    assert!(
        r.message.contains("`ghost` is not registered in `acme`"),
        "{}",
        r.message
    );
    assert!(
        view.user_changes().is_empty() && view.new_tenants().is_empty(),
        "rejections change nothing"
    );
}

#[test]
fn a_forgotten_user_is_unknown_until_registered_again() {
    let mut view = RegistryView::new(["acme".to_owned()], [("acme".to_owned(), "u1".to_owned())]);
    run(&mut view, forget("acme", "u1")).unwrap();
    assert_eq!(
        reason(&mut view, activity("acme", "u1")),
        Reason::UnknownUser
    );
    assert_eq!(
        view.user_changes()[&("acme".to_owned(), "u1".to_owned())],
        UserChange::Forget
    );
    run(&mut view, register("acme", "u1", "new@x.io")).unwrap();
    run(&mut view, activity("acme", "u1")).unwrap();
    let change = &view.user_changes()[&("acme".to_owned(), "u1".to_owned())];
    assert_eq!(
        change,
        &UserChange::Register(UserRow {
            email: "new@x.io".into(),
            name: None
        })
    );
}

#[test]
fn email_changes_fold_into_the_net_change() {
    let mut view = RegistryView::new(["acme".to_owned()], [("acme".to_owned(), "old".to_owned())]);
    run(&mut view, email("acme", "old", "a@x.io")).unwrap();
    run(&mut view, email("acme", "old", "b@x.io")).unwrap();
    run(&mut view, register("acme", "new", "n@x.io")).unwrap();
    run(&mut view, email("acme", "new", "m@x.io")).unwrap();
    let changes = view.user_changes();
    assert_eq!(
        changes[&("acme".to_owned(), "old".to_owned())],
        UserChange::Email("b@x.io".into())
    );
    assert_eq!(
        changes[&("acme".to_owned(), "new".to_owned())],
        UserChange::Register(UserRow {
            email: "m@x.io".into(),
            name: None
        })
    );
}

#[test]
fn users_are_per_tenant() {
    let mut view = RegistryView::new(
        ["a".to_owned(), "b".to_owned()],
        [("a".to_owned(), "u".to_owned())],
    );
    run(&mut view, register("b", "u", "u@x.io")).expect("the same user id in another tenant");
    assert_eq!(
        reason(&mut view, register("a", "u", "u@x.io")),
        Reason::UserExists
    );
}
