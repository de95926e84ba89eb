//! The store conformance suite: the contract of every [`Store`] method (and of its
//! super-traits `ReviewStore` and `WebhookStore`), written once and run against each
//! implementation through the trait only (never SQL).
//!
//! A store's test file defines how to make a fresh, empty store and invokes the macro:
//!
//! ```ignore
//! mod conformance;
//! async fn make(settings: conformance::StoreSettings) -> conformance::StoreUnderTest { ... }
//! conformance::store_conformance!(make);
//! ```
//!
//! which expands to one `#[tokio::test]` per contract. Times are fixed milliseconds from
//! [`T0`], never the clock, as the trait takes every time from its caller.

#![allow(dead_code)]

pub mod audit;
pub mod concurrency;
pub mod identity;
pub mod logs;
pub mod reviews;
pub mod sessions;
pub mod targets;
pub mod tasks;
pub mod web_sessions;
pub mod webhooks;

use chrono::{DateTime, Utc};
use runops_proto::TaskStatus;
use runops_proto::agent::{FinishRequest, TaskOffer};
use runops_proto::api::{Target, User};
use runops_server::store::*;
use std::any::Any;
use std::sync::Arc;

/// What a store under test is configured with (beyond being fresh and empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreSettings {
    /// Log bytes one organisation may keep; 0 = no quota.
    pub org_log_quota_bytes: u64,
    /// Log bytes the whole server may keep; 0 = no quota.
    pub server_log_quota_bytes: u64,
}

/// A fresh store and whatever must live as long as it (a temp dir, a database).
pub struct StoreUnderTest {
    pub store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl StoreUnderTest {
    pub fn new(store: Arc<dyn Store>, guard: impl Any + Send + Sync) -> StoreUnderTest {
        StoreUnderTest {
            store,
            _guard: Box::new(guard),
        }
    }
}

/// What a contract takes: `&dyn Store`, or `&Arc<dyn Store>` to spawn tasks with it.
pub trait StoreArg<'a> {
    fn from_store(store: &'a Arc<dyn Store>) -> Self;
}

impl<'a> StoreArg<'a> for &'a dyn Store {
    fn from_store(store: &'a Arc<dyn Store>) -> Self {
        &**store
    }
}

impl<'a> StoreArg<'a> for &'a Arc<dyn Store> {
    fn from_store(store: &'a Arc<dyn Store>) -> Self {
        store
    }
}

