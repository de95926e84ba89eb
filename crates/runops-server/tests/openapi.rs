//! The API contract: `docs/openapi.json` is the document the code generates, every
//! route of the router is in it, the server serves it, and every error answer has the
//! shape it promises (`{code, error, hint}`).
//!
//! After changing a route or a wire type, regenerate the file with
//! `RUNOPS_UPDATE_OPENAPI=1 cargo test -p runops-server --test openapi`.

use runops_server::http::openapi::document;
use runops_server::{Server, ServerArgs};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

const REGENERATE: &str = "RUNOPS_UPDATE_OPENAPI=1 cargo test -p runops-server --test openapi";

fn docs_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn parsed() -> Value {
    serde_json::from_str(document()).expect("the document is JSON")
}

#[test]
fn docs_openapi_json_is_the_generated_document() {
    let path = docs_file();
    if std::env::var_os("RUNOPS_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, document()).expect("write docs/openapi.json");
        return;
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == document(),
        "docs/openapi.json is not the document the code generates (a route, a handler's \
         #[utoipa::path] or a wire type changed); regenerate it with\n    {REGENERATE}\n\
         and commit it"
    );
}

/// The `(METHOD, path)` pairs that `src/http/mod.rs` registers under `/v1`, read from
/// its `.route("...", get(...).post(...))` calls: a route added there without a
/// `#[utoipa::path]` (and a line in `ApiDoc`) fails this test.
fn registered_v1_routes() -> BTreeSet<(String, String)> {
    let src =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/http/mod.rs"))
            .expect("read src/http/mod.rs");
    let mut routes = BTreeSet::new();
    for call in src.split(".route(").skip(1) {
        // The call's text up to its closing parenthesis.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("a closed .route( call");
        let call = &call[..end];
        let path = call.split('"').nth(1).expect("a route path literal");
        if !path.starts_with("/v1/") {
            continue;
        }
        let handlers = &call[call.find(',').expect("a method router")..];
        for method in ["get", "post", "put", "delete", "patch"] {
            let called = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if called {
                routes.insert((method.to_uppercase(), path.to_string()));
            }
        }
    }
    assert!(
        routes.len() > 30,
        "read too few routes from src/http/mod.rs: {routes:?}"
    );
    routes
}

fn documented_routes() -> BTreeSet<(String, String)> {
    let doc = parsed();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

#[test]
fn every_v1_route_of_the_router_is_documented_and_nothing_else() {
    let registered = registered_v1_routes();
    let documented: BTreeSet<_> = documented_routes()
        .into_iter()
        .filter(|(_, p)| p.starts_with("/v1/"))
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes of src/http/mod.rs missing from the OpenAPI document: {missing:?}\n\
         give their handlers a #[utoipa::path(...)], list them in `ApiDoc` \
         (src/http/openapi.rs), then run\n    {REGENERATE}"
    );
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        stale.is_empty(),
        "the OpenAPI document has routes the router does not: {stale:?}"
    );
}

#[test]
fn every_operation_is_secured_and_answers_errors_with_the_shared_shape() {
    let doc = parsed();
    assert_eq!(doc["openapi"], "3.1.0");
    let error = &doc["components"]["schemas"]["ApiErrorBody"];
    let required: BTreeSet<&str> = error["required"]
        .as_array()
        .expect("required fields")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, BTreeSet::from(["code", "error", "hint"]));
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert!(schemes.contains_key("user_token") && schemes.contains_key("agent_token"));
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            for range in ["4XX", "5XX"] {
                assert_eq!(
                    op["responses"][range]["$ref"], "#/components/responses/Error",
                    "{method} {path}: {range}"
                );
            }
            let security = op["security"].as_array().expect("security");
            let scheme = security
                .first()
                .and_then(|s| s.as_object())
                .and_then(|s| s.keys().next().cloned());
            // The templates webhook is authenticated by its shared secret, not a token.
            let public = [
                "/healthz",
                "/readyz",
                "/v1/openapi.json",
                "/v1/templates/webhook",
            ];
            let expected = if public.contains(&path.as_str()) {
                None
            } else if path.starts_with("/v1/agent/") {
                Some("agent_token".to_string())
            } else {
                Some("user_token".to_string())
            };
            assert_eq!(scheme, expected, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn the_server_serves_the_document_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    let server = Server::start(args, Some("rou_openapi-test-admin".into()))
        .await
        .unwrap();
    let answer = reqwest::get(format!("{}/v1/openapi.json", server.url()))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(answer.text().await.unwrap(), document());
}

/// Errors that name no hint of their own get the default one of their status: a
/// client always has a next step to show (schemathesis's `error_shape` check).
#[tokio::test]
async fn every_error_answer_carries_code_error_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    let admin = "rou_openapi-test-admin";
    let server = Server::start(args, Some(admin.into())).await.unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url());
    let answers = [
        // No hint of their own before the default one.
        (http.get(url("/v1/tasks/abc")).bearer_auth(admin), 400),
        (http.delete(url("/v1/me")).bearer_auth(admin), 405),
        (http.get(url("/v1/tasks/999")).bearer_auth(admin), 404),
        (http.get(url("/no/such/route")), 404),
        (http.get(url("/v1/targets")).bearer_auth("rou_wrong"), 401),
        (
            http.post(url("/v1/tasks"))
                .bearer_auth(admin)
                .header("content-type", "text/plain")
                .body("x"),
            415,
        ),
    ];
    for (request, status) in answers {
        let answer = request.send().await.unwrap();
        let at = answer.url().path().to_string();
        assert_eq!(answer.status().as_u16(), status, "{at}");
        let body: Value = answer.json().await.unwrap();
        for key in ["code", "error", "hint"] {
            assert!(
                body[key].as_str().is_some_and(|v| !v.trim().is_empty()),
                "{at}: no {key} in {body}"
            );
        }
    }
}
