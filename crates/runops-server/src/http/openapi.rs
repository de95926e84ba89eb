//! The API contract: the OpenAPI 3.1 document of every `/v1` route, generated from the
//! handlers' `#[utoipa::path]` attributes and the wire types of `runops-proto`
//! (feature `openapi`). Served at `GET /v1/openapi.json` and kept in
//! `docs/openapi.json`; `tests/openapi.rs` fails when the two differ and says how to
//! regenerate it (`RUNOPS_UPDATE_OPENAPI=1 cargo test -p runops-server --test openapi`).
//!
//! What every operation shares is added here, in one place, rather than repeated on
//! each handler: the bearer-token security schemes (user tokens for the REST API,
//! agent tokens for `/v1/agent/*`) and the `4XX`/`5XX` answers, all the
//! [`ApiErrorBody`] `{code, error, hint}`.

use axum::http::header;
use axum::response::IntoResponse;
use runops_proto::api::ApiErrorBody;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The security scheme of user API tokens (`rou_...`) and identity-provider JWTs.
pub const USER_TOKEN: &str = "user_token";
/// The security scheme of agent tokens (`/v1/agent/*`).
pub const AGENT_TOKEN: &str = "agent_token";
/// The shared error answer, `#/components/responses/Error`.
const ERROR_RESPONSE: &str = "Error";

/// Routes that answer without a token.
/// The templates webhook is authenticated by its shared secret instead.
const PUBLIC_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/v1/openapi.json",
    "/v1/templates/webhook",
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Runops API",
        description = "The control plane's REST API (`Authorization: Bearer <user token>`) and the agent protocol (`/v1/agent/*`, `Authorization: Bearer <agent token>`). Every 4xx and 5xx answer is a JSON `{code, error, hint}`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::healthz,
        super::readyz,
        document_route,
        super::org::me,
        super::targets::list,
        super::targets::create,
        super::targets::show,
        super::targets::update,
        super::targets::remove,
        super::tasks::list,
        super::tasks::create,
        super::tasks::show,
        super::tasks::logs,
        super::tasks::kill,
        super::tasks::proof,
        super::reviews::approve,
        super::reviews::reject,
        super::reviews::run,
        super::reviews::inbox,
        super::templates::list,
        super::templates::show,
        super::templates::run,
        super::templates::refresh,
        super::templates::webhook,
        super::org::list_agents,
        super::org::list_agent_tokens,
        super::org::create_agent_token,
        super::org::revoke_agent_token,
        super::org::list_tokens,
        super::org::create_token,
        super::org::revoke_token,
        super::org::list_users,
        super::org::create_user,
        super::org::list_audit,
        super::webhooks::list,
        super::webhooks::create,
        super::webhooks::remove,
        super::webhooks::deliveries,
        super::agent::connect,
        super::agent::poll,
        super::agent::start,
        super::agent::upload_log,
        super::agent::finish,
        super::agent::disconnect,
    ),
    components(schemas(ApiErrorBody)),
    modifiers(&SharedContract),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "meta", description = "This document"),
        (name = "users", description = "Users, API tokens and the caller"),
        (name = "targets", description = "Where tasks run, with which secrets (changes: admins)"),
        (name = "tasks", description = "Create, list, kill tasks; read their logs"),
        (name = "reviews", description = "Approve, reject and run reviewed tasks"),
        (name = "templates", description = "Scripts kept in a git repository, run with checked parameters"),
        (name = "agents", description = "Live agents and agent tokens"),
        (name = "audit", description = "The organisation's audit log (admins)"),
        (name = "webhooks", description = "Receivers of task and review events (admins)"),
        (name = "agent protocol", description = "What an agent calls, with its agent token"),
    )
)]
pub struct ApiDoc;

/// Adds what every operation shares: security schemes and requirements, the error answer.
struct SharedContract;

impl Modify for SharedContract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |desc: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(desc.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme(
            USER_TOKEN,
            bearer(
                "A user's API token (`rou_...`, from `runops users create` or `runops tokens create`) or, with `--auth-jwk-url`, an identity-provider JWT. Some operations are for admins only; others answer 403.",
            ),
        );
        components.add_security_scheme(
            AGENT_TOKEN,
            bearer("An agent token (from `runops agents create-token`), for `/v1/agent/*` only."),
        );
        components.responses.insert(
            ERROR_RESPONSE.to_string(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("An error: `code` for programs, `error` and `hint` for people.")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(ApiErrorBody::name())))
                            .build(),
                    )
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let security = if PUBLIC_PATHS.contains(&path.as_str()) {
                vec![]
            } else if path.starts_with("/v1/agent/") {
                vec![SecurityRequirement::new(AGENT_TOKEN, Vec::<String>::new())]
            } else {
                vec![SecurityRequirement::new(USER_TOKEN, Vec::<String>::new())]
            };
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                op.security = Some(security.clone());
                for range in ["4XX", "5XX"] {
                    op.responses
                        .responses
                        .entry(range.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(ERROR_RESPONSE)));
                }
            }
        }
    }
}

/// The document as JSON text, built once: what `GET /v1/openapi.json` serves and
/// `docs/openapi.json` holds (pretty-printed, with a final newline).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut text = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// `GET /v1/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub async fn document_route() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
