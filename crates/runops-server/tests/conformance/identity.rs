//! Organisations, users and tokens.

use super::*;
use runops_proto::token::TokenKind;
use runops_server::store::sqlite::FIRST_ADMIN_TOKEN_NAME;

fn user(name: &str, email: &str, role: &str) -> NewUser {
    NewUser {
        name: name.into(),
        email: email.into(),
        groups: vec!["dev".into(), "ops".into()],
        role: role.parse().expect("a role name"),
    }
}

pub async fn empty_store_has_no_org_and_org_names_are_unique(store: &dyn Store) {
    store.ping().await.expect("a fresh store answers a ping");
    assert!(store.is_empty().await.unwrap(), "a fresh store has no org");
    assert_eq!(store.find_org_id("acme").await.unwrap(), None);
    let acme = store.create_org("acme", T0).await.unwrap();
    assert!(!store.is_empty().await.unwrap());
    assert_eq!(store.find_org_id("acme").await.unwrap(), Some(acme));
    match store.create_org("acme", T0 + 1).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("acme"), "{msg}"),
        other => panic!("a second `acme` must conflict: {other:?}"),
    }
    let other = store.create_org("other", T0).await.unwrap();
    assert_ne!(acme, other);
    assert_eq!(store.find_org_id("other").await.unwrap(), Some(other));
}

pub async fn first_admin_is_the_first_admin_of_the_oldest_org(store: &dyn Store) {
    assert!(store.first_admin().await.unwrap().is_none());
    let first = store.create_org("first", T0).await.unwrap();
    store
        .create_user(first, &user("plain", "plain@first.example", "user"), T0)
        .await
        .unwrap();
    assert!(
        store.first_admin().await.unwrap().is_none(),
        "a plain user is no admin"
    );
    let second = store.create_org("second", T0).await.unwrap();
    store
        .create_user(second, &user("b", "admin@second.example", "admin"), T0)
        .await
        .unwrap();
    let a1 = store
        .create_user(first, &user("a1", "a1@first.example", "admin"), T0 + 1)
        .await
        .unwrap();
    store
        .create_user(first, &user("a2", "a2@first.example", "admin"), T0 + 2)
        .await
        .unwrap();
    let got = store.first_admin().await.unwrap().expect("an admin exists");
    assert_eq!(got, a1, "the oldest org's first admin");
    assert_eq!(got.org, "first");
}

pub async fn users_are_per_org_and_emails_unique_whatever_their_case(store: &dyn Store) {
    let acme = store.create_org("acme", T0).await.unwrap();
    let other = store.create_org("other", T0).await.unwrap();
    let ann = store
        .create_user(acme, &user("Ann", "Ann@acme.example", "admin"), T0)
        .await
        .unwrap();
    assert_eq!(ann.name, "Ann");
    assert_eq!(ann.email, "Ann@acme.example");
    assert_eq!(ann.groups, vec!["dev", "ops"]);
    assert_eq!(ann.role, "admin");
    assert_eq!(ann.org, "acme");
    assert_eq!(ann.created_at, at(T0));
    match store
        .create_user(acme, &user("Ann again", "ann@ACME.example", "user"), T0)
        .await
    {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("ann@ACME.example"), "{msg}"),
        other => panic!("an e-mail differing only in case must conflict: {other:?}"),
    }
    // The same address in another org is another user.
    let ann_other = store
        .create_user(other, &user("Ann", "ann@acme.example", "user"), T0)
        .await
        .unwrap();
    let bob = store
        .create_user(acme, &user("Bob", "bob@acme.example", "user"), T0 + 5)
        .await
        .unwrap();
    assert_eq!(
        store.list_users(acme).await.unwrap(),
        vec![ann.clone(), bob]
    );
    assert_eq!(
        store.list_users(other).await.unwrap(),
        vec![ann_other.clone()]
    );

    let found = store
        .find_user_by_email(acme, "ANN@acme.EXAMPLE")
        .await
        .unwrap();
    assert_eq!(found, Some(ann.clone()), "e-mail lookups ignore case");
    assert_eq!(
        store
            .find_user_by_email(other, "ann@acme.example")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(ann_other.id),
        "lookups stay in their org"
    );
    assert_eq!(
        store
            .find_user_by_email(acme, "nobody@acme.example")
            .await
            .unwrap(),
        None
    );

    store
        .set_user_groups(ann.id, &["sre".to_string()])
        .await
        .unwrap();
    let ann = store
        .find_user_by_email(acme, "ann@acme.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann.groups, vec!["sre"]);
    store.set_user_groups(ann.id, &[]).await.unwrap();
    assert!(store.list_users(acme).await.unwrap()[0].groups.is_empty());
}