/// Expands to one test per contract for the store made by `$make`, an async function
/// (or closure) from [`StoreSettings`] to [`StoreUnderTest`].
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::conformance::store_conformance!(@with_store $make;
            identity::empty_store_has_no_org_and_org_names_are_unique,
            identity::first_admin_is_the_first_admin_of_the_oldest_org,
            identity::users_are_per_org_and_emails_unique_whatever_their_case,
            identity::tokens_resolve_by_hash_to_their_org_user_and_tags,
            identity::token_hashes_are_unique,
            identity::revoking_an_agent_token_reports_its_live_sessions,
            identity::user_tokens_are_listed_and_revoked_per_org_and_user,
            identity::first_admin_token_tracks_first_use_and_revocation,
            targets::targets_round_trip_and_names_are_unique_per_org,
            targets::update_replaces_every_field_but_the_name,
            targets::delete_removes_only_the_orgs_target,
            targets::target_config_is_kept_sealed_with_the_current_tags,
            tasks::a_task_snapshots_its_target_and_is_found_in_its_org_only,
            tasks::task_list_filters_and_pages_newest_first,
            tasks::claim_offers_the_oldest_ready_tasks_of_the_sessions_org_and_tags,
            tasks::start_runs_an_offer_once_for_its_session,
            tasks::start_after_the_offer_deadline_requeues_the_task,
            tasks::expired_offers_go_back_to_ready,
            tasks::finish_checks_the_log_and_is_idempotent,
            tasks::finish_of_a_failure_keeps_its_reason_or_says_agent_error,
            tasks::finish_with_the_log_elsewhere_skips_the_log_check,
            tasks::kill_cancels_an_unstarted_task_and_flags_a_running_one,
            tasks::cancels_for_names_cancelled_and_ended_tasks,
            tasks::a_claim_says_which_offers_need_a_token_or_a_config,
            tasks::jwt_tasks_wait_for_their_proof,
            tasks::fail_unstarted_task_only_ends_tasks_that_did_not_start,
            tasks::metrics_gauges_count_tasks_by_status_and_live_agents,
            tasks::a_task_keeps_the_template_it_was_made_from,
            logs::log_appends_at_offsets_accept_resends_and_report_gaps,
            logs::log_of_another_session_or_an_ended_task_is_refused,
            logs::log_beyond_the_cap_is_acknowledged_not_kept_with_one_note,
            logs::read_log_returns_kept_bytes_from_an_offset,
            logs::purge_replaces_old_finished_logs_once_and_reports_per_org,
            sessions::one_live_session_per_org_and_tags,
            sessions::sessions_resume_touch_and_go_stale,
            sessions::ending_a_session_fails_running_tasks_and_requeues_offers,
            sessions::ending_a_session_twice_does_nothing_the_second_time,
            sessions::a_restarted_agent_keeps_only_the_tasks_it_spooled,
            sessions::live_agents_list_their_running_tasks,
            audit::audit_events_are_listed_newest_first_per_org,
            concurrency::concurrent_claims_offer_each_task_exactly_once,
            concurrency::concurrent_log_resends_store_each_byte_once,
            concurrency::concurrent_start_and_kill_agree_on_one_outcome,
            concurrency::concurrent_resent_finishes_finish_once,
            reviews::a_reviewed_task_waits_with_the_rule_and_digest_it_was_created_with,
            reviews::team_approvals_count_one_group_per_approver,
            reviews::anyone_approvals_count_distinct_users,
            reviews::creators_outsiders_and_second_reviews_are_refused,
            reviews::a_review_of_another_version_or_another_status_is_not_recorded,
            reviews::a_rejection_ends_the_task_rejected_with_its_reason,
            reviews::an_approved_task_runs_once_when_its_creator_runs_it,
            reviews::waits_expire_at_exactly_their_ttl,
            reviews::the_review_inbox_lists_the_orgs_waiting_tasks_oldest_first,
            reviews::concurrent_reviews_make_exactly_one_transition,
            reviews::an_approval_racing_its_expiry_has_one_outcome,
            webhooks::webhooks_are_created_listed_and_deleted_per_org,
            webhooks::an_event_is_queued_for_each_webhook_that_subscribes_to_it,
            webhooks::a_tasks_deliveries_go_out_one_at_a_time_in_order,
            webhooks::failed_attempts_back_off_then_are_given_up,
            webhooks::purge_deletes_deliveries_that_ended_before_the_cutoff,
            webhooks::concurrent_claims_take_each_delivery_once,
            web_sessions::web_sessions_resolve_to_their_user_and_end_on_sign_out_or_token_revocation,
        );
        $crate::conformance::store_conformance!(@with_maker $make;
            logs::org_log_quota_stops_keeping_logs_of_that_org_only,
            logs::server_log_quota_counts_every_org,
            logs::purged_logs_free_their_quota,
        );
    };
    (@with_store $make:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let under_test = ($make)($crate::conformance::StoreSettings::default()).await;
                $crate::conformance::$module::$name($crate::conformance::StoreArg::from_store(
                    &under_test.store,
                ))
                .await;
                under_test.store.close().await;
            }
        )*
    };
    (@with_maker $make:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::conformance::$module::$name(|settings| ($make)(settings)).await;
            }
        )*
    };
}
pub(crate) use store_conformance;

/// A fixed "now" (2023-11-14): every time the suite passes is an offset from it.
pub const T0: i64 = 1_700_000_000_000;

/// How long an offer may wait for its start in the suite.
pub const OFFER_MS: i64 = 60_000;

/// The log cap the suite passes to `append_log` unless it tests the cap.
pub const NO_CAP: u64 = 1 << 30;

pub fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("time in range")
}

/// An organisation with an admin to create tasks as.
pub struct Org {
    pub id: i64,
    pub name: String,
    pub admin: User,
}

pub async fn org(store: &dyn Store, name: &str) -> Org {
    let id = store.create_org(name, T0).await.expect("create org");
    let admin = store
        .create_user(
            id,
            &NewUser {
                name: format!("{name} admin"),
                email: format!("admin@{name}.example"),
                groups: vec!["ops".into()],
                role: runops_proto::Role::Admin,
            },
            T0,
        )
        .await
        .expect("create admin");
    Org {
        id,
        name: name.into(),
        admin,
    }
}

