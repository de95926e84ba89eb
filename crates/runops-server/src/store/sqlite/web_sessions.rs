//! [`WebSessionStore`] on SQLite: the `web_sessions` table of migrations 0010 and 0013.

use super::{SqliteStore, user_from_row};
use crate::store::web_sessions::{NewWebSession, SealedIdpToken, WebSession, WebSessionStore};
use crate::store::{StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::Row;

#[async_trait]
impl WebSessionStore for SqliteStore {
    async fn create_web_session(&self, s: &NewWebSession, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, org_id, user_id, token_id, csrf, created_at, expires_at, \
             idp_token_sealed, idp_token_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash[..])
        .bind(s.org_id)
        .bind(s.user_id)
        .bind(s.token_id)
        .bind(&s.csrf)
        .bind(now_ms)
        .bind(s.expires_at_ms)
        .bind(s.idp_token.as_ref().map(|t| &t.sealed[..]))
        .bind(s.idp_token.as_ref().map(|t| t.expires_at_ms))
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(())
    }

    async fn find_web_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<WebSession>> {
        let row = sqlx::query(concat!(
            "SELECT s.org_id, s.token_id, s.csrf, s.expires_at, s.revoked_at, t.revoked_at AS token_revoked_at, \
             s.idp_token_sealed, s.idp_token_expires_at, \
             o.name AS org_name, ",
            user_cols!(),
            " FROM web_sessions s JOIN orgs o ON o.id = s.org_id JOIN users u ON u.id = s.user_id \
             LEFT JOIN tokens t ON t.id = s.token_id WHERE s.id_hash = ?"
        ))
        .bind(&id_hash[..])
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let org: String = row.try_get("org_name")?;
        let idp_token = SealedIdpToken::from_columns(
            row.try_get("idp_token_sealed")?,
            row.try_get("idp_token_expires_at")?,
        );
        Ok(Some(WebSession {
            org_id: row.try_get("org_id")?,
            user: user_from_row(&row, &org)?,
            token_id: row.try_get("token_id")?,
            token_revoked: row.try_get::<Option<i64>, _>("token_revoked_at")?.is_some(),
            revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            csrf: row.try_get("csrf")?,
            expires_at_ms: row.try_get("expires_at")?,
            idp_token,
        }))
    }

    async fn revoke_web_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE web_sessions SET revoked_at = ?, idp_token_sealed = NULL, idp_token_expires_at = NULL \
             WHERE id_hash = ? AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(&id_hash[..])
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_user_web_sessions(
        &self,
        org_id: i64,
        user_id: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE web_sessions SET revoked_at = ?, idp_token_sealed = NULL, idp_token_expires_at = NULL \
             WHERE org_id = ? AND user_id = ? AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(now_ms)
        .bind(org_id)
        .bind(user_id)
        .bind(now_ms)
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_web_sessions(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at < ? OR revoked_at < ?")
            .bind(before_ms)
            .bind(before_ms)
            .execute(&mut *self.writer.lock().await?)
            .await
            .map_err(StoreError::from)?;
        Ok(done.rows_affected())
    }
}
