//! The web app over real HTTP, without a browser: sign-in, the session cookie, CSRF
//! checks on forms, escaping and the security headers. (The browser tests are
//! `crates/runops/tests/e2e_web.rs`.)

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use runops_server::{Server, ServerArgs};
use serde_json::{Value, json};

const ADMIN: &str = "rou_test-admin-token";

struct Web {
    _dir: tempfile::TempDir,
    server: Server,
    http: reqwest::Client,
}

impl Web {
    async fn start() -> Web {
        let dir = tempfile::tempdir().unwrap();
        let args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let server = Server::start(args, Some(ADMIN.to_string())).await.unwrap();
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        Web {
            _dir: dir,
            server,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    /// A JSON API call with a bearer token.
    async fn api(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap());
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap()
    }

    /// Signs in with `token`; returns the `name=value` of the session cookie.
    async fn sign_in(&self, token: &str) -> String {
        let r = self.post_form("/sign-in", None, &[("token", token)]).await;
        assert_eq!(r.status(), 303, "sign-in with a valid token");
        assert_eq!(r.headers()[LOCATION], "/tasks");
        let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
        assert!(
            cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Lax"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        cookie.split(';').next().unwrap().to_string()
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The CSRF token of a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn sign_in_opens_a_session_and_every_form_needs_the_sessions_csrf_token() {
    let web = Web::start().await;
    let r = web.http.get(web.url("/tasks")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/sign-in".into())
    );

    let r = web
        .post_form("/sign-in", None, &[("token", "rou_wrong")])
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("invalid API token"));
    let agent = web
        .api(ADMIN, reqwest::Method::POST, "/v1/agent-tokens", json!({}))
        .await;
    let r = web
        .post_form(
            "/sign-in",
            None,
            &[("token", agent["token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("this is an agent token"));

    let cookie = web.sign_in(ADMIN).await;
    web.api(
        ADMIN,
        reqwest::Method::POST,
        "/v1/targets",
        json!({"name": "demo", "type": "bash"}),
    )
    .await;
    let page = web.get("/tasks/new", &cookie).await;
    assert_eq!(page.status(), 200);
    for (h, v) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(page.headers()[h], v);
    }
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let csrf = csrf_of(&page.text().await.unwrap());
    let script = "echo '<script>alert(1)</script>'";
    let task = [("target", "demo"), ("script", script)];

    // Without the token, with another one, or from another site: refused, nothing made.
    for fields in [
        task.to_vec(),
        [task.as_slice(), &[("csrf", "0123")]].concat(),
    ] {
        let r = web.post_form("/tasks/new", Some(&cookie), &fields).await;
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("CSRF token"));
    }
    let with_csrf = [task.as_slice(), &[("csrf", csrf.as_str())]].concat();
    let r = web
        .http
        .post(web.url("/tasks/new"))
        .header(COOKIE, &cookie)
        .header("origin", "https://evil.example")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&with_csrf).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a cross-site post");
    let tasks = web
        .api(ADMIN, reqwest::Method::GET, "/v1/tasks", Value::Null)
        .await;
    assert_eq!(tasks.as_array().unwrap().len(), 0, "{tasks}");

    // With it: the task is created through the API's rules and the page shows it.
    let r = web.post_form("/tasks/new", Some(&cookie), &with_csrf).await;
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/tasks/1".into())
    );
    let html = web.get("/tasks/1", &cookie).await.text().await.unwrap();
    assert!(
        html.contains("echo &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;")
            || html.contains("echo '&lt;script&gt;alert(1)&lt;/script&gt;'"),
        "the script is escaped"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    // The API's refusals come back with its message (an empty script).
    let r = web
        .post_form(
            "/tasks/new",
            Some(&cookie),
            &[("target", "demo"), ("script", " "), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("the script is empty"));

    // Signing out ends the session on the server, whatever the browser keeps.
    let r = web
        .post_form("/sign-out", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/sign-in".into())
    );
    let r = web.get("/tasks", &cookie).await;
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/sign-in".into())
    );
}

#[tokio::test]
async fn a_web_session_ends_with_the_api_token_it_was_opened_with() {
    let web = Web::start().await;
    let made = web
        .api(
            ADMIN,
            reqwest::Method::POST,
            "/v1/users",
            json!({"name": "carol", "email": "carol@example.com"}),
        )
        .await;
    let carol = made["token"].as_str().unwrap().to_string();
    let second = web
        .api(&carol, reqwest::Method::POST, "/v1/tokens", json!({}))
        .await;
    let cookie = web.sign_in(&carol).await;
    let other = web.sign_in(second["token"].as_str().unwrap()).await;
    assert_eq!(web.get("/tasks", &cookie).await.status(), 200);
    let html = web.get("/users", &cookie).await.text().await.unwrap();
    assert!(html.contains("only admins can"), "{html}");

    // Revoke the first token with the second: its session ends, the other goes on.
    let tokens = web
        .api(&carol, reqwest::Method::GET, "/v1/tokens", Value::Null)
        .await;
    let first_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] != second["id"])
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = web
        .http
        .delete(web.url(&format!("/v1/tokens/{first_id}")))
        .bearer_auth(second["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = web.get("/tasks", &cookie).await;
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/sign-in".into())
    );
    assert_eq!(web.get("/tasks", &other).await.status(), 200);
}

#[tokio::test]
async fn the_task_list_filters_by_user_and_mine_and_pages_by_id() {
    let web = Web::start().await;
    web.api(
        ADMIN,
        reqwest::Method::POST,
        "/v1/targets",
        json!({"name": "demo", "type": "bash"}),
    )
    .await;
    let made = web
        .api(
            ADMIN,
            reqwest::Method::POST,
            "/v1/users",
            json!({"name": "carol", "email": "carol@example.com"}),
        )
        .await;
    let carol = made["token"].as_str().unwrap().to_string();
    for i in 0..55 {
        let token = if i == 3 { carol.as_str() } else { ADMIN };
        web.api(
            token,
            reqwest::Method::POST,
            "/v1/tasks",
            json!({"target": "demo", "script": format!("echo task-{i}\n")}),
        )
        .await;
    }
    let cookie = web.sign_in(ADMIN).await;
    let first = web.get("/tasks", &cookie).await.text().await.unwrap();
    assert!(first.contains("echo task-54") && !first.contains("echo task-4<"));
    assert!(
        first.contains("href=\"/tasks?before=6\""),
        "the next page starts below 6"
    );
    let older = web
        .get("/tasks?before=6", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(older.contains("echo task-4<") && older.contains("echo task-0<"));
    assert!(!older.contains("echo task-5<") && !older.contains("Older"));

    let carols = web
        .get("/tasks?user=carol%40example.com", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(carols.matches("<tr><td><a href=\"/tasks/").count(), 1);
    assert!(carols.contains("echo task-3<"));
    let cookie = web.sign_in(&carol).await;
    let mine = web
        .get("/tasks?mine=1", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        mine.matches("<tr><td><a href=\"/tasks/").count(),
        1,
        "{mine}"
    );

    // A malformed filter or id is refused with a page naming it.
    let r = web.get("/tasks?status=sleeping", &cookie).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("sleeping"));
    let r = web.get("/tasks/abc", &cookie).await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains("<!DOCTYPE html>") && html.contains("task id `abc` is not a number"));
}

#[tokio::test]
async fn sso_is_offered_only_when_configured_and_a_callback_that_did_not_start_here_is_refused() {
    let web = Web::start().await;
    let page = web.http.get(web.url("/sign-in")).send().await.unwrap();
    assert!(!page.text().await.unwrap().contains("Sign in with SSO"));
    let r = web.http.get(web.url("/sign-in/sso")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("not set up"));

    let dir = tempfile::tempdir().unwrap();
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    // Never reached: every callback below is refused before the provider is asked.
    args.auth.auth_jwk_url = Some("http://127.0.0.1:9/jwks".into());
    args.auth.oidc_issuer = Some("http://127.0.0.1:9".into());
    args.auth.oidc_client_id = Some("runops-web".into());
    let server = Server::start(args, Some(ADMIN.to_string())).await.unwrap();
    let url = |p: &str| format!("http://{}{p}", server.local_addr());
    let page = web.http.get(url("/sign-in")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("Sign in with SSO"));
    for (cookie, query, says) in [
        (None, "code=c&state=s", "did not start here"),
        (
            Some("runops_sso=s.n.v"),
            "code=c&state=other",
            "state differs",
        ),
        (
            Some("runops_sso=s.n.v"),
            "error=access_denied&state=s",
            "refused the sign-in: access_denied",
        ),
    ] {
        let mut req = web.http.get(url(&format!("/sign-in/sso/callback?{query}")));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{query}");
        assert!(r.text().await.unwrap().contains(says), "{query}");
    }
    server.shutdown().await;
}
