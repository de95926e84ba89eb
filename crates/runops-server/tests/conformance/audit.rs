//! The audit log.

use super::*;
use runops_proto::api::AuditQuery;

fn event(org_id: i64, at_ms: i64, action: &'static str, actor: Option<&str>) -> NewAuditEvent {
    NewAuditEvent {
        org_id,
        at_ms,
        actor_email: actor.map(str::to_string),
        actor_kind: if actor.is_some() { "user" } else { "system" },
        action,
        object_kind: Some("target"),
        object_id: Some(format!("t{at_ms}")),
        remote_addr: Some("10.0.0.1".into()),
        detail: serde_json::json!({"keys": ["A", "B"], "n": at_ms}),
    }
}

pub async fn audit_events_are_listed_newest_first_per_org(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let mut ids = Vec::new();
    for (i, action) in [
        "target.create",
        "target.update",
        "target.create",
        "task.create",
    ]
    .into_iter()
    .enumerate()
    {
        ids.push(
            store
                .record_audit(&event(
                    acme.id,
                    T0 + i as i64,
                    action,
                    Some("ann@acme.example"),
                ))
                .await
                .unwrap(),
        );
    }
    let system = store
        .record_audit(&NewAuditEvent {
            object_kind: None,
            object_id: None,
            remote_addr: None,
            ..event(acme.id, T0 + 9, "log.purge", None)
        })
        .await
        .unwrap();
    store
        .record_audit(&event(
            other.id,
            T0,
            "target.create",
            Some("x@other.example"),
        ))
        .await
        .unwrap();

    let list = |q: AuditQuery| async move { store.list_audit(acme.id, &q).await.unwrap() };
    let all = list(AuditQuery::default()).await;
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![system, ids[3], ids[2], ids[1], ids[0]],
        "newest first, this org only"
    );
    let e = &all[4];
    assert_eq!(e.at, at(T0));
    assert_eq!(e.actor.as_deref(), Some("ann@acme.example"));
    assert_eq!(e.actor_kind, "user");
    assert_eq!(e.action, "target.create");
    assert_eq!(e.object_kind.as_deref(), Some("target"));
    assert_eq!(e.object_id.as_deref(), Some(format!("t{T0}").as_str()));
    assert_eq!(e.remote_addr.as_deref(), Some("10.0.0.1"));
    assert_eq!(e.detail, serde_json::json!({"keys": ["A", "B"], "n": T0}));
    let s = &all[0];
    assert_eq!(
        (s.actor.as_deref(), s.actor_kind.as_str()),
        (None, "system")
    );
    assert_eq!(
        (s.object_kind.as_deref(), s.remote_addr.as_deref()),
        (None, None)
    );

    let page = list(AuditQuery {
        limit: Some(2),
        before: Some(ids[3]),
        ..Default::default()
    })
    .await;
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let creates = list(AuditQuery {
        action: Some("target.create".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        creates.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[2], ids[0]]
    );
    // By actor (a user's e-mail, or the kind of a caller that is no user), by object,
    // and both with an action.
    let ids_of = |events: Vec<runops_proto::api::AuditEvent>| {
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let by = |actor: &str| AuditQuery {
        actor: Some(actor.into()),
        ..Default::default()
    };
    assert_eq!(
        ids_of(list(by("ann@acme.example")).await),
        vec![ids[3], ids[2], ids[1], ids[0]]
    );
    assert_eq!(ids_of(list(by("system")).await), vec![system]);
    assert_eq!(ids_of(list(by("agent")).await), Vec::<i64>::new());
    assert_eq!(
        ids_of(list(by("x@other.example")).await),
        Vec::<i64>::new(),
        "another org's actor"
    );
    assert_eq!(
        ids_of(
            list(AuditQuery {
                object: Some(format!("t{}", T0 + 1)),
                ..Default::default()
            })
            .await
        ),
        vec![ids[1]]
    );
    assert_eq!(
        ids_of(
            list(AuditQuery {
                action: Some("target.create".into()),
                before: Some(ids[2]),
                ..by("ann@acme.example")
            })
            .await
        ),
        vec![ids[0]]
    );
    let one = list(AuditQuery {
        limit: Some(0),
        ..Default::default()
    })
    .await;
    assert_eq!(one.len(), 1, "a limit below 1 lists one");
    assert_eq!(
        store
            .list_audit(other.id, &AuditQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}
