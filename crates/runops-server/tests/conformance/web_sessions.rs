//! Browser sessions of the web app (`Store::web_sessions`). Every store of this crate
//! keeps them (SQLite and PostgreSQL); the trait's `None` default is for a new store
//! that does not yet, and would fail here until it does.

use super::*;
use runops_proto::token::TokenKind;
use runops_server::store::web_sessions::{NewWebSession, SealedIdpToken};

const HOUR: i64 = 3_600_000;

pub async fn web_sessions_resolve_to_their_user_and_end_on_sign_out_or_token_revocation(
    store: &dyn Store,
) {
    let sessions = store
        .web_sessions()
        .expect("the store keeps the web app's sessions");
    let acme = org(store, "acme").await;
    let token = store
        .create_token(
            acme.id,
            TokenKind::User,
            Some(acme.admin.id),
            None,
            &[1; 32],
            T0,
        )
        .await
        .unwrap();
    let other_token = store
        .create_token(
            acme.id,
            TokenKind::User,
            Some(acme.admin.id),
            None,
            &[2; 32],
            T0,
        )
        .await
        .unwrap();
    let new = |hash: u8, token_id: i64| NewWebSession {
        id_hash: [hash; 32],
        org_id: acme.id,
        user_id: acme.admin.id,
        token_id: Some(token_id),
        csrf: format!("csrf-{hash}"),
        expires_at_ms: T0 + 12 * HOUR,
        idp_token: None,
    };
    sessions
        .create_web_session(&new(10, token), T0)
        .await
        .unwrap();
    sessions
        .create_web_session(&new(11, token), T0)
        .await
        .unwrap();
    sessions
        .create_web_session(&new(12, other_token), T0)
        .await
        .unwrap();
    assert!(
        sessions
            .find_web_session(&[99; 32])
            .await
            .unwrap()
            .is_none()
    );

    let s = sessions.find_web_session(&[10; 32]).await.unwrap().unwrap();
    assert_eq!(s.org_id, acme.id);
    assert_eq!(s.user, acme.admin);
    assert_eq!((s.token_id, s.csrf.as_str()), (Some(token), "csrf-10"));
    assert_eq!(s.expires_at_ms, T0 + 12 * HOUR);
    assert!(!s.revoked && !s.token_revoked);
    assert_eq!(s.idp_token, None);

    // Signing out ends that session only, once.
    assert!(
        sessions
            .revoke_web_session(&[10; 32], T0 + 1)
            .await
            .unwrap()
    );
    assert!(
        !sessions
            .revoke_web_session(&[10; 32], T0 + 2)
            .await
            .unwrap()
    );
    assert!(
        sessions
            .find_web_session(&[10; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        !sessions
            .find_web_session(&[11; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    // Revoking the API token a session was opened with shows on that session.
    assert!(
        store
            .revoke_user_token(acme.id, token, None, T0 + 3)
            .await
            .unwrap()
    );
    assert!(
        sessions
            .find_web_session(&[11; 32])
            .await
            .unwrap()
            .unwrap()
            .token_revoked
    );
    assert!(
        !sessions
            .find_web_session(&[12; 32])
            .await
            .unwrap()
            .unwrap()
            .token_revoked
    );

    // "Sign out everywhere" ends the user's live sessions (not those of another org).
    let other = org(store, "other").await;
    assert_eq!(
        sessions
            .revoke_user_web_sessions(other.id, acme.admin.id, T0 + 4)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        sessions
            .revoke_user_web_sessions(acme.id, acme.admin.id, T0 + 4)
            .await
            .unwrap(),
        2,
        "sessions 11 and 12 were live"
    );
    assert!(
        sessions
            .find_web_session(&[12; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    // A session opened through the identity provider has no API token; it keeps the
    // sealed ID token of its sign-in, as it was given.
    let sealed = SealedIdpToken {
        sealed: vec![1, 0, 255, 7, 42],
        expires_at_ms: T0 + HOUR,
    };
    let sso = NewWebSession {
        token_id: None,
        idp_token: Some(sealed.clone()),
        ..new(13, token)
    };
    sessions.create_web_session(&sso, T0 + 4).await.unwrap();
    let s = sessions.find_web_session(&[13; 32]).await.unwrap().unwrap();
    assert_eq!(s.token_id, None);
    assert_eq!(s.idp_token, Some(sealed));
    assert!(!s.revoked && !s.token_revoked);
    assert!(
        sessions
            .revoke_web_session(&[13; 32], T0 + 4)
            .await
            .unwrap()
    );
    let s = sessions.find_web_session(&[13; 32]).await.unwrap().unwrap();
    assert!(s.revoked);
    assert_eq!(s.idp_token, None, "signing out drops the identity token");

    // Ended sessions are deleted once they ended before the cutoff.
    assert_eq!(sessions.purge_web_sessions(T0 + 1).await.unwrap(), 0);
    assert_eq!(sessions.purge_web_sessions(T0 + 5).await.unwrap(), 4);
    assert!(
        sessions
            .find_web_session(&[12; 32])
            .await
            .unwrap()
            .is_none()
    );
}