pub async fn tokens_resolve_by_hash_to_their_org_user_and_tags(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let user_hash = [1u8; 32];
    let id = store
        .create_token(
            acme.id,
            TokenKind::User,
            Some(acme.admin.id),
            Some("laptop"),
            &user_hash,
            T0,
        )
        .await
        .unwrap();
    let t = store.find_token(&user_hash).await.unwrap().expect("found");
    assert_eq!(t.id, id);
    assert_eq!(t.org_id, acme.id);
    assert_eq!(t.org, "acme");
    assert_eq!(t.kind, TokenKind::User);
    assert_eq!(t.hash, user_hash);
    assert_eq!(t.user.as_ref(), Some(&acme.admin));
    assert!(!t.revoked);
    assert_eq!(t.tags, None);

    let agent_hash = [2u8; 32];
    let agent_id = store
        .create_agent_token(
            acme.id,
            Some("prod agents"),
            Some("prod,eu"),
            &agent_hash,
            T0,
        )
        .await
        .unwrap();
    let a = store.find_token(&agent_hash).await.unwrap().expect("found");
    assert_eq!(a.id, agent_id);
    assert_eq!(a.kind, TokenKind::Agent);
    assert!(a.user.is_none());
    assert_eq!(a.tags.as_deref(), Some("prod,eu"));

    // `create_token` makes agent tokens for untagged agents.
    let untagged_hash = [3u8; 32];
    store
        .create_token(acme.id, TokenKind::Agent, None, None, &untagged_hash, T0)
        .await
        .unwrap();
    let u = store.find_token(&untagged_hash).await.unwrap().unwrap();
    assert_eq!((u.kind, u.tags), (TokenKind::Agent, None));

    assert!(store.find_token(&[9u8; 32]).await.unwrap().is_none());
    let listed = store.list_agent_tokens(acme.id).await.unwrap();
    assert_eq!(listed.len(), 2, "agent tokens only: {listed:?}");
    assert_eq!(listed[0].id, agent_id);
    assert_eq!(listed[0].name.as_deref(), Some("prod agents"));
    assert_eq!(listed[0].tags.as_deref(), Some("prod,eu"));
    assert_eq!(listed[0].created_at, at(T0));
    assert_eq!(listed[0].revoked_at, None);
    let other = org(store, "other").await;
    assert!(store.list_agent_tokens(other.id).await.unwrap().is_empty());
}

pub async fn token_hashes_are_unique(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let hash = [7u8; 32];
    store
        .create_agent_token(acme.id, None, None, &hash, T0)
        .await
        .unwrap();
    for r in [
        store
            .create_agent_token(other.id, None, Some("x"), &hash, T0)
            .await,
        store
            .create_token(
                other.id,
                TokenKind::User,
                Some(other.admin.id),
                None,
                &hash,
                T0,
            )
            .await,
    ] {
        assert!(
            matches!(r, Err(StoreError::Conflict(_))),
            "a hash is one token, whatever the org: {r:?}"
        );
    }
}

pub async fn revoking_an_agent_token_reports_its_live_sessions(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let s = session(store, &acme, Some("prod"), "s-prod").await;
    let ended = session(store, &acme, Some("dev"), "s-dev").await;
    store
        .end_session(&ended.id, &SessionEnd::Disconnected, T0 + 1)
        .await
        .unwrap();

    assert_eq!(
        store
            .revoke_agent_token(other.id, s.token_id, T0 + 2)
            .await
            .unwrap(),
        None,
        "another org's token is not found"
    );
    let user_token = store
        .create_token(
            acme.id,
            TokenKind::User,
            Some(acme.admin.id),
            None,
            &[5u8; 32],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .revoke_agent_token(acme.id, user_token, T0 + 2)
            .await
            .unwrap(),
        None,
        "a user token is no agent token"
    );
    assert!(!store.find_token(&[5u8; 32]).await.unwrap().unwrap().revoked);

    let live = store
        .revoke_agent_token(acme.id, s.token_id, T0 + 3)
        .await
        .unwrap();
    assert_eq!(live, Some(vec![s.id.clone()]));
    let dev = store
        .revoke_agent_token(acme.id, ended.token_id, T0 + 3)
        .await
        .unwrap();
    assert_eq!(dev, Some(vec![]), "an ended session is not live");
    let listed = store.list_agent_tokens(acme.id).await.unwrap();
    let prod = listed.iter().find(|t| t.id == s.token_id).unwrap();
    assert_eq!(prod.revoked_at, Some(at(T0 + 3)));

    // Revoking again keeps the first revocation time.
    assert!(
        store
            .revoke_agent_token(acme.id, s.token_id, T0 + 9)
            .await
            .unwrap()
            .is_some()
    );
    let listed = store.list_agent_tokens(acme.id).await.unwrap();
    let prod = listed.iter().find(|t| t.id == s.token_id).unwrap();
    assert_eq!(prod.revoked_at, Some(at(T0 + 3)));
}

