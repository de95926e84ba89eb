//! The store conformance suite on SQLite: each contract on a fresh database in its
//! own temp dir.

mod conformance;

use conformance::{StoreSettings, StoreUnderTest};
use runops_server::store::sqlite::{LogQuotas, SqliteStore};
use std::sync::Arc;

async fn sqlite_store(settings: StoreSettings) -> StoreUnderTest {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path())
        .await
        .expect("open the SQLite store")
        .with_log_quotas(LogQuotas {
            server_bytes: settings.server_log_quota_bytes,
            org_bytes: settings.org_log_quota_bytes,
        });
    StoreUnderTest::new(Arc::new(store), dir)
}

conformance::store_conformance!(sqlite_store);