/// A bash target with every optional field empty.
pub fn target(name: &str, tags: Option<&str>) -> Target {
    Target {
        name: name.into(),
        kind: "bash".into(),
        description: None,
        tags: tags.map(str::to_string),
        secret_provider: None,
        secret_path: None,
        secret_mapping: None,
        runner_provider: None,
        redact: "all".into(),
        review: "none".into(),
        reviewers: Vec::new(),
        min_approvals: None,
        approval_ttl: 24 * 3600,
        review_ttl: 7 * 24 * 3600,
        custom_command: None,
        timeout: 600,
        channel: None,
        created_at: at(T0),
        updated_at: at(T0),
        config_keys: Vec::new(),
        redact_keys: Vec::new(),
        public_keys: Vec::new(),
    }
}

/// Creates a target named `name` on `tags` in `org`.
pub async fn create_target(store: &dyn Store, org: &Org, name: &str, tags: Option<&str>) -> Target {
    store
        .create_target(org.id, &target(name, tags))
        .await
        .expect("create target")
}

pub fn new_task(target: &Target, user: &User, script: &str, status: TaskStatus) -> NewTask {
    NewTask {
        target: target.clone(),
        kind: target.kind.clone(),
        script: script.into(),
        message: None,
        user: user.clone(),
        status,
        created_with_jwt: false,
        review_sha256: None,
        template: None,
    }
}

/// Creates a `ready` task running `script` on `target`, created at `now_ms`.
pub async fn ready_task(
    store: &dyn Store,
    org: &Org,
    target: &Target,
    script: &str,
    now_ms: i64,
) -> TaskRecord {
    store
        .create_task(
            org.id,
            &new_task(target, &org.admin, script, TaskStatus::Ready),
            now_ms,
        )
        .await
        .expect("create task")
}

/// Opens a live session for an agent of `org` on `tags`, with its own agent token.
pub async fn session(store: &dyn Store, org: &Org, tags: Option<&str>, id: &str) -> SessionRecord {
    let mut hash = [0u8; 32];
    for (i, b) in format!("{}/{id}", org.name).bytes().enumerate() {
        hash[i % 32] = hash[i % 32].wrapping_mul(31).wrapping_add(b);
    }
    let token_id = store
        .create_agent_token(org.id, Some(id), tags, &hash, T0)
        .await
        .expect("create agent token");
    store
        .create_session(
            &NewSession {
                id: id.into(),
                org_id: org.id,
                token_id,
                tags: tags.map(str::to_string),
                hostname: format!("host-{id}"),
                version: "test".into(),
                instance_id: format!("instance-{id}"),
                concurrency: 4,
                verifies_identity: false,
            },
            T0,
        )
        .await
        .expect("create session")
}

/// Claims exactly the task `id` for `session` (it must be the only ready one of its
/// tags) and starts it at `now_ms`.
pub async fn run_task(
    store: &dyn Store,
    session: &SessionRecord,
    id: i64,
    now_ms: i64,
) -> TaskRecord {
    let offers = claim(store, session, 10, now_ms).await;
    assert_eq!(task_ids(&offers), vec![id], "the one ready task is offered");
    match store
        .start_task(session.org_id, id, &session.id, now_ms)
        .await
        .expect("start")
        .outcome
    {
        StartOutcome::Started(rec) => *rec,
        other => panic!("task {id} did not start: {other:?}"),
    }
}

pub async fn claim(
    store: &dyn Store,
    session: &SessionRecord,
    limit: u32,
    now_ms: i64,
) -> Vec<TaskOffer> {
    store
        .claim_tasks(session, limit, now_ms, now_ms + OFFER_MS)
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.offer)
        .collect()
}

pub fn task_ids(offers: &[TaskOffer]) -> Vec<i64> {
    offers.iter().map(|o| o.task_id).collect()
}

pub async fn task(store: &dyn Store, org: &Org, id: i64) -> TaskRecord {
    store
        .get_task(org.id, id)
        .await
        .expect("get task")
        .unwrap_or_else(|| panic!("task {id} exists"))
}

/// The finish an agent sends after a successful run whose log was `log_size` bytes.
pub fn success(session: &SessionRecord, log_size: u64) -> FinishRequest {
    FinishRequest {
        session_id: session.id.clone(),
        result: runops_proto::agent::TaskResult {
            status: TaskStatus::Success,
            exit_code: Some(0),
            failure_reason: None,
            failure_message: None,
            redacted: true,
            log_size,
            log_location: None,
            elapsed_ms: 1234,
        },
        log_tail: None,
    }
}

/// Every kept log byte of a task.
pub async fn whole_log(store: &dyn Store, id: i64) -> Vec<u8> {
    store.read_log(id, 0, usize::MAX).await.expect("read log")
}
