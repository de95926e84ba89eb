//! Targets and their sealed config.

use super::*;

/// A target with every field set.
fn full_target(name: &str) -> Target {
    let mut t = target(name, Some("prod,eu"));
    t.kind = "postgres".into();
    t.description = Some("the orders database".into());
    t.secret_provider = Some("hashicorp/kv".into());
    t.secret_path = Some("secret/data/orders".into());
    t.secret_mapping = Some(
        serde_json::json!({"PG_PASSWORD": "password"})
            .as_object()
            .unwrap()
            .clone(),
    );
    t.runner_provider = Some("aws".into());
    t.redact = "none".into();
    t.review = "team".into();
    t.reviewers = vec!["dba".into(), "sre".into()];
    t.custom_command = Some("psql -X".into());
    t.timeout = 42;
    t.channel = Some("#ops".into());
    t.updated_at = at(T0 + 1000);
    t.redact_keys = vec!["PG_HOST".into()];
    t.public_keys = vec!["PG_DATABASE".into()];
    t
}

pub async fn targets_round_trip_and_names_are_unique_per_org(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let orders = full_target("orders");
    assert_eq!(store.create_target(acme.id, &orders).await.unwrap(), orders);
    assert_eq!(
        store.get_target(acme.id, "orders").await.unwrap(),
        Some(orders.clone()),
        "every field round-trips"
    );
    let plain = target("billing", None);
    store.create_target(acme.id, &plain).await.unwrap();
    assert_eq!(
        store.list_targets(acme.id).await.unwrap(),
        vec![plain.clone(), orders.clone()],
        "listed by name"
    );
    match store.create_target(acme.id, &target("orders", None)).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("orders"), "{msg}"),
        r => panic!("a second `orders` must conflict: {r:?}"),
    }
    assert_eq!(store.get_target(other.id, "orders").await.unwrap(), None);
    assert!(store.list_targets(other.id).await.unwrap().is_empty());
    store
        .create_target(other.id, &target("orders", None))
        .await
        .expect("another org may use the same name");
    assert_eq!(
        store.get_target(acme.id, "orders").await.unwrap(),
        Some(orders),
        "unchanged by the other org's target"
    );
}

pub async fn update_replaces_every_field_but_the_name(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    store
        .create_target(acme.id, &full_target("orders"))
        .await
        .unwrap();
    let mut plain = target("orders", None);
    plain.created_at = at(T0);
    plain.updated_at = at(T0 + 5000);
    assert_eq!(
        store.update_target(other.id, &plain).await.unwrap(),
        None,
        "another org's target is not found"
    );
    assert_eq!(
        store.update_target(acme.id, &plain).await.unwrap(),
        Some(plain.clone())
    );
    assert_eq!(
        store.get_target(acme.id, "orders").await.unwrap(),
        Some(plain),
        "optional fields are cleared, lists emptied"
    );
    assert_eq!(
        store
            .update_target(acme.id, &target("missing", None))
            .await
            .unwrap(),
        None
    );
}

pub async fn delete_removes_only_the_orgs_target(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    create_target(store, &acme, "orders", None).await;
    create_target(store, &other, "orders", None).await;
    assert!(!store.delete_target(acme.id, "missing").await.unwrap());
    assert!(store.delete_target(acme.id, "orders").await.unwrap());
    assert!(!store.delete_target(acme.id, "orders").await.unwrap());
    assert_eq!(store.get_target(acme.id, "orders").await.unwrap(), None);
    assert!(
        store
            .get_target(other.id, "orders")
            .await
            .unwrap()
            .is_some()
    );
    // The name is free again.
    create_target(store, &acme, "orders", Some("new")).await;
}

pub async fn target_config_is_kept_sealed_with_the_current_tags(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    create_target(store, &acme, "orders", Some("prod")).await;
    assert!(
        store
            .target_config(acme.id, "orders")
            .await
            .unwrap()
            .is_none(),
        "no config yet"
    );
    let keys = vec!["PG_HOST".to_string(), "PG_PASSWORD".to_string()];
    assert!(
        store
            .set_target_config(acme.id, "orders", Some((b"sealed bytes", &keys)))
            .await
            .unwrap()
    );
    let c = store
        .target_config(acme.id, "orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.sealed, b"sealed bytes");
    assert_eq!(c.tags.as_deref(), Some("prod"));
    assert_eq!(
        store
            .get_target(acme.id, "orders")
            .await
            .unwrap()
            .unwrap()
            .config_keys,
        keys
    );
    assert!(
        store
            .target_config(other.id, "orders")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .set_target_config(other.id, "orders", Some((b"x", &keys)))
            .await
            .unwrap(),
        "another org's target is not found"
    );

    // The config follows the target's tags as they are now; an update keeps it.
    let mut moved = target("orders", Some("staging"));
    moved.updated_at = at(T0 + 1);
    store.update_target(acme.id, &moved).await.unwrap().unwrap();
    let c = store
        .target_config(acme.id, "orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.tags.as_deref(), Some("staging"));
    assert_eq!(c.sealed, b"sealed bytes");

    assert!(
        store
            .set_target_config(acme.id, "orders", None)
            .await
            .unwrap()
    );
    assert!(
        store
            .target_config(acme.id, "orders")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_target(acme.id, "orders")
            .await
            .unwrap()
            .unwrap()
            .config_keys
            .is_empty()
    );
    assert!(
        !store
            .set_target_config(acme.id, "missing", None)
            .await
            .unwrap()
    );
}