pub async fn user_tokens_are_listed_and_revoked_per_org_and_user(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let bob = store
        .create_user(acme.id, &user("Bob", "bob@acme.example", "user"), T0)
        .await
        .unwrap();
    let admin_tok = store
        .create_token(
            acme.id,
            TokenKind::User,
            Some(acme.admin.id),
            Some("a"),
            &[1u8; 32],
            T0,
        )
        .await
        .unwrap();
    let bob_tok = store
        .create_token(
            acme.id,
            TokenKind::User,
            Some(bob.id),
            Some("b"),
            &[2u8; 32],
            T0 + 1,
        )
        .await
        .unwrap();
    store
        .create_agent_token(acme.id, None, None, &[3u8; 32], T0)
        .await
        .unwrap();
    let other_tok = store
        .create_token(
            other.id,
            TokenKind::User,
            Some(other.admin.id),
            None,
            &[4u8; 32],
            T0,
        )
        .await
        .unwrap();

    let all = store.list_user_tokens(acme.id, None).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![admin_tok, bob_tok],
        "user tokens of the org only, oldest first"
    );
    assert_eq!(all[1].user, "bob@acme.example");
    assert_eq!(all[1].name.as_deref(), Some("b"));
    assert_eq!(all[1].created_at, at(T0 + 1));
    assert_eq!(all[1].revoked_at, None);
    let bobs = store.list_user_tokens(acme.id, Some(bob.id)).await.unwrap();
    assert_eq!(bobs.iter().map(|t| t.id).collect::<Vec<_>>(), vec![bob_tok]);

    assert!(
        !store
            .revoke_user_token(acme.id, admin_tok, Some(bob.id), T0 + 2)
            .await
            .unwrap(),
        "Bob cannot revoke the admin's token"
    );
    assert!(
        !store
            .revoke_user_token(acme.id, other_tok, None, T0 + 2)
            .await
            .unwrap(),
        "nor can anyone revoke another org's"
    );
    assert!(
        store
            .revoke_user_token(acme.id, bob_tok, Some(bob.id), T0 + 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_user_token(acme.id, admin_tok, None, T0 + 3)
            .await
            .unwrap()
    );
    assert!(store.find_token(&[2u8; 32]).await.unwrap().unwrap().revoked);
    assert!(!store.find_token(&[4u8; 32]).await.unwrap().unwrap().revoked);
    let all = store.list_user_tokens(acme.id, None).await.unwrap();
    assert_eq!(all[0].revoked_at, Some(at(T0 + 3)));
    assert_eq!(all[1].revoked_at, Some(at(T0 + 2)));
    // Revoking twice keeps the first time.
    store
        .revoke_user_token(acme.id, bob_tok, None, T0 + 9)
        .await
        .unwrap();
    let all = store.list_user_tokens(acme.id, None).await.unwrap();
    assert_eq!(all[1].revoked_at, Some(at(T0 + 2)));
}

pub async fn first_admin_token_tracks_first_use_and_revocation(store: &dyn Store) {
    assert_eq!(store.first_admin_token().await.unwrap(), None);
    let acme = org(store, "acme").await;
    let hash = [8u8; 32];
    let id = store
        .create_token(
            acme.id,
            TokenKind::User,
            Some(acme.admin.id),
            Some(FIRST_ADMIN_TOKEN_NAME),
            &hash,
            T0,
        )
        .await
        .unwrap();
    assert_eq!(store.first_admin_token().await.unwrap(), Some((id, false)));
    store.mark_token_used(id, T0 + 1).await.unwrap();
    store.mark_token_used(id, T0 + 2).await.unwrap();
    assert_eq!(store.first_admin_token().await.unwrap(), Some((id, true)));

    store.revoke_token_by_id(id, T0 + 3).await.unwrap();
    assert!(store.find_token(&hash).await.unwrap().unwrap().revoked);
    assert_eq!(
        store.first_admin_token().await.unwrap(),
        None,
        "a revoked first-admin token is gone"
    );
    store.unrevoke_token(id).await.unwrap();
    assert!(!store.find_token(&hash).await.unwrap().unwrap().revoked);
    assert_eq!(store.first_admin_token().await.unwrap(), Some((id, true)));
}
